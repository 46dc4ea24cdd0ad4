#!/usr/bin/env python3
"""Take the marks bound to the frame out of the imported arbitrary-style network: models/arbitrary.safetensors.

Magenta's arbitrary-style transformer, as imported by import_arbitrary.py, paints a band along the top and bottom
edges and patches in the corners of every output, whatever the photo (scripts/bench/bench_borders.py measures them as
the average of many outputs). This fine-tunes it with the border term of ``stylize train``
(:func:`stylize.training.losses.border_loss`) against the imported network itself: on a crop, the network must paint
what the imported network paints on a view of the same photo ``BORDER_MARGIN`` pixels wider on every side, cut to the
crop. Pixels alone would let it get there by painting blander textures everywhere (the squared difference of a
texture it cannot predict shrinks with the texture), so a style term keeps each output's Gram matrices (the loss
network's texture statistics, the style loss of training) equal to those of the imported network's output.

Styles are the predicted embeddings of the given paintings and photos, two at a time mixed with a random weight, so
that every part of the embedding space the predictor reaches is refined, not one painting's. The network trains in fp32 on the
CPU (the loss network in bf16 where the CPU has it, as in training), seeded: the same command makes the same file up
to float rounding::

    python scripts/import/refine_arbitrary.py --photos ../shared/data/content/sun80 --steps 1500 \\
        --styles stylize/data/styles ../shared/data/styles --out models/arbitrary.safetensors
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from stylize.config import LossConfig  # noqa: E402
from stylize.devices import autocast_dtype  # noqa: E402
from stylize.io import bundled_path, sha256_of  # noqa: E402
from stylize.network import load_model, load_predictor, save_model, style_code  # noqa: E402
from stylize.runtime import prepare_process  # noqa: E402
from stylize.styles import PREDICTOR_FILE, PaintingEmbedder  # noqa: E402
from stylize.training.data import find_photos, load_crop  # noqa: E402
from stylize.training.losses import BORDER_MARGIN, border_loss, gram_matrix, style_loss  # noqa: E402
from stylize.training.vgg import load_vgg16  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "arbitrary.safetensors", help="the imported network")
    parser.add_argument("--photos", type=Path, required=True, help="photo folder: all but the last --held-out are cropped")
    parser.add_argument("--held-out", type=int, default=8, help="photos left out (bench_quality's and bench_borders' held-out)")
    parser.add_argument("--styles", type=Path, nargs="+", required=True, help="folders of paintings whose embeddings are mixed")
    parser.add_argument("--style-photos", type=int, default=24, help="also this many training photos as styles (variety)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=192, help="side of the crops the network paints")
    parser.add_argument("--style-weight", type=float, default=1e-7, help="of the Gram term against the border term")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    prepare_process()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    imported = load_model(args.model)
    if not imported.embedding_size:
        raise SystemExit(f"{args.model} is not an arbitrary-style network")
    if imported.provenance.get("refined"):
        raise SystemExit(f"{args.model} is refined already: start from the file import_arbitrary.py writes")
    student = imported.generator.train().requires_grad_(True)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)

    photos = find_photos(args.photos)[0][: -args.held_out]
    paintings = sorted(path for folder in args.styles for path in folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    embedder = PaintingEmbedder(load_predictor(bundled_path(PREDICTOR_FILE)), torch.device("cpu"))
    sources = [*paintings, *photos[:: max(1, len(photos) // args.style_photos)][: args.style_photos]]
    with torch.no_grad():
        embeddings = torch.stack([embedder.paintings({str(path): 1.0}) for path in sources])  # (N, E)
    print(f"{len(photos)} photos, {len(paintings)} paintings + {len(sources) - len(paintings)} photos as styles", flush=True)

    vgg = load_vgg16().to(memory_format=torch.channels_last)
    vgg_dtype = autocast_dtype("auto", torch.device("cpu"))  # the loss network in bf16 where the CPU has it, as training
    layers = LossConfig().style_layers
    view = args.image_size + 2 * BORDER_MARGIN
    inner = slice(BORDER_MARGIN, BORDER_MARGIN + args.image_size)
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)
    started = time.perf_counter()
    for step in range(args.steps):
        views = torch.stack([load_crop(rng.choice(photos), view, rng) for _ in range(args.batch_size)])  # (B, 3, V, V)
        mix = [rng.random() for _ in range(args.batch_size)]
        pairs = [(rng.randrange(len(sources)), rng.randrange(len(sources))) for _ in range(args.batch_size)]
        codes = torch.stack([style_code(w * embeddings[i] + (1 - w) * embeddings[j]) for w, (i, j) in zip(mix, pairs, strict=True)])
        with torch.no_grad():
            target = teacher(views, codes)[..., inner, inner]
            with torch.autocast("cpu", dtype=vgg_dtype or torch.float32, enabled=vgg_dtype is not None):
                grams = {layer: gram_matrix(features) for layer, features in vgg(target, layers).items()}
        output = student(views[..., inner, inner], codes)
        with torch.autocast("cpu", dtype=vgg_dtype or torch.float32, enabled=vgg_dtype is not None):
            features = vgg(output.contiguous(memory_format=torch.channels_last), layers)
            texture = sum(style_loss(features[layer], grams[layer]) for layer in layers)
        loss = border_loss(output, target) + args.style_weight * texture
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            seconds = time.perf_counter() - started
            print(f"step {step + 1}/{args.steps}: loss {loss.item():.5f} (style {texture.item():.4g}), {seconds:.0f} s", flush=True)

    imported.generator = student.eval().requires_grad_(False)
    imported.provenance = {
        **imported.provenance,
        "refined": {
            "what": "border term against the imported network (scripts/import/refine_arbitrary.py)",
            "steps": args.steps, "lr": args.lr, "style_weight": args.style_weight, "batch_size": args.batch_size, "image_size": args.image_size,
            "margin": BORDER_MARGIN, "seed": args.seed, "photos": f"{args.photos.name}: {len(photos)} photos",
            "styles": [path.name for path in paintings], "style_photos": len(sources) - len(paintings),
            "imported_sha256": sha256_of(args.model),
        },
    }  # fmt: skip
    save_model(imported, args.out)
    print(f"wrote {args.out} (sha256 {sha256_of(args.out)}) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
