"""Writing images: the network's result back into the photo's form (alpha, greyscale) and a file format's bytes.

PNG is written by :mod:`stylize.io.png` (fast, 8-bit L/LA/RGB/RGBA: every mode :func:`encode_image` passes it); the other
formats by Pillow. Only the arguments decide what metadata goes into a file: EXIF with its orientation reset, and an
ICC profile where its colour space matches the image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from PIL import Image

from stylize.config import ApplyOptions
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.io.files import display_path
from stylize.io.png import encode_png

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


def quantize(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` float in ``[0, 1]`` -> ``(H, W, 3)`` uint8, rounded to the nearest level (NaN becomes 0, values
    outside ``[0, 1]`` are clamped); any dtype and device are accepted, the result is on the CPU."""
    levels = torch.nan_to_num(image.detach().float().cpu(), nan=0.0).clamp_(0.0, 1.0).mul_(255.0).round_()
    # Converting straight into an (H, W, 3) buffer: one pass instead of a uint8 copy and a transposing copy.
    pixels = torch.empty((*image.shape[1:], 3), dtype=torch.uint8)
    pixels.permute(2, 0, 1).copy_(levels)
    return pixels


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` or ``(3, H, W)`` tensor in ``[0, 1]`` -> RGB Pillow image (see :func:`quantize`)."""
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"tensor_to_image expects (1, 3, H, W) or (3, H, W), got {tuple(tensor.shape)}")
    return Image.fromarray(quantize(tensor).numpy())


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


def finish_image(stylized: Image.Image, alpha: Image.Image | None, fmt: str, *, keep_greyscale: bool = False) -> Image.Image:
    """Turn the network's RGB result into the image to write, matching the source's alpha and (optionally) greyscale.

    - ``keep_greyscale``: the result becomes mode "L" (asked for with preserve_color on a grey input).
    - The source's ``alpha`` (mode "L") is re-attached for formats that hold it (PNG, WebP, TIFF), resized if the
      result was.
    - Formats without alpha (JPEG, BMP) get the picture composited onto white, as a viewer shows the transparent file.
    """
    fmt = fmt.upper()
    picture = stylized.convert("L") if keep_greyscale else stylized.convert("RGB")
    if alpha is None:
        return picture
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
    quality: int = ApplyOptions.quality,
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
        raise StylizeError(f"`quality` must be between 1 and 100, got {quality}", "e.g. `quality=90`")
    limit = _MAX_SIDE.get(fmt)
    if limit and max(image.size) > limit:
        raise StylizeError(
            f"a {image.size[0]}x{image.size[1]} image is too large for {fmt} (at most {limit} pixels a side)",
            "write PNG or TIFF, or pass `max_size`"
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
    if fmt == "TIFF":
        options["compression"] = "tiff_lzw"
    if exif and fmt in ("JPEG", "PNG", "WEBP"):
        options["exif"] = exif
    if icc_profile and fmt != "BMP" and _icc_matches(icc_profile, image.mode):
        options["icc_profile"] = icc_profile

    def encode(opts: dict[str, object]) -> bytes:
        if fmt == "PNG":  # the image is L, LA, RGB or RGBA by now: all of them stylize.io.png writes
            return encode_png(image, exif=opts.get("exif"), icc_profile=opts.get("icc_profile"))  # type: ignore[arg-type]
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


