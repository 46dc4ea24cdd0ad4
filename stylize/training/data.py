"""Training images: style images by path or bundled name, and a position-resumable stream of content batches.

The content stream is a pure function of ``(seed, step)``: step ``t`` of a run with global batch ``B`` holds the
global samples ``g = t * B ... t * B + B - 1``; sample ``g`` is photo ``perm_e[g mod N]`` of epoch ``e = g div N``
(``perm_e`` a permutation seeded by ``(seed, e)``), with a crop and flip seeded by ``(seed, g)`` and style
``g mod S``. Resuming at step ``t`` therefore continues the very same sequence, and process ``r`` of ``K``
distributed processes takes the ``r``-th contiguous ``B / K`` slice of every step, which is what a single process
with batch ``B`` would see.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from stylize.errors import StylizeError
from stylize.io import BUNDLED_PHOTOS_DIR, BUNDLED_STYLES_DIR, pixels_of, to_float

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
# Errors PIL raises for files that are not (complete) images; anything else is a bug and should surface.
_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def bundled_style_names() -> list[str]:
    return sorted(path.stem for path in BUNDLED_STYLES_DIR.glob("*.jpg"))


def resolve_style(spec: str) -> Path:
    """A style image path, or the bundled painting called ``spec`` (``starry_night``)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    bundled = BUNDLED_STYLES_DIR / f"{spec}.jpg"
    if bundled.is_file():
        return bundled
    raise StylizeError(
        f"style image not found: {spec}",
        f"pass an image file or a bundled painting: {', '.join(bundled_style_names())}",
    )


def load_style_image(spec: str, style_size: int) -> tuple[str, torch.Tensor]:
    """Read a style image; returns its name (the file stem) and a ``(1, 3, H, W)`` tensor in ``[0, 1]``.

    With ``style_size > 0`` the image is resized so that its long side is ``style_size`` pixels.
    """
    path = resolve_style(spec)
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except _IMAGE_ERRORS as exc:
        raise StylizeError(f"cannot read style image {path}: {exc}", "pass a JPEG, PNG or WebP image") from None
    if style_size > 0:
        scale = style_size / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    if min(image.size) < 16:
        raise StylizeError(f"style image {path.name} is too small ({image.width}x{image.height})", "use a larger image")
    return path.stem, to_float(pixels_of(image)).unsqueeze(0)


def find_photos(folder: str | Path | None) -> tuple[list[Path], int]:
    """All readable images under ``folder`` (recursively, sorted), and how many were skipped as unreadable.

    ``None`` selects the bundled demo photos. Only headers are read here; a file that fails to decode later is
    replaced by the next photo of the stream and logged.
    """
    root = BUNDLED_PHOTOS_DIR if folder is None else Path(folder).expanduser()
    if not root.is_dir():
        raise StylizeError(f"content folder not found: {root}", "pass `content_dir` with a folder of photos")
    candidates = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    photos: list[Path] = []
    for path in candidates:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - opening parses the header; a bad header raises here
            photos.append(path)
        except _IMAGE_ERRORS:
            continue
    skipped = len(candidates) - len(photos)
    if not photos:
        found = f" ({skipped} unreadable image files skipped)" if skipped else ""
        raise StylizeError(
            f"no readable photos in {root}{found}",
            f"put JPEG/PNG/WebP photos in it (searched recursively for {', '.join(sorted(IMAGE_SUFFIXES))})",
        )
    return photos, skipped


def load_crop(path: Path, size: int, rng: random.Random | None) -> torch.Tensor:
    """Read a photo as a ``(3, size, size)`` crop in ``[0, 1]``.

    The short side is scaled to ``size`` times a random factor in ``[1, 1.25]``, then a random square is cut
    and flipped horizontally half of the time. ``rng=None`` gives the deterministic centre crop used for previews.
    """
    with Image.open(path) as opened:
        opened.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is still >= size
        image = ImageOps.exif_transpose(opened).convert("RGB")
    zoom = 1.0 if rng is None else rng.uniform(1.0, 1.25)
    scale = size * zoom / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if rng is None:
        left, top = (width - size) // 2, (height - size) // 2
    else:
        left, top = rng.randint(0, width - size), rng.randint(0, height - size)
    image = image.crop((left, top, left + size, top + size))
    if rng is not None and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_float(pixels_of(image))


class ContentStream(torch.utils.data.Dataset):
    """``stream[step]`` -> this process's slice of that step's batch: images ``(b, 3, S, S)``, style indices ``(b,)``.

    ``b = batch_size // world_size``; style indices are ``style_offset + g mod num_styles`` (see module docstring).
    """

    def __init__(
        self,
        photos: list[Path],
        image_size: int,
        batch_size: int,
        num_styles: int,
        seed: int,
        style_offset: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.photos = photos
        self.image_size = image_size
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.num_styles = num_styles
        self.style_offset = style_offset
        self.seed = seed
        self.rank = rank
        self._permutation: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler decides which steps are read

    def permutation(self, epoch: int) -> list[int]:
        if self._permutation is None or self._permutation[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutation = (epoch, torch.randperm(len(self.photos), generator=generator).tolist())
        return self._permutation[1]

    def sample(self, index: int) -> tuple[torch.Tensor, int]:
        """Global sample ``index`` -> (crop, style index)."""
        epoch, position = divmod(index, len(self.photos))
        order = self.permutation(epoch)
        rng = random.Random(f"{self.seed}:{index}")  # str seeds hash deterministically across processes and runs
        for offset in range(len(order)):
            path = self.photos[order[(position + offset) % len(order)]]
            try:
                return load_crop(path, self.image_size, rng), self.style_offset + index % self.num_styles
            except _IMAGE_ERRORS as exc:
                log.warning("skipping unreadable photo %s: %s", path, exc)
        raise StylizeError("none of the content photos can be decoded", "check the files in `content_dir`")

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = step * self.batch_size + self.rank * self.local_batch
        samples = [self.sample(first + j) for j in range(self.local_batch)]
        images = torch.stack([image for image, _ in samples])  # (b, 3, S, S)
        styles = torch.tensor([style for _, style in samples], dtype=torch.long)  # (b,)
        return images, styles
