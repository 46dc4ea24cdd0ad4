#!/usr/bin/env python3
"""Eager inference by memory layout: contiguous, wide layers channels-last (the engine's CPU choice), all channels-last.

For the bundled 26-style network (fp32) and a Johnson network with random weights (fp32 and bf16), times the three
layouts of :class:`stylize.fastpath.PreparedGenerator` side by side in one process (median of ``--repeats``) on one
``--height`` x ``--width`` image, and prints each one's largest difference from the plain ``Generator`` in 1/255::

    python scripts/bench_layouts.py [--height 768 --width 1024 --repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stylize.runtime import prepare_process  # noqa: E402

prepare_process()  # as the CLI does, before torch is imported

import torch  # noqa: E402

from stylize.config import ARCHITECTURES  # noqa: E402
from stylize.fastpath import PreparedGenerator  # noqa: E402
from stylize.modelfile import load_model  # noqa: E402
from stylize.network import Generator  # noqa: E402

LAYOUTS = {"contiguous": {}, "wide channels-last": {"wide_channels_last": True}, "all channels-last": {"channels_last": True}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    image = torch.rand(1, 3, args.height, args.width)
    bundled = load_model(ROOT / "models" / "multistyle26.safetensors").generator
    johnson = Generator(ARCHITECTURES["johnson"]).eval()
    cases = [
        ("26-style", bundled, torch.float32, torch.eye(bundled.config.num_styles)[19:20]),
        ("Johnson", johnson, torch.float32, None),
        ("Johnson", johnson, torch.bfloat16, None),
    ]
    print(f"{args.width}x{args.height}, eager, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'network':9s} {'dtype':9s} " + " ".join(f"{name:>20s}" for name in LAYOUTS) + "   max diff /255")
    with torch.inference_mode():
        for name, generator, dtype, weights in cases:
            reference = generator(image, weights)
            prepared = {label: PreparedGenerator(generator, dtype, **options) for label, options in LAYOUTS.items()}
            times: dict[str, list[float]] = {label: [] for label in LAYOUTS}
            diffs = {label: (p(image, weights) - reference).abs().max().item() * 255 for label, p in prepared.items()}
            for _ in range(args.repeats):  # round robin: load from other processes hits every layout alike
                for label, network in prepared.items():
                    started = time.perf_counter()
                    network(image, weights)
                    times[label].append(time.perf_counter() - started)
            cells = " ".join(f"{statistics.median(times[label]) * 1000:17.0f} ms" for label in LAYOUTS)
            print(f"{name:9s} {str(dtype).removeprefix('torch.'):9s} {cells}   " + ", ".join(f"{d:.3f}" for d in diffs.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
