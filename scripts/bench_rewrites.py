#!/usr/bin/env python3
"""The fast path's sub-pixel / space-to-depth rewrites, on and off, eager and compiled, on the CPU.

For the bundled 26-style network (fp32) and the Johnson network (random weights, bf16) at ``--size`` (1024), times
``PreparedGenerator.core`` with ``rewrite=False`` and ``rewrite=True``, eager and ``torch.compile``d, interleaved
(round robin, median of ``--repeats``), and prints each variant's largest difference from the plain ``Generator``.
This is how the engine's choice was made: rewrites for eager runs, the plain network for compiled ones.

    python scripts/bench_rewrites.py [--size 1024] [--repeats 5]
    python scripts/bench_rewrites.py --size 32 --repeats 1 --eager-only   # smoke test: no compiles (minutes each)
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

from stylize.catalog import find_model  # noqa: E402
from stylize.config import ARCHITECTURES  # noqa: E402
from stylize.fastpath import PreparedGenerator  # noqa: E402
from stylize.modelfile import load_model  # noqa: E402
from stylize.network import Generator  # noqa: E402
from stylize.topology import style_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eager-only", action="store_true", help="skip the torch.compile variants")
    args = parser.parse_args()
    torch.manual_seed(0)
    networks = {
        "26-style fp32": (load_model(find_model("multistyle26")).generator.eval(), torch.float32, torch.eye(26)[19]),
        "Johnson bf16": (Generator(ARCHITECTURES["johnson"]).eval(), torch.bfloat16, torch.ones(1)),
    }
    image = torch.rand(1, 3, args.size, args.size)
    print(f"{torch.get_num_threads()} threads, {args.size}x{args.size}, median of {args.repeats} (interleaved)")
    print(f"{'network':<15} {'variant':<22} {'ms':>7} {'max diff vs Generator':>22}")
    with torch.inference_mode():
        for name, (generator, dtype, weights) in networks.items():
            reference = generator(image, weights)
            variants = {}
            for rewrite in (False, True):
                prepared = PreparedGenerator(generator, dtype, rewrite=rewrite)
                affine = prepared.mixed_affine(style_weights(weights, generator.config.num_styles, 1, image.device))
                label = "rewritten" if rewrite else "plain"
                variants[f"eager {label}"] = lambda p=prepared, a=affine: p.core(image, a, args.size, args.size)
                if not args.eager_only:
                    compiled = torch.compile(prepared.core, dynamic=False)
                    variants[f"compiled {label}"] = lambda c=compiled, a=affine: c(image, a, args.size, args.size)
            errors = {label: (function() - reference).abs().max().item() for label, function in variants.items()}  # also warms up
            times: dict[str, list[float]] = {label: [] for label in variants}
            for _ in range(args.repeats):
                for label, function in variants.items():
                    started = time.perf_counter()
                    function()
                    times[label].append(time.perf_counter() - started)
            for label in variants:
                print(f"{name:<15} {label:<22} {statistics.median(times[label]) * 1000:>7.0f} {errors[label]:>22.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
