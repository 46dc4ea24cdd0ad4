#!/usr/bin/env python3
"""How sensitive the bundled 26-style network is: to bf16 in parts of it, and to 1-level noise in its input.

1. Mixed precision: bf16 weights and activations in the residual blocks only, or in the head conv only, the rest
   fp32; deviation from fp32 (worst over photos x styles) against ``--precision auto``'s tolerance (mean 1.5/255,
   p99.9 8/255).
2. Input noise: the mean change of the stylized output (0-255 levels) when every input pixel moves by -1, 0 or +1
   level at random, on a real photo and on the smooth synthetic photo of the tests: how far two JPEG decoders'
   ~1-level differences (nvJPEG against libjpeg, docs/gpu.md) move a stylized output on each.

    python scripts/probe_precision.py [--photos DIR] [--size 512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stylize.catalog import find_model  # noqa: E402
from stylize.decoding import pixels_of, to_float  # noqa: E402
from stylize.fastpath import PreparedGenerator  # noqa: E402
from stylize.modelfile import load_model  # noqa: E402
from stylize.precision import MAX_MEAN_ABS, MAX_P999, deviation  # noqa: E402


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float in [0, 1]."""
    return to_float(pixels_of(image)).unsqueeze(0)


def mixed(generator, parts: str) -> PreparedGenerator:
    prepared = PreparedGenerator(generator, torch.float32, rewrite=False)
    if parts == "residual":
        layers = [layer for layer in prepared.layers if layer.step.name.startswith("residual.")]
    else:
        layers = [prepared.layer("head")]
    for layer in layers:
        layer.weight = layer.weight.to(torch.bfloat16)  # the step then casts its input to bf16 (PreparedGenerator.run_step)
    return prepared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    parser.add_argument("--size", type=int, default=512, help="long side the photos are reduced to (part 1)")
    args = parser.parse_args()
    generator = load_model(find_model("multistyle26")).generator.eval()
    photos = []
    for path in sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:3]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((args.size, args.size))
        photos.append(image_to_tensor(image))
    styles = [torch.nn.functional.one_hot(torch.tensor(i), 26).float() for i in (0, 8, 17, 19, 25)]
    reference = PreparedGenerator(generator, torch.float32, rewrite=False)
    print(f"1. bf16 in part of the network ({len(photos)} photos x {len(styles)} styles, ~{args.size} px)")
    with torch.inference_mode():
        expected = [[reference(x, w) for w in styles] for x in photos]
        for parts in ("residual", "head"):
            candidate = mixed(generator, parts)
            devs = [deviation(expected[i][j], candidate(x, w)) for i, x in enumerate(photos) for j, w in enumerate(styles)]
            mean, p999 = max(d.mean_abs for d in devs), max(d.p999 for d in devs)
            verdict = "ok" if mean <= MAX_MEAN_ABS and p999 <= MAX_P999 else "out of tolerance"
            print(f"   bf16 {parts:<9} worst mean {mean * 255:.2f}/255  p99.9 {p999 * 255:.2f}/255  ({verdict})")

        from conftest import make_photo  # the tests' smooth synthetic photo

        synthetic = image_to_tensor(Image.open(make_photo(Path("/tmp") / "stylize-probe-synthetic.png", (160, 120))).convert("RGB"))
        real = photos[0]
        noise = torch.Generator().manual_seed(0)
        print("2. output change for +-1 level of input noise (style 19)")
        for name, image in (("real photo", real), ("synthetic photo", synthetic)):
            jitter = torch.randint(-1, 2, image.shape, generator=noise).float() / 255
            a, b = reference(image, styles[3]), reference((image + jitter).clamp(0, 1), styles[3])
            print(f"   {name:<16} mean {((a - b).abs().mean() * 255).item():.1f} levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
