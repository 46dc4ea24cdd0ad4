#!/usr/bin/env python3
"""OpenMP wait policy: how long the bundled 26-style network takes per image under each setting, quiet and busy.

Every forward pass crosses an OpenMP barrier between ops; an idle thread there either spins or sleeps. Each cell
runs the network in a fresh process (the OpenMP runtime reads its environment once, at load) with one setting:

- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once; stylize's choice on a busy machine);
- ``spin 10000``: ``GOMP_SPINCOUNT=10000`` (spin that many times first; stylize's choice on a quiet machine);
- ``ours``: no setting, so :func:`stylize.runtime.prepare_process` chooses (shown in brackets: spin or passive);
- ``libgomp default``: ``GOMP_SPINCOUNT=300000`` (libgomp's own default when no policy is set);
- ``active``: ``OMP_WAIT_POLICY=ACTIVE`` (spin without bound).

Scenarios: a quiet machine, and the same with ``--hogs`` CPU-bound processes competing (a busy shared machine).
Prints milliseconds per image (median) and CPU milliseconds per image; exits 1 when ours is more than ``--slack``
(25%) slower than the better of passive and spin 10000 in any scenario.

    python scripts/bench_spin.py [--sizes 256 1024] [--hogs 1 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 10000": {"GOMP_SPINCOUNT": "10000"},
    "ours": {},
    "libgomp default": {"GOMP_SPINCOUNT": "300000"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
}

CHILD = """
import json, os, statistics, sys, time
sys.path.insert(0, {root!r})
from stylize.runtime import prepare_process
prepare_process()
choice = "spin" if os.environ.get("GOMP_SPINCOUNT") == "10000" else "passive"
import torch
from stylize.fastpath import PreparedGenerator
from stylize.modelfile import load_model
generator = load_model({model!r}).generator
prepared = PreparedGenerator(generator, torch.float32, wide_channels_last=True)
image = torch.rand(1, 3, {size}, {size})
with torch.no_grad():
    for _ in range(2):
        prepared(image)
    wall, cpu_start = [], time.process_time()
    for _ in range({repeats}):
        started = time.perf_counter()
        prepared(image)
        wall.append(time.perf_counter() - started)
    cpu = (time.process_time() - cpu_start) / {repeats}
print(json.dumps({{"ms": statistics.median(wall) * 1000, "cpu_ms": cpu * 1000, "choice": choice}}))
"""


def _spin_forever() -> None:
    while True:
        pass


def run_cell(setting: dict[str, str], size: int, repeats: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(setting)
    code = CHILD.format(root=str(ROOT), model=str(ROOT / "models" / "multistyle26.safetensors"), size=size, repeats=repeats)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--hogs", type=int, nargs="+", default=[1, 2], help="CPU-bound competitors per busy scenario")
    parser.add_argument("--slack", type=float, default=0.25)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; 26-style network, fp32, one image per forward")
    print(f"{'scenario':10s} {'size':>5s} " + " ".join(f"{name:>24s}" for name in SETTINGS))
    missed = []
    for hogs in [0, *args.hogs]:
        competitors = [multiprocessing.Process(target=_spin_forever, daemon=True) for _ in range(hogs)]
        for process in competitors:
            process.start()
        time.sleep(0.5 if hogs else 0)
        try:
            for size in args.sizes:
                repeats = 31 if size <= 256 else 7
                cells = {name: run_cell(setting, size, repeats) for name, setting in SETTINGS.items()}
                scenario = "quiet" if not hogs else f"{hogs} hogs"
                row = " ".join(f"{c['ms']:8.1f} ms ({c['cpu_ms']:6.1f} cpu)" for c in cells.values())
                print(f"{scenario:10s} {size:5d} {row}  [ours: {cells['ours']['choice']}]")
                best = min(cells["passive"]["ms"], cells["spin 10000"]["ms"])
                if cells["ours"]["ms"] > best * (1 + args.slack):
                    missed.append(f"{scenario} {size}: ours {cells['ours']['ms']:.1f} ms, better fixed setting {best:.1f} ms")
        finally:
            for process in competitors:
                process.terminate()
    for line in missed:
        print(f"MISSED: {line} (more than {args.slack:.0%} slower)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
