"""Load test: stylize a generated folder of small images and check that memory stays flat.

    python scripts/bench/load_test.py                     # in-process: Stylizer.apply_file per image (default 2,000 images)
    python scripts/bench/load_test.py --cli-folder        # one `stylize apply DIR OUTDIR` subprocess (needs folder mode)
    python scripts/bench/load_test.py --count 300 --size 48x32 --model multistyle26

Memory is the resident set size (VmRSS in /proc/PID/status). The growth from the 100th image to the last must stay
under --max-growth-mb (default 100, issue 6), and every image must be written; the script prints a table and exits 1 on
a miss. In --cli-folder mode the CLI runs in a subprocess and progress is the number of files in OUTDIR, sampled
every 0.1 s; the "from the 100th image" baseline is the first sample with at least 100 outputs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

FORMATS = (".jpg", ".png", ".webp")


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size of process ``pid`` in MB, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def generate(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` small noisy pictures, cycling through JPEG, PNG and WebP, with sizes varied by a few pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        width, height = size[0] + index % 5, size[1] + index % 3
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = folder / f"img{index:05d}{FORMATS[index % len(FORMATS)]}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def run_in_process(paths: list[Path], out: Path, model: str | None, every: int) -> tuple[dict[int, float], int]:
    """Stylize each file with one Stylizer; return ({image number: RSS MB}, failures)."""
    from stylize.api import Stylizer
    from stylize.errors import StylizeError

    stylizer = Stylizer.load(model, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    samples: dict[int, float] = {0: rss_mb() or 0.0}
    failures = 0
    for number, path in enumerate(paths, 1):
        try:
            stylizer.apply_file(path, out / (path.stem + ".png"))
        except StylizeError as error:
            failures += 1
            print(f"failed: {error.one_line()}", file=sys.stderr)
        if number % every == 0 or number in (1, 100, len(paths)):
            samples[number] = rss_mb() or 0.0
    return samples, failures


def count_outputs(folder: Path) -> int:
    """Finished outputs in ``folder``: temporary files (``.NAME.RANDOM.stylize-tmp``) start with a dot."""
    try:
        return sum(1 for entry in os.scandir(folder) if not entry.name.startswith("."))
    except FileNotFoundError:
        return 0


def run_cli_folder(source: Path, out: Path, model: str | None, expected: int, timeout: float) -> tuple[dict[int, float], int]:
    """Run ``stylize apply SOURCE OUT`` in a subprocess and sample its RSS against the number of files written."""
    command = [sys.executable, "-m", "stylize", "apply", str(source), str(out)] + (["--model", model] if model else [])
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # stderr goes to a file, not a pipe: the CLI logs a line per file, and an unread pipe would fill up and block it.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    samples: dict[int, float] = {}
    started = time.monotonic()
    while process.poll() is None:
        rss = rss_mb(process.pid)
        done = count_outputs(out)
        if rss is not None:
            samples[done] = max(rss, samples.get(done, 0.0))  # peak RSS seen while `done` files existed
        if time.monotonic() - started > timeout:
            process.kill()
            print(f"timed out after {timeout:.0f} s", file=sys.stderr)
            break
        time.sleep(0.1)
    process.wait()
    log.seek(0)
    stderr = log.read().decode(errors="replace")
    if process.returncode:
        print(f"stylize exited {process.returncode}: {stderr.strip()[-2000:]}", file=sys.stderr)
    written = count_outputs(out)
    return samples, expected - written + (1 if process.returncode else 0)


def report(samples: dict[int, float], failures: int, total: int, seconds: float, max_growth: float, subprocess_run: bool) -> bool:
    """Print the table and the verdict; True when memory stayed flat and every image was written."""
    numbers = sorted(samples)
    baseline_at = next((n for n in numbers if n >= 100), None)
    print(f"{'images done':>12} {'RSS MB':>9}")
    shown = [n for n in numbers if n in (0, 1, 100, numbers[-1]) or n % max(1, total // 10) == 0]
    for number in shown:
        print(f"{number:>12} {samples[number]:>9.1f}")
    if baseline_at is None:
        print("FAIL: fewer than 100 images were processed")
        return False
    baseline = samples[baseline_at]
    # Once every file exists the process only prints its summary and exits; a subprocess's RSS sometimes jumps there
    # (129 MB in 1 run of 12, after the last file), which says nothing about growth per image: reported apart.
    running = [n for n in numbers if n >= baseline_at and (n < total or not subprocess_run)] or [numbers[-1]]
    peak_after = max(samples[n] for n in running)
    growth = peak_after - baseline
    final = samples[running[-1]]
    print(f"\n{total} images in {seconds:.1f} s ({total / seconds:.1f} images/s), failures: {failures}")
    print(f"RSS at image {baseline_at}: {baseline:.1f} MB; at image {running[-1]}: {final:.1f} MB; peak in between: {peak_after:.1f} MB")
    if numbers[-1] == total and running[-1] != total:
        print(f"after the last file (summary and exit): {samples[total]:.1f} MB")
    print(f"growth from image {baseline_at} to the last image (peak): {growth:.1f} MB (limit {max_growth:.0f} MB)")
    ok = growth < max_growth and failures == 0
    print("PASS" if ok else "FAIL")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="number of images to generate (default 2000)")
    parser.add_argument("--size", default="48x32", help="base image size WxH (default 48x32)")
    parser.add_argument("--model", default=None, help="model name or file (default: the bundled model)")
    parser.add_argument("--cli-folder", action="store_true", help="run `stylize apply DIR OUTDIR` in a subprocess instead")
    parser.add_argument("--max-growth-mb", type=float, default=100.0, help="allowed RSS growth after image 100 (default 100)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds (--cli-folder)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the images (default: a temporary folder)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="stylize-load-") as temporary:
        work = args.work or Path(temporary)
        source, out = work / "in", work / "out"
        print(f"generating {args.count} images of about {width}x{height} in {source} ...", flush=True)
        paths = generate(source, args.count, (width, height))
        started = time.perf_counter()
        if args.cli_folder:
            samples, failures = run_cli_folder(source, out, args.model, len(paths), args.timeout)
        else:
            samples, failures = run_in_process(paths, out, args.model, every=max(1, args.count // 100))
        seconds = time.perf_counter() - started
        mode = "stylize apply DIR OUTDIR (subprocess)" if args.cli_folder else "Stylizer.apply_file per image (in-process)"
        print(f"\nmode: {mode}")
        return 0 if report(samples, failures, len(paths), seconds, args.max_growth_mb, args.cli_folder) else 1


if __name__ == "__main__":
    sys.exit(main())
