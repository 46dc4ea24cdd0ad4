"""Exact tiled inference: accuracy, peak memory and speed against whole-image inference; --memory-limit holds.

    PYTHONPATH=. python scripts/bench/bench_tiling.py                      # everything (slow on a 2-core CPU)
    PYTHONPATH=. python scripts/bench/bench_tiling.py --parts limit        # stylize apply's peak RSS under --memory-limit
    PYTHONPATH=. python scripts/bench/bench_tiling.py --parts accuracy --sizes 2048
    PYTHONPATH=. python scripts/bench/bench_tiling.py --parts rss,big
    PYTHONPATH=. python scripts/bench/bench_tiling.py --sizes 256 --tile 64 --speed-size 256 --rss-size 256 --big 256 \
        --seam-out /tmp/seam.png                                     # smoke test of every part

Parts: ``accuracy`` (streamed tiles (:func:`stylize.engine.tiling.stream_forward`, RAM and disk) and naive tiles against
whole at each --sizes, seam crop PNG to --seam-out), ``speed`` (time per megapixel at --speed-size, whole vs
streamed, each in a fresh subprocess), ``rss`` (peak RSS of whole vs streamed at --rss-size, fresh subprocesses,
VmHWM), ``big`` (--big x --big streamed through temporary files: peak RSS, time, peak size of the temporary
files), ``limit`` (``stylize apply`` as a user runs it, on a --limit-size photo with ``--memory-limit`` 256MB, 512MB
and 1GB, with ``--tile auto`` and ``--tile 512``: peak RSS (``/usr/bin/time``-style, the child's ru_maxrss) must stay
within the peak RSS of the same command on a 64-pixel photo plus the limit, plus 15%). Inputs are real photos from
--photos upscaled with bicubic resampling. Whole means the reference :class:`~stylize.network.generator.Generator` on the
whole image.

Naive tiles are the contrast, tiling as a user would do it around a network with instance norm: the image is cut
into --tile-pixel tiles, each tile is run through the whole network on its own with a --halo-pixel margin of
its real neighbours (so adjacent crops overlap by twice the halo; clamped at the image border), and the tiles'
centres are stitched edge to edge. Every tile is normalised by its own statistics, which shifts its tones and
leaves seams; the streamer's whole-image statistics do not.
Prints a table and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from bench_batch import measure  # this folder is on sys.path when a script runs
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "multistyle26.safetensors"
STYLE = 19

TARGETS = {"mean": 0.5, "p999": 4.0, "rss_ratio": 0.40, "big_rss_gb": 3.0, "speed_ratio": 2.0}


def load_photo(photos: Path, size: int) -> torch.Tensor:
    """The first photo in ``photos``, upscaled to ``size`` x ``size``, as (1, 3, H, W) float in [0, 1]."""
    path = sorted(photos.glob("*.jpg"))[0]
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    tensor = torch.empty(1, 3, size, size)
    for top in range(0, size, 512):  # band by band, so that loading does not set the peak RSS of the big run
        band = np.array(resized.crop((0, top, size, min(top + 512, size))))
        tensor[0, :, top : top + band.shape[0]] = torch.from_numpy(band).permute(2, 0, 1).float().div_(255)
    resized.close()
    return tensor


def peak_rss_bytes() -> int:
    """VmHWM of this process (falls back to ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512  # allocated, not apparent, size
            except OSError:
                pass
    return total


def worker(args: argparse.Namespace) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    from stylize.engine.tiling import stream_forward
    from stylize.network.modelfile import load_model

    generator = load_model(MODEL).generator.eval().requires_grad_(False)
    image = load_photo(args.photos, args.size)
    weights = torch.zeros(generator.config.num_styles)
    weights[STYLE] = 1.0
    base_rss = peak_rss_bytes()
    temp_root = Path(tempfile.mkdtemp(prefix="bench-tiling-"))
    peak_files = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.2):
            peak_files[0] = max(peak_files[0], folder_bytes(temp_root))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    started = time.perf_counter()
    with torch.inference_mode():
        if args.worker == "whole":
            out = generator(image, weights)
        else:
            out = stream_forward(generator, image, weights, tile=args.tile, storage=args.worker, temp_dir=temp_root)
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    left = list(temp_root.iterdir())
    temp_root.rmdir()
    print(json.dumps({
        "mode": args.worker, "size": args.size, "seconds": seconds, "peak_rss": peak_rss_bytes(), "input_rss": base_rss,
        "peak_temp_bytes": peak_files[0], "temp_left": len(left), "finite": bool(torch.isfinite(out).all()),
    }))


