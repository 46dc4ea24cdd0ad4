#!/usr/bin/env python3
"""The CUDA checks of the speed, batch, tiling and training issues, in one run on a GPU machine.

Parts (``--parts``, comma-separated; all by default):

- ``apply`` (eager) and ``compiled`` (last: about a minute per compile): the Johnson network (random weights) and the
  bundled 26-style network at 1024x1024 on the GPU, for the plain ``nn.Module`` (fp32, and fp16 autocast: what most
  tools run) and our engine in fp32, fp16 and bf16, with and without channels_last, eager and compiled (CUDA graphs).
  Time per image is the median of CUDA-event timings. The floor is max(FLOPs / bf16 matmul rate, bytes / copy
  bandwidth), both rates measured in this run: FLOPs counted by torch's FlopCounterMode, bytes = every conv's input
  read once and output written once in 16-bit (norms, pads and ReLUs fused away: the least traffic any implementation
  needs). Target (speed issue): the Johnson network at 1024x1024 within 3x of its floor.
- ``precision``: ``choose_precision`` on CUDA for the bundled models on real photos (``--photos``).
- ``folder``: ``stylize apply DIR OUT --device cuda`` on ``--folder``, two rounds, each in a fresh process.
- ``train``: ``scripts/bench/bench_train.py --device cuda`` (ours versus plain fp32, batch 4, 256x256).
- ``tiling``: ``Stylizer.apply(tensor, tile="auto")`` at 4096 and 8192 px with the whole card, and at 8192 px with
  the process capped to 2 GiB of GPU memory (whole pass out of memory, so it must stream): none may fail.

    python scripts/bench/bench_cuda.py --photos PHOTOS_DIR --folder FOLDER --out results.json

Exits 1 when the Johnson target is missed or any tiling run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.api import Stylizer  # noqa: E402
from stylize.config import ARCHITECTURES  # noqa: E402
from stylize.engine.fastpath import PreparedGenerator  # noqa: E402
from stylize.engine.routing import Engine  # noqa: E402
from stylize.io.catalog import find_model  # noqa: E402
from stylize.network.generator import Generator  # noqa: E402
from stylize.network.modelfile import load_model  # noqa: E402

CUDA = torch.device("cuda")
FLOOR_TARGET = 3.0


def cuda_time(function, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``function()`` by CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1000)
    return statistics.median(times)


def cudnn_benchmark(enabled: bool):
    """cuDNN's autotuner on or off, the other flags as they are (the fp32 engine has turned TF32 off by then)."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=enabled, deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32)


def ceilings() -> dict[str, float]:
    size = 8192
    a = torch.randn(size, size, device=CUDA, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=CUDA, dtype=torch.bfloat16)
    matmul = cuda_time(lambda: torch.mm(a, b), repeats=10)
    block = torch.empty(2**30, device=CUDA, dtype=torch.uint8)
    copy = cuda_time(lambda: block.clone(), repeats=10)
    return {"bf16_matmul_flops": 2 * size**3 / matmul, "copy_bytes_per_s": 2 * 2**30 / copy}


