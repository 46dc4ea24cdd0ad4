#!/usr/bin/env python3
"""Stroke size relative to the image (``--work-size``), and the two ways ``--strength`` weakens a painting's style.

1. **Preview and final alike.** A photo stylized as a 512-pixel preview and as a 4,096-pixel final with the same
   ``work_size``: the final, scaled down to 512, is compared with the preview (mean |difference| in /255), against
   the same comparison for the naive full-resolution run (the network at the photo's own size, strokes shrinking as
   the photo grows). Target: with ``work_size`` the difference is at most a third of the naive run's.
2. **Pictures for the docs**: the same photo at three work sizes; ``--strength`` 0.25 / 0.5 / 0.75 moving the
   predicted embedding toward the photo's own (``blend="embedding"``, the default for paintings) and blending pixels
   (``blend="pixels"``), side by side.

Uses the bundled arbitrary-style model, a bundled photo and painting; writes the pictures with ``--out``. Exits 1 when
the target is missed::

    python scripts/bench/bench_stroke_size.py [--photo stylize/data/photos/chelsea.jpg] [--out docs/]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.runtime import prepare_process  # noqa: E402

prepare_process()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from stylize.api import Stylizer  # noqa: E402
from stylize.io.decoding import pixels_of, to_float  # noqa: E402
from stylize.io.encoding import tensor_to_image  # noqa: E402

TARGET_SHARE = 1 / 3


def resized(image: torch.Tensor, long_side: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    scale = long_side / max(height, width)
    size = (round(height * scale), round(width * scale))
    return F.interpolate(image, size=size, mode="bicubic" if scale > 1 else "bilinear", antialias=scale < 1, align_corners=False).clamp(0, 1)


def strip(images: list[Image.Image], labels: list[str], height: int = 256) -> Image.Image:
    tiles = [image.resize((round(image.width * height / image.height), height), Image.Resampling.LANCZOS) for image in images]
    out = Image.new("RGB", (sum(t.width for t in tiles), height + 18), "white")
    x = 0
    draw = ImageDraw.Draw(out)
    for tile, label in zip(tiles, labels, strict=True):
        out.paste(tile, (x, 18))
        draw.text((x + 4, 3), label, fill="black")
        x += tile.width
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=ROOT / "stylize" / "data" / "photos" / "chelsea.jpg")
    parser.add_argument("--painting", type=Path, default=ROOT / "stylize" / "data" / "styles" / "starry_night.jpg")
    parser.add_argument("--preview", type=int, default=512)
    parser.add_argument("--final", type=int, default=4096)
    parser.add_argument("--work-size", type=int, default=512)
    parser.add_argument("--out", type=Path, help="folder for the pictures (none written without it)")
    args = parser.parse_args()
    stylizer = Stylizer.load("arbitrary", device="cpu", precision="fp32")
    photo = to_float(pixels_of(Image.open(args.photo).convert("RGB")))[None]
    preview_in, final_in = resized(photo, args.preview), resized(photo, args.final)
    painting = str(args.painting)

    def run(image: torch.Tensor, **settings) -> torch.Tensor:
        return stylizer.apply(image, style_image=painting, tile="auto", **settings)

    rows = {}
    for name, settings in (("naive (full resolution)", {}), (f"work_size={args.work_size}", {"work_size": args.work_size})):
        preview, final = run(preview_in, **settings), run(final_in, **settings)
        rows[name] = (resized(final, args.preview) - preview).abs().mean().item() * 255
    print(f"{args.photo.name}: preview {args.preview} px against the final {args.final} px scaled down to {args.preview} (mean /255)")
    for name, value in rows.items():
        print(f"  {name:26s} {value:6.2f}")
    naive, ours = rows["naive (full resolution)"], rows[f"work_size={args.work_size}"]
    met = ours <= TARGET_SHARE * naive
    print(f"{'ok    ' if met else 'MISSED'} work_size difference at most {TARGET_SHARE:.2f} x the naive run's: {ours / naive:.2f}x")

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        big = resized(photo, 1536)
        sizes = (256, 512, 1024)
        images = [tensor_to_image(run(big, work_size=size)[0]) for size in sizes]
        strip(images, [f"--work-size {size}" for size in sizes], height=384).save(args.out / "work_size.jpg", quality=90)
        strengths = (0.25, 0.5, 0.75, 1.0)
        small = resized(photo, 512)
        embedding = [tensor_to_image(run(small, strength=s)[0]) for s in strengths]
        pixels = [tensor_to_image(run(small, strength=s, blend="pixels")[0]) for s in strengths]
        top = strip(embedding, [f"embedding {s}" for s in strengths])
        bottom = strip(pixels, [f"pixels {s}" for s in strengths])
        both = Image.new("RGB", (top.width, top.height + bottom.height), "white")
        both.paste(top, (0, 0))
        both.paste(bottom, (0, top.height))
        both.save(args.out / "strength.jpg", quality=90)
        print(f"pictures: {args.out / 'work_size.jpg'}, {args.out / 'strength.jpg'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
