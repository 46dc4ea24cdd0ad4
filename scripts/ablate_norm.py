#!/usr/bin/env python3
"""Instance norm versus batch norm in the generator (Ulyanov et al., 2016: IN stylizes better).

Trains two generators of the same size from the same seed, for the same steps, on the same photo stream and
style, differing only in their normalisation layers, then scores both on held-out photos (the last
``--held-out`` of the sorted folder, never trained on) with the same perceptual loss, and writes a side-by-side PNG
(rows: held-out photos; columns: photo, instance norm, batch norm) and a Markdown table.

    python scripts/ablate_norm.py --content-dir ../shared/data/content/sun80 \\
        --style ../shared/data/styles/starry_night.jpg --steps 150 --image-size 128 --out docs/ablate_norm
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stylize.config import ARCHITECTURES, LossConfig  # noqa: E402
from stylize.devices import autocast_dtype  # noqa: E402
from stylize.losses import PerceptualLoss  # noqa: E402
from stylize.network import Generator  # noqa: E402
from stylize.training import apply_gradients, compute_losses, trainable_parameters  # noqa: E402
from stylize.training_data import ContentStream, find_photos, load_crop, load_style_image  # noqa: E402
from stylize.vgg import load_vgg16  # noqa: E402


class BatchNormInPlaceOfCIN(nn.Module):
    """``BatchNorm2d`` with the conditional-instance-norm call signature ``(x, style_weights, statistics)``; batch
    norm takes its own statistics (the batch's in training, the running ones in evaluation), so ``statistics`` is
    always None here."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor, statistics: object = None) -> torch.Tensor:
        return self.norm(x)


def build(kind: str, arch: str, seed: int) -> Generator:
    torch.manual_seed(seed)
    generator = Generator(ARCHITECTURES[arch])
    if kind == "batch":
        for module in generator.modules():
            norm = getattr(module, "norm", None)
            if norm is not None and hasattr(norm, "gamma"):
                module.norm = BatchNormInPlaceOfCIN(norm.gamma.shape[1])
    return generator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content-dir", required=True)
    parser.add_argument("--style", default="starry_night")
    parser.add_argument("--arch", default="small", choices=sorted(ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--held-out", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ablate_norm")
    args = parser.parse_args()

    photos, _ = find_photos(args.content_dir)
    train_photos, held_out = photos[: -args.held_out], photos[-args.held_out :]
    _, style = load_style_image(args.style, LossConfig().style_size)
    loss = PerceptualLoss(load_vgg16().to(memory_format=torch.channels_last), LossConfig())
    loss.set_styles([style])
    dtype = autocast_dtype("auto", torch.device("cpu"))
    stream = ContentStream(train_photos, args.image_size, args.batch_size, 1, args.seed)
    test_images = torch.stack([load_crop(p, args.image_size, None) for p in held_out])  # (P, 3, S, S)

    results: dict[str, dict[str, float]] = {}
    outputs: dict[str, torch.Tensor] = {}
    for kind in ("instance", "batch"):
        generator = build(kind, args.arch, args.seed).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(trainable_parameters(generator, 0), lr=1e-3)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        generator.train()
        start = time.perf_counter()
        for step in range(args.steps):
            images, styles = stream[step]
            images = images.contiguous(memory_format=torch.channels_last)
            apply_gradients(compute_losses(generator, loss, images, styles, 1, 0, dtype), optimizer, scaler)
        elapsed = time.perf_counter() - start
        generator.eval()  # batch norm now uses its running statistics, as it would when deployed
        with torch.no_grad():
            outputs[kind] = generator(test_images, None).float()
            terms = loss(outputs[kind], test_images, torch.zeros(len(held_out), dtype=torch.long))
        results[kind] = {"content": terms.content.item(), "style": terms.style.item(), "tv": terms.tv.item(), "s": elapsed}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [torch.cat([test_images[i], outputs["instance"][i], outputs["batch"][i]], dim=2) for i in range(len(held_out))]
    grid = torch.cat(rows, dim=1).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()  # (P*S, 3*S, 3)
    Image.fromarray(grid).save(args.out.with_suffix(".png"))
    lines = [
        f"{args.arch} generator, {args.steps} steps, batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"style {Path(args.style).stem}, {len(train_photos)} training photos, {len(held_out)} held out, seed {args.seed}",
        "",
        "| norm | held-out content loss | held-out style loss | held-out TV loss | train time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {kind} | {r['content']:.4g} | {r['style']:.4g} | {r['tv']:.4g} | {r['s']:.0f} |" for kind, r in results.items()),
    ]
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