def run_worker(mode: str, size: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--size", str(size), "--tile", str(args.tile), "--photos", str(args.photos)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        raise RuntimeError(f"worker {mode} {size} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def naive_tiles(generator, image: torch.Tensor, weights: torch.Tensor, tile: int, halo: int) -> torch.Tensor:
    """The network run on each ``tile`` x ``tile`` piece of ``image`` (1, 3, H, W) on its own, read with a ``halo``-pixel
    margin of real neighbours (clamped at the border), the pieces' centres stitched edge to edge (see the docstring)."""
    _, _, height, width = image.shape
    out = torch.empty_like(image)
    with torch.inference_mode():
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                bottom, right = min(top + tile, height), min(left + tile, width)
                r0, c0 = max(0, top - halo), max(0, left - halo)
                piece = generator(image[:, :, r0 : min(height, bottom + halo), c0 : min(width, right + halo)], weights)
                out[:, :, top:bottom, left:right] = piece[:, :, top - r0 : bottom - r0, left - c0 : right - c0]
    return out


def accuracy(size: int, args: argparse.Namespace, rows: list, failures: list) -> None:
    from stylize.engine.tiling import stream_forward
    from stylize.network.modelfile import load_model

    generator = load_model(MODEL).generator.eval().requires_grad_(False)
    image = load_photo(args.photos, size)
    weights = torch.zeros(generator.config.num_styles)
    weights[STYLE] = 1.0
    with torch.inference_mode():
        whole = generator(image, weights)
    runs = {
        "tiled ram fp32": lambda: stream_forward(generator, image, weights, tile=args.tile, storage="ram"),
        "tiled disk fp16": lambda: stream_forward(generator, image, weights, tile=args.tile, storage="disk"),
        "naive tiles": lambda: naive_tiles(generator, image, weights, args.tile, args.halo),
    }
    results = {}
    for name, run in runs.items():
        out = run()
        diff = (out - whole).abs().mul_(255).flatten()
        mean, p999 = float(diff.mean()), float(torch.quantile(diff[:: max(1, diff.numel() // 8_000_000)], 0.999))
        results[name] = out
        ok = name.startswith("naive") or (mean <= TARGETS["mean"] and p999 <= TARGETS["p999"])
        rows.append((f"accuracy {size}", name, f"mean {mean:.3f}/255, p99.9 {p999:.3f}/255", "ok" if ok else "MISSED"))
        if not ok:
            failures.append(f"{name} at {size}")
    if size == min(args.sizes):
        save_seam_crop(whole, results["tiled disk fp16"], results["naive tiles"], size, args)


def save_seam_crop(whole: torch.Tensor, tiled: torch.Tensor, naive: torch.Tensor, size: int, args: argparse.Namespace) -> None:
    """Whole | tiled | naive, 96x96 around a point that is a tile corner in every layer (and a naive tile's corner),
    zoomed x4."""
    centre = (size // 2) // (4 * args.tile) * (4 * args.tile) or size // 2
    box = slice(centre - 48, centre + 48)
    panels = [t[0, :, box, box] for t in (whole, tiled, naive)]
    strip = torch.cat([torch.cat([p, torch.ones(3, 96, 4)], 2) for p in panels], 2)
    pixels = (strip.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels).resize((pixels.shape[1] * 4, pixels.shape[0] * 4), Image.Resampling.NEAREST)
    target = args.seam_out
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)
    print(f"seam crop (whole | tiled | naive, centre {centre},{centre}) -> {target}", flush=True)


LIMIT_SLACK = 1.15


def cli_peak_rss(photo: Path, out: Path, *flags: str) -> int:
    """Peak RSS in bytes of ``python -m stylize apply photo out --precision fp32 flags`` (its own ``ru_maxrss``)."""
    command = [sys.executable, "-m", "stylize", "apply", str(photo), str(out), "--precision", "fp32", "--overwrite", *flags]
    return int(measure(command, {**os.environ, "PYTHONPATH": str(REPO)}, sample_memory=False)["max_rss"])


def memory_limit(args: argparse.Namespace, rows: list, failures: list) -> None:
    """``--memory-limit M`` bounds the whole process: peak RSS <= (peak RSS on a 64-px photo + M) x LIMIT_SLACK."""
    from stylize.config import parse_memory_size

    with tempfile.TemporaryDirectory() as folder:
        big, small = Path(folder) / "big.jpg", Path(folder) / "small.jpg"
        photo = Image.open(sorted(args.photos.glob("*.jpg"))[0]).convert("RGB")
        photo.resize((args.limit_size, args.limit_size), Image.Resampling.BICUBIC).save(big, quality=95)
        photo.resize((64, 64), Image.Resampling.LANCZOS).save(small)
        runs = [("64 px", small, ())]
        for limit in ("256MB", "512MB", "1GB"):
            runs += [(f"{limit}", big, ("--memory-limit", limit)), (f"{limit} tile 512", big, ("--memory-limit", limit, "--tile", "512"))]
        results = {name: cli_peak_rss(source, Path(folder) / "out.png", *flags) for name, source, flags in runs}
    base = results["64 px"]
    rows.append((f"limit {args.limit_size}", "64-px photo", f"peak RSS {base / 1e9:.2f} GB", ""))
    for name, peak in results.items():
        if name == "64 px":
            continue
        limit = parse_memory_size(name.split()[0])
        bound = (base + limit) * LIMIT_SLACK
        ok = peak <= bound
        result = f"peak RSS {peak / 1e9:.2f} GB (bound {bound / 1e9:.2f} GB)"
        rows.append((f"limit {args.limit_size}", f"--memory-limit {name}", result, "ok" if ok else "MISSED"))
        if not ok:
            failures.append(f"memory limit {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="accuracy,speed,rss,big,limit", help="comma-separated: accuracy, speed, rss, big, limit")
    parser.add_argument("--limit-size", type=int, default=2048, help="side of the photo for the limit part")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="sizes for the accuracy part")
    parser.add_argument("--tile", type=int, default=512, help="tile side of the streamed and the naive tiles")
    parser.add_argument("--halo", type=int, default=32, help="margin each naive tile reads from its neighbours")
    parser.add_argument("--speed-size", type=int, default=2048, help="side of the image for the speed part")
    parser.add_argument("--rss-size", type=int, default=4096, help="side of the image for the rss part")
    parser.add_argument("--big", type=int, default=8000, help="side of the big image")
    parser.add_argument("--seam-out", type=Path, default=REPO / "docs" / "tiling_seam.png", help="where the seam crop PNG goes")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "photos")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    parts = {p.strip() for p in args.parts.split(",")}
    rows: list[tuple[str, str, str, str]] = []
    failures: list[str] = []
    torch.manual_seed(0)
    if "accuracy" in parts:
        for size in args.sizes:
            accuracy(size, args, rows, failures)
            print(rows[-3:], flush=True)
    if "speed" in parts:
        side = args.speed_size
        whole, tiled = run_worker("whole", side, args), run_worker("ram", side, args)
        disk = run_worker("disk", side, args)
        mp = side * side / 1e6
        for name, r in (("whole", whole), ("tiled ram", tiled), ("tiled disk", disk)):
            ratio = r["seconds"] / whole["seconds"]
            ok = name == "whole" or ratio <= TARGETS["speed_ratio"]
            rows.append((f"speed {side}", name, f"{r['seconds']:.1f} s, {r['seconds'] / mp:.2f} s/MP, {ratio:.2f}x whole", "ok" if ok else "MISSED"))
            if not ok:
                failures.append(f"speed {name}")
        print(rows[-3:], flush=True)
    if "rss" in parts:
        runs = {mode: run_worker(mode, args.rss_size, args) for mode in ("whole", "ram", "disk")}
        for mode, r in runs.items():
            ratio = r["peak_rss"] / runs["whole"]["peak_rss"]
            ok = mode != "disk" or ratio <= TARGETS["rss_ratio"]
            rows.append((f"peak RSS {args.rss_size}", "whole" if mode == "whole" else f"tiled {mode}",
                         f"{r['peak_rss'] / 2**30:.2f} GiB ({ratio:.0%} of whole), {r['seconds']:.1f} s", "ok" if ok else "MISSED"))
            if not ok:
                failures.append(f"rss {args.rss_size}")
        print(rows[-3:], flush=True)
    if "big" in parts:
        r = run_worker("disk", args.big, args)
        ok = r["peak_rss"] <= TARGETS["big_rss_gb"] * 1e9 and r["finite"] and r["temp_left"] == 0
        rows.append((f"{args.big}x{args.big}", "tiled disk",
                     f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB (VmHWM before the pass, model and input tensor: {r['input_rss'] / 2**30:.2f} GiB), "
                     f"{r['seconds']:.0f} s, temp files peak {r['peak_temp_bytes'] / 2**30:.2f} GiB", "ok" if ok else "MISSED"))
        if not ok:
            failures.append("big image")
    if "limit" in parts:
        memory_limit(args, rows, failures)
    print()
    print(f"| {'test':<16} | {'run':<16} | {'result':<90} | target |")
    print(f"|{'-' * 18}|{'-' * 18}|{'-' * 92}|--------|")
    for row in rows:
        print(f"| {row[0]:<16} | {row[1]:<16} | {row[2]:<90} | {row[3]:<6} |")
    if failures:
        print(f"\nMISSED: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
