"""The per-image pipeline: decode -> fit -> stylize -> finish -> encode -> write, as plain functions over one options object.

A single photo (:meth:`stylize.api.Stylizer.apply_file`) calls the stages in order; a folder
(:mod:`stylize.pipeline.folder_run`) runs :func:`decode` in worker processes, :func:`stylize` on batches in the main process
and :func:`finish`, :func:`encode` and :func:`write` in writer threads; video frames (:mod:`stylize.video`) go
through :func:`stylize` in batches too. Each stage gives the same pixels whichever caller runs it.

- :func:`decode` reads a file, bytes, a stream or a PIL image into a :class:`Photo`: upright 8-bit RGB pixels as a
  ``(3, H, W)`` uint8 tensor (after ``max_size``), the alpha channel and the metadata to write back;
- :func:`stylize` runs photos (equal padded sizes may share a batch) through the engine, then applies
  ``preserve_color`` and ``strength``; results are ``(3, H, W)`` float32 in ``[0, 1]`` on the CPU;
- :func:`finish` makes the result an image of the source's kind (alpha re-attached, greyscale kept when asked);
- :func:`encode` makes a format's bytes, :func:`write` puts them on disk atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stylize.config import ApplyOptions
from stylize.engine import Engine
from stylize.io import GREYSCALE_MODES, encode_image, finish_image, make_parent_folder, open_image, pixels_of, tensor_to_image, to_float, write_atomic
from stylize.network import NormStatistics, check_size, padded_size
from stylize.pipeline.blending import blend, detail_upsample, downscale, preserve_color

ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Image.Image
#: The style of a batch: one ``(S,)`` weight vector for every image, or a function of the batch's ``(3, H, W)`` uint8
#: pixels returning ``(B, S)`` (for styles that depend on each photo).
StyleWeights = torch.Tensor | Callable[[list[torch.Tensor]], torch.Tensor]


@dataclass
class Photo:
    """A decoded photo on its way through the pipeline (picklable: it travels from decoding workers)."""

    pixels: torch.Tensor  # (3, H, W) uint8, upright, after max_size
    alpha: np.ndarray | None  # (H, W) uint8 at the pixels' size, or None when the source has no transparency
    source_mode: str  # Pillow mode as decoded: "L", "P", "CMYK", "I;16", "RGBA", ...
    exif: bytes | None  # EXIF to carry into the output: orientation reset to 1, thumbnail dropped
    icc_profile: bytes | None
    frames: int = 1  # frames or pages in the source; only the first is stylized
    source_format: str | None = None  # Pillow format of the source, e.g. "JPEG"; None for an in-memory image

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the pixels."""
        return self.pixels.shape[2], self.pixels.shape[1]

    @property
    def is_greyscale(self) -> bool:
        """True when the source has a single colour channel (1-bit, 8/16/32-bit grey, with or without alpha)."""
        return self.source_mode in GREYSCALE_MODES

    def pin_memory(self) -> Photo:
        """Called by a DataLoader with ``pin_memory=True`` (CUDA): page-locked pixels copy asynchronously."""
        self.pixels = self.pixels.pin_memory()
        return self


def fit(image: Image.Image, max_size: int | None) -> Image.Image:
    """Downscale so the long side is at most ``max_size`` (Lanczos; never upscale)."""
    if max_size is None or max(image.size) <= max_size:
        return image
    scale = max_size / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def decode(source: ImageSource, options: ApplyOptions, name: str | None = None) -> Photo:
    """Read ``source`` (a path, a file's bytes, a binary stream or a PIL image) and fit it to ``options.max_size``."""
    loaded = open_image(source, max_pixels=options.max_pixels, name=name)
    rgb = fit(loaded.rgb, options.max_size)
    check_size(rgb.height, rgb.width)
    alpha = None
    if loaded.alpha is not None:
        mask = loaded.alpha if loaded.alpha.size == rgb.size else loaded.alpha.resize(rgb.size, Image.Resampling.LANCZOS)
        alpha = np.array(mask, dtype=np.uint8)
    return Photo(pixels_of(rgb), alpha, loaded.source_mode, loaded.exif, loaded.icc_profile, loaded.frames, loaded.source_format)


