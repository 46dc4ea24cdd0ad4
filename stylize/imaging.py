"""Reading and writing images: decoding, colour modes, EXIF orientation, alpha, and atomic writes.

Every image is decoded into an 8-bit RGB picture plus an optional 8-bit alpha channel (:class:`LoadedImage`); the
network code sees only ``(1, 3, H, W)`` float32 tensors in ``[0, 1]`` (:func:`image_to_tensor`,
:func:`tensor_to_image`). On the way out, :func:`finish_image` puts the alpha (or greyscale) back, :func:`encode_image`
writes the format's bytes, and :func:`write_atomic` makes the file appear complete or not at all.

Everything a user can cause (a missing, empty, truncated or hostile file, a full disk, an existing output) is raised as
one-line :class:`~stylize.errors.StylizeError`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageCms, UnidentifiedImageError

from stylize.config import ImageConfig
from stylize.errors import EXIT_BAD_INPUT, EXIT_FAILURE, StylizeError

__all__ = [
    "ALPHA_FORMATS",
    "OUTPUT_EXTENSIONS",
    "TEMP_SUFFIX",
    "LoadedImage",
    "check_output",
    "display_path",
    "encode_image",
    "finish_image",
    "image_to_tensor",
    "make_parent_folder",
    "open_image",
    "output_format",
    "remove_stale_temporaries",
    "remove_stale_temporaries_of",
    "same_file",
    "save_image",
    "tensor_to_image",
    "write_atomic",
]

#: Suffix of the temporary files :func:`write_atomic` creates; leftovers from killed runs end in it.
TEMP_SUFFIX = ".stylize-tmp"

#: Formats we decode. Pillow's other plugins are not tried: some are rarely useful and EPS would run Ghostscript.
INPUT_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "TIFF", "WEBP", "BMP", "DIB", "PPM", "TGA", "ICO", "JPEG2000", "AVIF", "HEIF")
#: Output extensions and the Pillow format each one selects.
OUTPUT_EXTENSIONS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
#: Output formats that can hold an alpha channel; the others get the picture flattened onto white.
ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
#: Largest width or height each output format can store.
_MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383}

_GREYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation value -> the transpose that shows the picture upright.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


@dataclass
class LoadedImage:
    """A decoded image, ready for the network: 8-bit RGB, upright, with what is needed to write it back faithfully."""

    rgb: Image.Image  # mode "RGB", EXIF orientation applied
    alpha: Image.Image | None  # mode "L", same size as rgb, or None when the source has no transparency
    source_mode: str  # Pillow mode as decoded: "L", "P", "CMYK", "I;16", "RGBA", ...
    source_format: str | None  # Pillow format, e.g. "JPEG"; None for an in-memory image without one
    exif: bytes | None  # EXIF to carry into the output: orientation reset to 1, thumbnail dropped
    icc_profile: bytes | None  # the source's ICC profile (None for CMYK/LAB, which are converted to sRGB)
    frames: int  # frames or pages in the file; only the first is used

    @property
    def is_greyscale(self) -> bool:
        """True when the source has a single colour channel (1-bit, 8/16/32-bit grey, with or without alpha)."""
        return self.source_mode in _GREYSCALE_MODES

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after orientation."""
        return self.rgb.size


# ---------------------------------------------------------------------------------------------------------------- reading


