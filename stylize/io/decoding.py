"""Reading images: decoding, colour modes, EXIF orientation and alpha, with one-line errors for every bad file.

Every image is decoded into an 8-bit RGB picture plus an optional 8-bit alpha channel (:class:`LoadedImage`), and
the pipeline hands the network ``(3, H, W)`` uint8 pixels (:func:`pixels_of`). Everything a user can cause (a missing,
empty, truncated or hostile file, an image over the pixel limit) is raised as a one-line
:class:`~stylize.errors.StylizeError`.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageCms, UnidentifiedImageError

from stylize.config import ApplyOptions
from stylize.errors import EXIT_BAD_INPUT, StylizeError
from stylize.io.files import display_path

#: Formats we decode. Pillow's other plugins are not tried: some are rarely useful and EPS would run Ghostscript.
INPUT_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "TIFF", "WEBP", "BMP", "DIB", "PPM", "TGA", "ICO", "JPEG2000", "AVIF", "HEIF")
GREYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
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
        return self.source_mode in GREYSCALE_MODES

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after orientation."""
        return self.rgb.size


# ---------------------------------------------------------------------------------------------------------------- reading


def open_image(
    source: str | os.PathLike[str] | bytes | BinaryIO | Image.Image,
    *,
    max_pixels: int = ApplyOptions.max_pixels,
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


_limit_lock = threading.Lock()
_limit_users = 0
_limit_saved: int | None = None


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make ``max_pixels`` govern Pillow's own decompression-bomb checks while decoding, and restore Pillow's limit after.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and raises above twice that. While any decode runs, the limit is at
    least ``max_pixels`` (concurrent decodes share one raised value, and the last to finish puts the user's back);
    Pillow's warning then means the image is over our limit too, so it is turned into an error. Below Pillow's limit,
    our own check of the header (:func:`_check_pixels`, before any pixel is decoded) refuses the image and names its size.

    ``catch_warnings`` is not thread-safe: interleaved decodes may leave these filters installed, which only affects
    Pillow's own warnings.
    """
    global _limit_users, _limit_saved
    with _limit_lock:
        if _limit_users == 0:
            _limit_saved = Image.MAX_IMAGE_PIXELS
        _limit_users += 1
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow warns about damaged metadata it skips ("Corrupt EXIF data", "Tag data larger than file"); the
            # picture either decodes, or fails with an error of ours, so these would only be noise above the result.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _limit_saved


def _input_formats() -> list[str]:
    # Only formats Pillow has registered may be named, in Pillow's own detection order.
    Image.init()
    return [fmt for fmt in Image.ID if fmt in INPUT_FORMATS]


def _check_pixels(size: tuple[int, int], max_pixels: int, label: str) -> None:
    if size[0] * size[1] > max_pixels:
        raise _too_many_pixels(label, size, max_pixels)


class PixelLimitError(StylizeError):
    """An image over the decompression-bomb guard's ``max_pixels``: a :class:`StylizeError` that callers who set the
    limit themselves (a server) may tell from other bad input. ``size`` is None when only Pillow saw the size."""

    def __init__(self, label: str, size: tuple[int, int] | None, max_pixels: int) -> None:
        dims = f" is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} megapixels)," if size else " has"
        super().__init__(
            f"{label}{dims} more pixels than the limit of {max_pixels / 1e6:g} megapixels",
            "if you trust this file, raise the limit with `max_pixels`",
            EXIT_BAD_INPUT,
        )
        self.size = size
        self.max_pixels = max_pixels


def _too_many_pixels(label: str, size: tuple[int, int] | None, max_pixels: int) -> StylizeError:
    return PixelLimitError(label, size, max_pixels)


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
    exif, orientation = read_exif(image)
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


def read_exif(image: Image.Image) -> tuple[bytes | None, int]:
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


# -------------------------------------------------------------------------------------------------------------- pixels


def pixels_of(image: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> ``(3, H, W)`` uint8 tensor (owning its memory): what the pipeline hands the network."""
    if image.mode != "RGB":
        raise ValueError(f"pixels_of expects an RGB image, got mode {image.mode!r}")
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 in ``[0, 1]`` (value / 255), the network's image convention."""
    return pixels.to(torch.float32).div_(255.0)