def floor_of(generator: Generator, images: torch.Tensor, weights: torch.Tensor, rates: dict[str, float]) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    traffic = [0]

    def count(module, inputs, output) -> None:
        traffic[0] += 2 * (inputs[0].numel() + output.numel())

    hooks = [m.register_forward_hook(count) for m in generator.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        generator(images, weights)
    for hook in hooks:
        hook.remove()
    flops = counter.get_total_flops()
    compute = flops / rates["bf16_matmul_flops"]
    memory = traffic[0] / rates["copy_bytes_per_s"]
    return {"flops": flops, "bytes": traffic[0], "compute_s": compute, "memory_s": memory, "floor_s": max(compute, memory)}


def apply_part(rates: dict[str, float], size: int, compiled: bool) -> tuple[list[dict], bool]:
    """Eager variants, or (``compiled``) only the compiled ones: each compile takes about a minute, so they run last."""
    torch.manual_seed(0)
    networks = {
        "johnson": (Generator(ARCHITECTURES["johnson"]), torch.ones(1)),
        "multistyle26": (load_model(find_model("multistyle26")).generator, torch.eye(26)[19]),
    }
    images = torch.rand(1, 3, size, size, device=CUDA)
    rows, met = [], True
    for name, (generator, weights) in networks.items():
        generator = generator.to(CUDA).eval()
        weights = weights.to(CUDA)
        floor = floor_of(generator, images, weights, rates)
        variants = {}

        def plain(dtype=None, generator=generator, weights=weights):
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                return generator(images, weights)

        if not compiled:
            variants["plain nn.Module fp32"] = plain
            variants["plain nn.Module fp16 autocast"] = lambda: plain(torch.float16)
        eager = [("fp32", False, "no-rewrite"), ("fp16", False, "no-rewrite"), ("fp16", False, "never"), ("bf16", True, "no-rewrite"),
                 ("fp16", True, "no-rewrite"), ("fp16", False, "benchmark")]  # fmt: skip
        for precision, channels_last, compile_mode in [("fp16", False, "always")] if compiled else eager:
            engine = Engine(generator, CUDA, precision, compile="always" if compile_mode == "always" else "never")
            dtype, rewrite = engine.prepared.dtype, compile_mode == "never"  # the engine's CUDA default: no rewrites
            engine._prepared = PreparedGenerator(engine.generator, dtype, channels_last=channels_last, rewrite=rewrite).to(CUDA)

            def ours(engine=engine, weights=weights, benchmark=compile_mode == "benchmark"):
                # The engine's whole-image pass without its copy of the result to the CPU (Engine.run_whole adds it).
                with torch.inference_mode(), engine._conv_precision(), cudnn_benchmark(benchmark):
                    return engine._run_prepared(images, weights, None)  # None: each image's own norm statistics

            extra = {"always": " compiled+graphs", "benchmark": " cudnn.benchmark", "never": " sub-pixel rewrites"}.get(compile_mode, "")
            label = f"ours {precision}{' channels_last' if channels_last else ''}{extra}"
            variants[label] = ours
        for label, function in variants.items():
            started = time.perf_counter()
            try:
                seconds = cuda_time(function)
                error = None
            except Exception as exc:  # noqa: BLE001 - a variant that cannot run (e.g. no compiler) is reported, not fatal
                seconds, error = float("nan"), f"{type(exc).__name__}: {str(exc)[:200]}"
            row = {"network": name, "variant": label, "size": size, "ms": seconds * 1000, "x_floor": seconds / floor["floor_s"],
                   "tflops": floor["flops"] / seconds / 1e12, "setup_s": time.perf_counter() - started, "error": error}  # fmt: skip
            rows.append(row)
        print(f"\n{name} {size}x{size}: {floor['flops'] / 1e9:.0f} GFLOP, {floor['bytes'] / 1e9:.2f} GB conv traffic (16-bit); "
              f"floor {floor['floor_s'] * 1000:.3f} ms (compute {floor['compute_s'] * 1000:.3f}, memory {floor['memory_s'] * 1000:.3f})")  # fmt: skip
        print(f"{'variant':<40} {'ms':>8} {'x floor':>8} {'TFLOP/s':>8}")
        for row in rows:
            if row["network"] == name:
                note = f"  {row['error']}" if row["error"] else ""
                print(f"{row['variant']:<40} {row['ms']:>8.3f} {row['x_floor']:>8.2f} {row['tflops']:>8.1f}{note}")
        if name == "johnson" and not compiled:
            best = min((r for r in rows if r["network"] == name and r["variant"].startswith("ours") and r["error"] is None), key=lambda r: r["ms"])
            met = best["x_floor"] <= FLOOR_TARGET
            print(f"johnson best: {best['variant']} at {best['x_floor']:.2f}x floor (target {FLOOR_TARGET}x: {'met' if met else 'MISSED'})")
        generator.cpu()
        torch.cuda.empty_cache()
    return rows, met


def precision_part(photos: Path) -> list[dict]:
    from PIL import Image

    from stylize.engine.precision import choose_precision
    from stylize.io.decoding import pixels_of, to_float

    paths = sorted(p for p in photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:3]
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        image.thumbnail((512, 512))
        images.append(to_float(pixels_of(image)))  # (3, H, W) in [0, 1]
    rows = []
    print(f"\nprecision on CUDA ({len(images)} photos from {photos}, ~512 px)")
    for name in ("multistyle26", "starry_night"):
        model = load_model(find_model(name))
        choice = choose_precision(model.generator, images, device=CUDA)
        print(f"{name}: {choice.summary()}")
        rows.append({"model": name, "chosen": choice.precision, "summary": choice.summary()})
    return rows


def folder_part(folder: Path, rounds: int = 2) -> list[dict]:
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    count = sum(1 for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    print(f"\nfolder on CUDA: {count} photos in {folder}, fresh process per run")
    print(f"{'round':>5} {'wall s':>8} {'img/s (wall)':>13} {'img/s (in run)':>15}")
    for round_ in range(rounds):
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"stylize-bench-folder-{round_}"
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "stylize", "apply", str(folder), str(out), "--device", "cuda", "--json", "--overwrite"],
            env=env, capture_output=True, timeout=300,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if result.returncode:
            print(f"failed: {result.stderr.decode()[-500:]}")
            rows.append({"round": round_, "error": result.stderr.decode()[-500:]})
            continue
        summary = json.loads(result.stdout.decode().strip().splitlines()[-1])  # --json prints the summary last
        rows.append({"round": round_, "wall_s": wall, "summary": summary})
        rate = summary["images_per_second"]
        print(f"{round_:>5} {wall:>8.2f} {summary['done'] / wall:>13.2f} {rate:>15.2f}")
    return rows


def train_part() -> dict:
    command = [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--device", "cuda", "--steps", "10", "--rounds", "2", "--target", "1"]
    result = subprocess.run(command, capture_output=True, timeout=300, text=True)
    print("\n" + result.stdout + result.stderr[-2000:])
    return {"returncode": result.returncode, "stdout": result.stdout}


def tiling_part() -> tuple[list[dict], bool]:
    stylizer = Stylizer.load(device="cuda", compile="never")
    total = torch.cuda.get_device_properties(0).total_memory
    rows, ok = [], True
    print(f"\ntiling on CUDA ({stylizer.name}, {stylizer.precision}), --tile auto")
    print(f"{'size':>6} {'GPU cap':>9} {'seconds':>8} {'peak GPU GiB':>13} {'result':>8}")
    for side, cap in [(4096, None), (8192, None), (8192, 2 * 2**30)]:
        image = torch.rand(1, 3, side, side)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        if cap:
            torch.cuda.set_per_process_memory_fraction(cap / total)
        started = time.perf_counter()
        try:
            out = stylizer.apply(image, tile="auto")
            result = "ok" if out.shape == image.shape and bool(torch.isfinite(out).all()) else "bad"
        except Exception as exc:  # noqa: BLE001 - the point is to report any failure
            result = f"FAILED {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**30
        ok = ok and result == "ok"
        rows.append({"side": side, "cap_bytes": cap, "seconds": seconds, "peak_gpu_gib": peak, "result": result})
        print(f"{side:>6} {('%.0f GiB' % (cap / 2**30)) if cap else 'none':>9} {seconds:>8.2f} {peak:>13.2f} {result:>8}")
    return rows, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="apply,precision,train,tiling,folder,compiled")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "content" / "sun80")
    parser.add_argument("--out", type=Path, help="write every measurement as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    parts = set(args.parts.split(","))
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}
    rates = ceilings()
    results["ceilings"] = rates
    print(f"{results['device']}, torch {torch.__version__}, cuDNN {results['cudnn']}: bf16 matmul "
          f"{rates['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s, copy {rates['copy_bytes_per_s'] / 1e12:.2f} TB/s")  # fmt: skip
    status = 0

    def save() -> None:
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))

    for part in ["apply", "precision", "train", "tiling", "folder", "compiled"]:
        if part not in parts:
            continue
        started = time.perf_counter()
        try:
            if part == "apply":
                results["apply"], met = apply_part(rates, args.size, compiled=False)
                status |= 0 if met else 1
            elif part == "compiled":
                results["compiled"], _ = apply_part(rates, args.size, compiled=True)
            elif part == "precision":
                results["precision"] = precision_part(args.photos)
            elif part == "folder":
                results["folder"] = folder_part(args.folder)
            elif part == "train":
                results["train"] = train_part()
            elif part == "tiling":
                results["tiling"], ok = tiling_part()
                status |= 0 if ok else 1
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others' numbers
            import traceback

            traceback.print_exc()
            results[part] = {"error": f"{type(exc).__name__}: {exc}"}
            status = 1
        print(f"[{part}: {time.perf_counter() - started:.0f} s]", flush=True)
        save()
    return status


if __name__ == "__main__":
    sys.exit(main())