def open_image(
    source: str | os.PathLike[str] | bytes | BinaryIO | Image.Image,
    *,
    max_pixels: int = ImageConfig.max_pixels,
    name: str | None = None,
) -> LoadedImage:
    """Decode the first frame of ``source`` (a path, the file's bytes, a binary stream, or a Pillow image).

    The header's size is checked against ``max_pixels`` before any pixel is decoded, and the whole frame is then decoded
    so that truncated files fail here rather than producing a half-grey picture. ``name`` is how messages refer to the
    image (defaults to the path, or "image").
    """
    if isinstance(source, Image.Image):
        with _pixel_limit(max_pixels):
            return _load_fully(source, name or "image", max_pixels, b"", None)
    if isinstance(source, (str, os.PathLike)):
        label = name or display_path(source)
        with _open_for_reading(source, label) as fp:
            return _decode(fp, label, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "image"
        return _decode(io.BytesIO(source), label, max_pixels)
    label = name or "image"
    try:
        data = source.read()
    except OSError as exc:
        raise StylizeError(f"could not read {label}: {exc.strerror or exc}") from exc
    return _decode(io.BytesIO(data), label, max_pixels)


def _open_for_reading(path: str | os.PathLike[str], label: str) -> BinaryIO:
    try:
        if os.path.isdir(path):
            raise StylizeError(f"{label} is a folder, not an image", "give the path of an image file")
        fp = open(path, "rb")  # closed by the caller's with-block
    except FileNotFoundError as exc:
        raise StylizeError(f"{label}: no such file", "check the path") from exc
    except PermissionError as exc:
        raise StylizeError(f"{label}: permission denied", "check that you may read this file") from exc
    except OSError as exc:  # a symlink loop, a name too long, an I/O error
        raise StylizeError(f"could not open {label}: {exc.strerror or exc}") from exc
    return fp


def _decode(fp: BinaryIO, label: str, max_pixels: int) -> LoadedImage:
    if not fp.seekable():  # a pipe or a character device: Pillow needs to seek
        fp = io.BytesIO(fp.read())
    head = fp.read(16)
    if not head:
        raise StylizeError(f"{label} is empty (0 bytes)", "the file has no content; copy or download it again")
    fp.seek(0)
    with _pixel_limit(max_pixels):
        try:
            image = Image.open(fp, formats=_input_formats())
        except UnidentifiedImageError as exc:
            raise _unidentified_error(fp, head, label) from exc
        except Exception as exc:  # see _load_fully
            raise _decoding_error(exc, head, label, max_pixels) from exc
        return _load_fully(image, label, max_pixels, head, fp)


def _load_fully(image: Image.Image, label: str, max_pixels: int, head: bytes, fp: BinaryIO | None) -> LoadedImage:
    """Check the header's size, decode every pixel of the current frame, and convert it to a :class:`LoadedImage`."""
    _check_pixels(image.size, max_pixels, label)
    try:
        image.load()  # decode everything now, so that truncation is detected here and not as a grey band later
        if fp is not None and image.format == "PNG":
            error = _png_checksum_error(fp, label, report_truncation=False)
            if error:  # Pillow checks only the header chunks' CRCs; a damaged IDAT decodes silently into wrong pixels
                raise error
    except StylizeError:
        raise
    except Exception as exc:  # hostile bytes make Pillow raise nearly anything; all mean "corrupt"
        raise _decoding_error(exc, head, label, max_pixels) from exc
    return _to_loaded(image, label)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make ``max_pixels`` govern Pillow's own decompression-bomb checks while decoding.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and raises above twice that. The limit is raised (never lowered, never
    restored, so concurrent decodes cannot undo each other) to at least ``max_pixels``; Pillow's warning then means the
    image is over our limit too, so it is turned into an error. Below Pillow's limit, our own check of the header
    (:func:`_check_pixels`, before any pixel is decoded) refuses the image and names its size.

    ``catch_warnings`` is not thread-safe: interleaved decodes may leave these filters installed, which only affects
    Pillow's own warnings.
    """
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow warns about damaged metadata it skips ("Corrupt EXIF data", "Tag data larger than file"); the picture
        # either decodes, or fails with an error of ours, so these would only be noise above the result.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _input_formats() -> list[str]:
    # Only formats Pillow has registered may be named, in Pillow's own detection order.
    Image.init()
    return [fmt for fmt in Image.ID if fmt in INPUT_FORMATS]


def _check_pixels(size: tuple[int, int], max_pixels: int, label: str) -> None:
    if size[0] * size[1] > max_pixels:
        raise _too_many_pixels(label, size, max_pixels)


def _too_many_pixels(label: str, size: tuple[int, int] | None, max_pixels: int) -> StylizeError:
    dims = f" is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} megapixels)," if size else " has"
    return StylizeError(
        f"{label}{dims} more pixels than the limit of {max_pixels / 1e6:g} megapixels",
        "if you trust this file, raise the limit with --max-pixels",
        EXIT_BAD_INPUT,
    )


def _unidentified_error(fp: BinaryIO, head: bytes, label: str) -> StylizeError:
    if head.startswith(_PNG_SIGNATURE):
        # Pillow reports a PNG whose header chunk is damaged as "cannot identify"; say what is wrong instead.
        error = _png_checksum_error(fp, label)
        return error or StylizeError(f"{label} is a corrupt PNG file", "the file is damaged; copy or download it again")
    kind = _sniff_format(head)
    if kind:
        return StylizeError(f"{label} is a corrupt or truncated {kind} file", "the file is damaged; copy or download it again")
    return StylizeError(f"{label} is not an image", "stylize reads JPEG, PNG, WebP, TIFF, BMP and GIF files")


def _decoding_error(exc: Exception, head: bytes, label: str, max_pixels: int) -> StylizeError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return _too_many_pixels(label, None, max_pixels)
    kind = _sniff_format(head) or "image"
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return _truncated_error(label, kind)
    return StylizeError(f"{label} is a corrupt {kind} file ({type(exc).__name__}: {text})", "the file is damaged")


def _truncated_error(label: str, kind: str) -> StylizeError:
    return StylizeError(f"{label} is truncated: the {kind} data ends early", "the file is incomplete; copy or download it again")


def _sniff_format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:2] == b"BM":
        return "BMP"
    return None


def _png_checksum_error(fp: BinaryIO, label: str, *, report_truncation: bool = True) -> StylizeError | None:
    """Walk a PNG's chunks and return an error for the first bad CRC, or for a file that ends before its IEND chunk.

    Pillow's decoder ends at the last pixel row, so a decoded file that lacks only its trailing chunks is accepted
    (``report_truncation=False``).
    """
    fp.seek(len(_PNG_SIGNATURE))
    while True:
        header = fp.read(8)
        length, chunk_type = struct.unpack(">I4s", header) if len(header) == 8 else (0, b"")
        data = fp.read(length)
        crc = fp.read(4)
        if not chunk_type or len(data) < length or len(crc) < 4:
            if not report_truncation:
                return None
            return _truncated_error(label, "PNG")
        if zlib.crc32(data, zlib.crc32(chunk_type)) != struct.unpack(">I", crc)[0]:
            name = chunk_type.decode("latin-1")
            return StylizeError(
                f"{label} is a corrupt PNG file: the {name!r} chunk fails its CRC check",
                "the file is damaged; copy or download it again",
            )
        if chunk_type == b"IEND":
            return None


def _to_loaded(image: Image.Image, label: str) -> LoadedImage:
    """Convert a decoded Pillow image (its current frame) into a :class:`LoadedImage`."""
    mode = image.mode
    icc = image.info.get("icc_profile") or None
    rgb, alpha, converted_colour = _split_colour_and_alpha(image, label, icc)
    if converted_colour:
        icc = None  # the profile described CMYK/LAB data; the pixels are now sRGB
    exif, orientation = _read_exif(image)
    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    if transpose is not None:
        rgb = rgb.transpose(transpose)
        alpha = alpha.transpose(transpose) if alpha is not None else None
    # Pillow copies the source's info (ICC profile, EXIF, transparency key) along; the fields above hold what applies.
    rgb.info = {}
    if alpha is not None:
        alpha.info = {}
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        source_mode=mode,
        source_format=image.format,
        exif=exif,
        icc_profile=icc,
        frames=_count_frames(image),
    )


def _split_colour_and_alpha(image: Image.Image, label: str, icc: bytes | None) -> tuple[Image.Image, Image.Image | None, bool]:
    """Return (RGB picture, L alpha or None, whether colours went through a colour-space conversion)."""
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        grey = _high_depth_to_l(image)
        return grey.convert("RGB"), None, False
    if mode == "CMYK":
        return _cms_to_srgb(image, icc, "CMYK") or image.convert("RGB"), None, True
    if mode == "LAB":
        rgb = _cms_to_srgb(image, None, "LAB")
        if rgb is None:
            raise _unsupported_mode(label, mode)
        return rgb, None, True
    if mode == "La":
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa") or (mode in ("P", "L", "RGB") and image.has_transparency_data):
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A"), False
    if mode in ("RGB", "RGBX", "L", "1", "P", "YCbCr", "HSV"):
        return image.convert("RGB"), None, False
    raise _unsupported_mode(label, mode)


def _unsupported_mode(label: str, mode: str) -> StylizeError:
    return StylizeError(f"{label} has colour mode {mode!r}, which stylize cannot convert to RGB", "convert it to 8-bit RGB first")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image to 8 bits, rounding (never clipping the top away).

    "I;16*" is a known 16-bit range. For "I" and "F" the range is not stored, so it is inferred: floats within [0, 1]
    are 0-1 data; values within 0-255 are 8-bit data in a wide container; within 0-65535 16-bit data (how Pillow
    and TIFF store 16-bit images as "I"); anything larger is scaled by its maximum. Negative values and NaN become 0.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        top = 1.0
    elif peak <= 255.0:
        top = 255.0
    elif peak <= 65535.0:
        top = 65535.0
    else:
        top = peak
    scaled = np.rint(values * (255.0 / top)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


def _cms_to_srgb(image: Image.Image, icc: bytes | None, mode: str) -> Image.Image | None:
    """Convert CMYK (with its embedded profile) or CIELab to sRGB with LittleCMS; None when that is not possible."""
    try:
        if mode == "LAB":
            source = ImageCms.createProfile("LAB")
        elif icc:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        else:
            return None  # Pillow's plain CMYK -> RGB formula is the best guess without a profile
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB")
        return ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _read_exif(image: Image.Image) -> tuple[bytes | None, int]:
    """Return (EXIF bytes to carry into the output, the source's orientation). Broken EXIF is dropped, not fatal.

    Pillow re-serialises the main, Exif and GPS directories only, which also drops the embedded thumbnail: it shows
    the unstyled photo and would be wrong in the output.
    """
    try:
        exif = image.getexif()
        orientation = exif.get(_EXIF_ORIENTATION, 1)
        orientation = orientation if isinstance(orientation, int) else 1
        if not exif:
            return None, 1
        if _EXIF_ORIENTATION in exif:
            exif[_EXIF_ORIENTATION] = 1
        return exif.tobytes(), orientation
    except Exception:  # malformed EXIF raises all sorts; the picture itself is fine
        return None, 1


def _count_frames(image: Image.Image) -> int:
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # a damaged later frame must not fail the first, which decoded fine
        return 1


# -------------------------------------------------------------------------------------------------------------- tensors


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> ``(1, 3, H, W)`` float32 tensor in ``[0, 1]`` (value / 255)."""
    if image.mode != "RGB":
        raise ValueError(f"image_to_tensor expects an RGB image, got mode {image.mode!r}")
    pixels = np.array(image, dtype=np.uint8)  # (H, W, 3); a copy, so the tensor owns writable memory
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` or ``(3, H, W)`` tensor in ``[0, 1]`` -> RGB Pillow image, rounded to the nearest level.

    Values outside ``[0, 1]`` are clamped and NaN becomes 0; any dtype and device are accepted.
    """
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"tensor_to_image expects (1, 3, H, W) or (3, H, W), got {tuple(tensor.shape)}")
    levels = torch.nan_to_num(tensor.detach().float(), nan=0.0).clamp_(0.0, 1.0).mul_(255.0).round_()
    # Converting straight into an (H, W, 3) buffer: one pass instead of a uint8 copy and a transposing copy.
    pixels = torch.empty((*tensor.shape[1:], 3), dtype=torch.uint8)
    pixels.permute(2, 0, 1).copy_(levels)
    return Image.fromarray(pixels.numpy())


# -------------------------------------------------------------------------------------------------------------- writing


def output_format(path: str | os.PathLike[str] | None, requested: str | None = None) -> str:
    """The Pillow format to write: ``requested`` if given, else from the extension of ``path``; PNG for stdout."""
    supported = ", ".join(OUTPUT_EXTENSIONS)
    if requested:
        key = "." + requested.lower().lstrip(".")
        if key not in OUTPUT_EXTENSIONS:
            raise StylizeError(f"unknown output format {requested!r}", f"use one of {supported}")
        return OUTPUT_EXTENSIONS[key]
    if path is None or os.fspath(path) in ("-", b"-"):
        return "PNG"
    suffix = Path(os.fsdecode(path)).suffix.lower()
    if suffix not in OUTPUT_EXTENSIONS:
        what = f"extension {suffix!r}" if suffix else "no extension"
        raise StylizeError(f"cannot tell the output format of {display_path(path)}: it has {what}", f"use one of {supported}")
    return OUTPUT_EXTENSIONS[suffix]


def finish_image(stylized: Image.Image, loaded: LoadedImage, fmt: str, *, keep_greyscale: bool = False) -> Image.Image:
    """Turn the network's RGB result into the image to write, matching the source's alpha and (optionally) greyscale.

    - ``keep_greyscale``: the result becomes mode "L" (the engine asks for it with --preserve-color on a grey input).
    - The source's alpha is re-attached for formats that hold it (PNG, WebP, TIFF), resized if the result was.
    - Formats without alpha (JPEG, BMP) get the picture composited onto white, as a viewer shows the transparent file.
    """
    fmt = fmt.upper()
    picture = stylized.convert("L") if keep_greyscale else stylized.convert("RGB")
    if loaded.alpha is None:
        return picture
    alpha = loaded.alpha
    if alpha.size != picture.size:
        alpha = alpha.resize(picture.size, Image.Resampling.LANCZOS)
    if fmt in ALPHA_FORMATS:
        picture.putalpha(alpha)
        return picture
    return _flatten_onto_white(picture, alpha)


def _flatten_onto_white(picture: Image.Image, alpha: Image.Image) -> Image.Image:
    white = Image.new(picture.mode, picture.size, 255 if picture.mode == "L" else (255, 255, 255))
    return Image.composite(picture, white, alpha)


def encode_image(
    image: Image.Image,
    fmt: str,
    *,
    quality: int = ImageConfig.quality,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
) -> bytes:
    """Encode ``image`` as ``fmt`` (a Pillow format name) and return the file's bytes.

    EXIF is written to JPEG, PNG and WebP; an ICC profile only where its colour space matches the image (an RGB profile
    on an RGB image, a grey one on a grey image). Images with alpha are flattened onto white for JPEG and BMP.
    """
    fmt = fmt.upper()
    if fmt == "JPG":
        fmt = "JPEG"
    if fmt not in OUTPUT_EXTENSIONS.values():
        raise StylizeError(f"cannot write {fmt} images", f"use one of {', '.join(OUTPUT_EXTENSIONS)}")
    if not 1 <= quality <= 100:
        raise StylizeError(f"quality must be between 1 and 100, got {quality}", "pass --quality 1..100")
    limit = _MAX_SIDE.get(fmt)
    if limit and max(image.size) > limit:
        raise StylizeError(
            f"a {image.size[0]}x{image.size[1]} image is too large for {fmt} (at most {limit} pixels a side)",
            "write PNG or TIFF, or pass --max-size",
        )
    if image.mode in ("RGBA", "LA") and fmt not in ALPHA_FORMATS:
        image = _flatten_onto_white(image.convert(image.mode[:-1]), image.getchannel("A"))
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")

    if image.info:
        # Pillow would write the image's own info (say, an ICC profile from the source) when an option is not given;
        # only the arguments decide what goes into the file.
        image = image.copy()
        image.info = {}
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "PNG":
        # zlib's run-length strategy: 1.6x faster than the default (level 6) on stylized photos and as small (1.983 vs
        # 1.982 MB a 1024x768 result, measured on 8 photos); level 1 with the default strategy is barely faster and 2%
        # larger. Stylized pixels are noisy, so long matches are rare and the default's match search is wasted time.
        # (Pillow writes only the modes stylize.png does not; see there.)
        options["compress_type"] = zlib.Z_RLE
    if fmt == "TIFF":
        options["compression"] = "tiff_lzw"
    if exif and fmt in ("JPEG", "PNG", "WEBP"):
        options["exif"] = exif
    if icc_profile and fmt != "BMP" and _icc_matches(icc_profile, image.mode):
        options["icc_profile"] = icc_profile

    def encode(opts: dict[str, object]) -> bytes:
        if fmt == "PNG":
            from stylize.png import encode_png

            data = encode_png(image, exif=opts.get("exif"), icc_profile=opts.get("icc_profile"))  # type: ignore[arg-type]
            if data is not None:
                return data
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **opts)
        return buffer.getvalue()

    try:
        try:
            return encode(options)
        except ValueError:
            # JPEG holds at most 64 kB of EXIF; rather than fail, write the picture without its metadata.
            if "exif" not in options:
                raise
            return encode({k: v for k, v in options.items() if k != "exif"})
    except (OSError, ValueError) as exc:
        raise StylizeError(f"could not encode the image as {fmt}: {exc}", exit_code=EXIT_FAILURE) from exc


def _icc_matches(icc_profile: bytes, mode: str) -> bool:
    # Bytes 16-19 of an ICC header name the data colour space the profile describes.
    space = icc_profile[16:20]
    return (space == b"RGB " and mode in ("RGB", "RGBA")) or (space == b"GRAY" and mode in ("L", "LA"))


def write_atomic(data: bytes, path: str | os.PathLike[str], *, overwrite: bool = False, clean_stale: bool = True) -> Path:
    """Write ``data`` to ``path`` so that the file is either complete or absent, even if the process is killed.

    The bytes go to ``.<name>.<random>.stylize-tmp`` in the same folder, are flushed to disk, and the temporary file is
    then renamed into place. Without ``overwrite`` it is hard-linked instead, which fails rather than replace a file
    that appeared meanwhile. The temporary file is removed on any failure. ``clean_stale`` first removes what a killed
    write of this same file left (:func:`remove_stale_temporaries_of`); a caller that has already cleaned the whole
    folder passes False, since that lists the folder on every write (4.3 ms per file in a 10,000-file folder).
    """
    path = Path(path)
    label = display_path(path)
    try:
        if path.is_dir():
            raise StylizeError(f"{label} is a folder", "give the output a file name")
        if not overwrite and os.path.lexists(path):
            raise _exists_error(label)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    if clean_stale:
        remove_stale_temporaries_of(path)
    temp = path.parent / _temp_name(path.name)
    try:
        _write_and_sync(temp, data)
        if overwrite:
            os.replace(temp, path)
        else:
            _link_without_clobbering(temp, path, label)
    except BaseException as exc:
        _remove_quietly(temp)
        if isinstance(exc, OSError):
            raise _write_error(exc, path) from exc
        raise
    _remove_quietly(temp)  # after the hard link the temporary name is still there
    _sync_folder(path.parent)
    return path


def remove_stale_temporaries_of(path: Path) -> None:
    """Delete ``.<name>.<8 hex digits>.stylize-tmp`` next to ``path``: what a killed write of this same file left.

    The exact shape matters: ``.a.png.x.<hex>.stylize-tmp`` belongs to ``a.png.x``, which may be being written now.
    """
    stale = re.compile(re.escape(f".{_temp_stem(path.name)}.") + "[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if stale.fullmatch(name):
            _remove_quietly(path.parent / name)


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite``; a symbolic link, even a dangling one, counts as existing.

    With ``overwrite``, :func:`write_atomic` renames the new file over the name: a link there is replaced by the file
    and whatever it pointed to is never written.
    """
    if overwrite:
        return
    label = display_path(path)
    if os.path.islink(path):
        raise StylizeError(
            f"output {label} is a symbolic link (to {display_path(os.readlink(path))})",
            "pass --overwrite to replace the link itself; its target is never written",
        )
    if os.path.lexists(path):
        raise StylizeError(f"output {label} already exists", "pass --overwrite to replace it")


def make_parent_folder(path: str | os.PathLike[str]) -> None:
    """Create the folder ``path`` goes into (and its parents); failures are the same errors :func:`write_atomic` gives."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file stands where a folder is needed
        raise _write_error(NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), path) from exc
    except OSError as exc:
        raise _write_error(exc, path) from exc


def _temp_stem(name: str) -> str:
    # Keep the temporary name under the usual 255-byte limit even for very long output names.
    return os.fsdecode(os.fsencode(name)[:180])


def _temp_name(name: str) -> str:
    return f".{_temp_stem(name)}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _write_and_sync(temp: Path, data: bytes) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_without_clobbering(temp: Path, path: Path, label: str) -> None:
    try:
        os.link(temp, path)
    except FileExistsError as exc:
        raise _exists_error(label) from exc
    except OSError as exc:
        # Some file systems (FAT, some network shares) have no hard links: check, then rename.
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV):
            raise
        if os.path.lexists(path):
            raise _exists_error(label) from exc
        os.replace(temp, path)


def _exists_error(label: str) -> StylizeError:
    return StylizeError(f"{label} exists; pass --overwrite to replace it")


def _write_error(exc: OSError, path: Path) -> StylizeError:
    label, folder = display_path(path), display_path(path.parent)
    if exc.errno in _DISK_FULL_ERRNOS:
        return StylizeError(
            f"disk full while writing {label} (nothing was written)", "free some space or write elsewhere", EXIT_FAILURE
        )
    if isinstance(exc, FileNotFoundError):
        return StylizeError(f"cannot write {label}: the folder {folder} does not exist", "create it first")
    if isinstance(exc, NotADirectoryError):
        return StylizeError(f"cannot write {label}: {folder} is not a folder", "choose an output path inside a folder")
    if exc.errno == errno.ENAMETOOLONG:
        return StylizeError(f"cannot write {label}: the file name is too long", "choose a shorter name")
    if exc.errno in _READ_ONLY_ERRNOS:
        return StylizeError(
            f"cannot write {label}: the folder {folder} is read-only or not yours", "choose a folder you may write to"
        )
    return StylizeError(f"could not write {label}: {exc.strerror or exc}", exit_code=EXIT_FAILURE)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_folder(folder: Path) -> None:
    # Make the rename itself durable; not every platform or file system allows opening a folder, which is fine.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_image(
    image: Image.Image,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    quality: int = ImageConfig.quality,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    overwrite: bool = False,
) -> Path:
    """Encode ``image`` (format from ``fmt`` or the extension) and write it atomically to ``path``."""
    fmt = fmt or output_format(path)
    if not overwrite and os.path.lexists(path):
        raise _exists_error(display_path(path))  # fail before spending time on encoding
    data = encode_image(image, fmt, quality=quality, exif=exif, icc_profile=icc_profile)
    return write_atomic(data, path, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------------------------- paths


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name the same file (through links too); compares resolved paths if one is missing."""
    if os.fspath(a) == "-" or os.fspath(b) == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        # realpath, unlike Path.resolve on Python < 3.13, does not raise on a symlink loop
        return os.path.realpath(a) == os.path.realpath(b)


def remove_stale_temporaries(folder: str | os.PathLike[str], *, recursive: bool = True) -> int:
    """Delete the ``.*.stylize-tmp`` files that killed runs left in ``folder``; return how many were removed.

    Call it before a run that writes into ``folder``, not while another run may be writing there.
    """
    removed = 0
    for root, dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
        if not recursive:
            dirs.clear()
    return removed


def display_path(path: str | os.PathLike[str] | bytes) -> str:
    """A path as text that can always be printed: undecodable bytes show as ``\\xNN`` escapes."""
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")
