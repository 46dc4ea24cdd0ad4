#!/usr/bin/env python3
"""How far a training step's gradients move with the precision of its losses.

Gradients of the full loss with respect to the generator's parameters, for ``--batch`` (4) ``--size`` (256) crops of
real photos (the last ones of ``--content-dir``, or random images) and one style, in three settings:

- (A) everything float32 (the reference);
- (B) bf16 autocast with the losses in float32 (Gram matrices and content loss of upcast features);
- (C) bf16 autocast with bf16 Gram products and content differences (what ``stylize train`` does).

Printed: the three loss terms, and cosine similarity and relative L2 distance of each pair of gradients, for the
bundled trained ``starry_night`` model and for a freshly initialised Johnson generator. (C) is accepted when it
stays as close to (A) as (B) does: the losses' precision then adds nothing to what autocast itself changes.

    python scripts/probe_train_precision.py [--content-dir ../shared/data/content/sun80] [--batch 4 --size 256]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import stylize.losses as losses  # noqa: E402
from stylize.config import ARCHITECTURES, LossConfig  # noqa: E402
from stylize.modelfile import load_model  # noqa: E402
from stylize.network import Generator  # noqa: E402
from stylize.training import compute_losses  # noqa: E402
from stylize.training_data import find_photos, load_crop, load_style_image  # noqa: E402
from stylize.vgg import load_vgg16  # noqa: E402


def float32_gram(features: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = features.shape
    with torch.autocast(features.device.type, enabled=False):  # else CPU autocast runs the bmm in bf16
        flat = features.float().reshape(batch, channels, height * width)
        return torch.bmm(flat, flat.transpose(1, 2)) / (channels * height * width)


def float32_content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.autocast(features.device.type, enabled=False):
        return F.mse_loss(features.float(), target.float())


def gradients(generator, loss, images, autocast, float32_losses):
    exact_gram, exact_content = losses.gram_matrix, losses.content_loss
    if float32_losses:
        losses.gram_matrix, losses.content_loss = float32_gram, float32_content_loss
    try:
        generator.zero_grad(set_to_none=True)
        styles = torch.zeros(images.shape[0], dtype=torch.long)
        terms = compute_losses(generator, loss, images, styles, 1, 0, torch.bfloat16 if autocast else None)
        terms.total.backward()
    finally:
        losses.gram_matrix, losses.content_loss = exact_gram, exact_content
    grad = torch.cat([p.grad.flatten() for p in generator.parameters() if p.grad is not None])
    return grad, [f"{t.item():.8g}" for t in (terms.content, terms.style, terms.tv)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content-dir", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=4, help="images per step")
    parser.add_argument("--size", type=int, default=256, help="side of the square crops")
    args = parser.parse_args()
    torch.manual_seed(0)
    layout = torch.channels_last
    if args.content_dir:
        photos, _ = find_photos(args.content_dir)
        rng = random.Random(1)
        images = torch.stack([load_crop(path, args.size, rng) for path in photos[-args.batch :]])
    else:
        images = torch.rand(args.batch, 3, args.size, args.size)
    images = images.contiguous(memory_format=layout)
    _, style = load_style_image("starry_night", 512)
    loss = losses.PerceptualLoss(load_vgg16().to(memory_format=layout), LossConfig())
    loss.set_styles([style])
    trained = load_model(ROOT / "models" / "starry_night.safetensors").generator.requires_grad_(True)
    fresh = Generator(ARCHITECTURES["johnson"])
    for label, generator in (("trained starry_night", trained), ("fresh johnson", fresh)):
        generator = generator.to(memory_format=layout)
        a, terms_a = gradients(generator, loss, images, autocast=False, float32_losses=True)
        b, terms_b = gradients(generator, loss, images, autocast=True, float32_losses=True)
        c, terms_c = gradients(generator, loss, images, autocast=True, float32_losses=False)
        print(f"{label}: losses (content, style, tv) A {terms_a}  B {terms_b}  C {terms_c}")
        for name, x, y in (("B vs A", b, a), ("C vs A", c, a), ("C vs B", c, b)):
            cosine = F.cosine_similarity(x, y, dim=0).item()
            print(f"  {name}: cosine {cosine:.6f}, relative distance {((x - y).norm() / y.norm()).item():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