def stylize(
    engine: Engine, pixels: list[torch.Tensor], weights: StyleWeights, options: ApplyOptions, statistics: NormStatistics | None = None
) -> list[torch.Tensor]:
    """Stylize ``(3, H, W)`` uint8 images of equal padded size in one batch (see :data:`StyleWeights`).

    Returns each image's ``(3, H, W)`` float32 CPU result with ``preserve_color`` and ``strength`` applied.
    ``statistics`` replaces the images' own instance-norm statistics (video frames, :mod:`stylize.pipeline.temporal`).
    """
    if callable(weights):
        weights = weights(pixels)
    stacked = stack_padded(pixels, engine.device)  # (B, 3, Hp, Wp) uint8 on the engine's device
    out = forward(engine, to_float(stacked), weights, options, statistics)
    return [out[i, :, : p.shape[1], : p.shape[2]] for i, p in enumerate(pixels)]


def forward(
    engine: Engine, images: torch.Tensor, weights: torch.Tensor, options: ApplyOptions, statistics: NormStatistics | None = None
) -> torch.Tensor:
    """The network on ``(B, 3, H, W)`` float images in ``[0, 1]``, then colour preservation and strength blending.

    With ``work_size`` smaller than the images, the network paints a downscaled copy and the result is brought back up
    with the photo's detail (:func:`stylize.pipeline.blending.detail_upsample`): the strokes keep their size relative to the image.
    """
    small = downscale(images, options.work_size) if options.work_size else images
    out = engine.forward(small, weights, tile=options.tile, memory_limit=options.memory_limit, statistics=statistics)  # float32, CPU
    if small is not images:
        images = images.cpu()
        out = detail_upsample(out, images, small.cpu())
    if options.preserve_color or options.strength < 1.0:
        images = images.cpu()  # blending needs the photo next to the result
    if options.preserve_color:
        out = preserve_color(out, images)
    return blend(out, images, options.strength)


def stack_padded(pixels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """``(B, 3, Hp, Wp)`` uint8 on ``device``: each image reflection-padded at the bottom and right to the largest
    padded size among them (they should share it). The generator pads to a multiple of 4 the same way, so each image
    gives exactly what it gives alone."""
    if len(pixels) == 1:
        return pixels[0].unsqueeze(0).to(device, non_blocking=True)
    height, width = max(padded_size(p.shape[1], p.shape[2]) for p in pixels)
    padded = []
    for image in pixels:
        image = image.unsqueeze(0).to(device, non_blocking=True)
        _, _, h, w = image.shape
        if (h, w) != (height, width):
            # reflect padding is not implemented for uint8; pad as float and round back (exact for integers)
            image = F.pad(image.float(), (0, width - w, 0, height - h), mode="reflect").to(torch.uint8)
        padded.append(image)
    return torch.cat(padded)


def finish(result: torch.Tensor, photo: Photo, fmt: str, options: ApplyOptions) -> Image.Image:
    """The image to write for ``result`` ``(3, H, W)``: the source's alpha re-attached (or flattened onto white for
    formats without it), and greyscale kept for a grey photo with ``preserve_color``."""
    alpha = None if photo.alpha is None else Image.fromarray(photo.alpha, "L")
    keep_greyscale = options.preserve_color and photo.is_greyscale
    return finish_image(tensor_to_image(result), alpha, fmt, keep_greyscale=keep_greyscale)


def encode(image: Image.Image, photo: Photo, fmt: str, options: ApplyOptions) -> bytes:
    """The file's bytes in ``fmt`` (a Pillow format name), with the photo's EXIF and colour profile."""
    return encode_image(image, fmt, quality=options.quality, exif=photo.exif, icc_profile=photo.icc_profile)


def write(data: bytes, target: str | os.PathLike[str], options: ApplyOptions, clean_stale: bool = True) -> None:
    """Write ``data`` to ``target`` atomically, creating its folder (see :func:`stylize.io.files.write_atomic`)."""
    make_parent_folder(target)
    write_atomic(data, target, overwrite=options.overwrite, clean_stale=clean_stale)
