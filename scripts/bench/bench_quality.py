#!/usr/bin/env python3
"""Quality per minute of CPU: a style model's perceptual loss on held-out photos relative to per-image optimisation.

For each held-out photo (never a training photo) at long side ``--size``, each contender's output is scored with the
training loss (bundled VGG16, default :class:`LossConfig`: content relu2_2 x1, style relu1_2/2_2/3_3/4_3 x5, tv
x2.5e4, painting at long side 512), and so is the result of per-image optimisation on the same loss (Gatys et al.:
``--lbfgs-steps`` L-BFGS iterations on the pixels from the photo, strong-Wolfe line search, cached in
``--cache``). Reported per contender: model loss / optimisation loss for the total and each term, as the mean over
photos of per-photo ratios (the headline: every photo weighs the same) and, for the total, the ratio of sums.
1.0 means "as good as optimising this photo"; a content ratio far above 1 means the photo is gone. And the from-noise
equivalent (Johnson et al.'s Figure 5): L-BFGS on the same loss started from uniform noise (cached), the first
evaluation whose loss is at or below the model's, per photo; the mean over photos (">N": not reached in
``--noise-evaluations``).

Contenders: model files (``--models label=path[@style]``) and training variants (``--variants``, the table
``VARIANTS``): ``python -m stylize train`` runs on the non-held-out photos, one fresh run per ``--steps`` entry (a step
count, or a time budget such as ``300s``: each run's learning-rate schedule is fitted to its own length), timed
wall-clock from process start to model file.

Held-out split: the last ``--held-out`` (8) photos of the sorted ``--photos`` folder; the others are linked into
``<out>/train-photos`` and become ``--content-dir``. Writes ``<out>/quality.json`` (every figure) and strips
``<out>/strips/<contender>/<photo>.png`` (photo | model | optimisation). Exits 1 when a ``TARGETS`` line is missed.

    python scripts/bench/bench_quality.py --photos ../shared/data/content/sun80 --variants none \\
        --models starry_night=models/starry_night.safetensors multistyle26=models/multistyle26.safetensors@19
    python scripts/bench/bench_quality.py --photos ../shared/data/content/sun80 --steps 100,300,1000
    python scripts/bench/bench_quality.py --photos ../shared/data/content/sun80 \
        --variants previous-default@500,default@time-of-previous-default@500
    python scripts/bench/bench_quality.py --photos ../shared/data/content/sun80 --quick      # smoke run, about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from quality_scoring import (  # noqa: E402
    LbfgsSettings,
    ModelContender,
    OptimisationCache,
    Scorer,
    load_photo,
    noise_equivalent,
    ratios,
    run_contender,
    save_strip,
)

from stylize.config import LossConfig  # noqa: E402
from stylize.io.resources import sha256_of  # noqa: E402
from stylize.network.modelfile import load_model  # noqa: E402
from stylize.training.data import find_photos  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """A way to make a style model from one painting. ``train_args`` are ``stylize train`` flags added to
    :data:`COMMON_TRAIN_ARGS` (``{models}`` is this repository's models/ folder); ``None``: not available yet."""

    tag: str
    description: str
    train_args: tuple[str, ...] | None
    missing: str = ""


#: The variants, by the key ``--variants`` takes. (a) and (b) wait for features the lead is adding.
VARIANTS: dict[str, Variant] = {
    "prediction": Variant("(a)", "the predicted style alone (stylize save-style), no training", ("save-style",)),
    "init-predicted": Variant("(b)", "arbitrary-style network, the painting's predicted norm rows, only they train",
                              ("--init", "predicted", "--trainable", "norms")),
    "init-predicted-all": Variant("(b all)", "arbitrary-style network from the prediction, every layer trains",
                                  ("--init", "predicted", "--trainable", "all")),
    "from26": Variant("(b')", "26-style network plus the painting, only its gamma/beta train", ("--from", "multistyle26")),
    "scratch": Variant("(c)", "from-scratch Johnson network", ("--init", "random", "--arch", "johnson")),
    "default": Variant("(d)", "`stylize train`'s default recipe (predicted start, every layer, its batch and rates)", ()),
    "previous-default": Variant("(p)", "the default recipe before time budgets (run it at 500 steps): 4 crops a step, "
                                "a constant 2.5e-4, the norm tables at the same rate, no border term",
                                ("--batch-size", "4", "--lr", "2.5e-4", "--schedule", "constant", "--norm-rate", "1",
                                 "--border-weight", "0")),
    # The default with one lever moved, for comparisons at equal time (KEY@time-of-LABEL or KEY@300s).
    "default-batch4": Variant("(d4)", "the default with 4 crops a step", ("--batch-size", "4")),
    "default-norm1": Variant("(dn)", "the default with the norm tables at the rate of the rest", ("--norm-rate", "1")),
    "default-constant": Variant("(dc)", "the default at a constant rate", ("--schedule", "constant")),
    "default-lr2.5e-4": Variant("(dl)", "the default at half its rate", ("--lr", "2.5e-4")),
    "default-unbordered": Variant("(du)", "the default without the border term", ("--border-weight", "0")),
}
#: Flags every training variant gets: fixed seed, one decoding worker (2-core host); batch and crop are each recipe's.
COMMON_TRAIN_ARGS = ("--seed", "0", "--workers", "1")
#: What --quick uses instead, so that the training path runs in seconds.
QUICK_TRAIN_ARGS = ("--batch-size", "2", "--image-size", "64", "--seed", "0", "--workers", "0")


@dataclass(frozen=True)
class Target:
    """``contender``'s ``term`` ratio (mean over photos) must be at most ``at_most``: a number, or another
    contender's ratio of the same term. Contenders are named ``<variant key>@<steps>`` or by their ``--models`` label."""

    text: str
    contender: str
    term: str
    at_most: float | str


#: The lead's targets. A target whose contenders were not scored is reported as skipped, not missed.
TARGETS: tuple[Target, ...] = (
    Target("(b) at 300 steps at least as good as (b') at 300 steps (total)", "init-predicted@300", "total", "from26@300"),
    Target("(b) at 300 steps keeps the photo: content ratio at most 2.5x", "init-predicted@300", "content", 2.5),
    Target("(b) at 1,000 steps within 1.25x of per-image optimisation (total)", "init-predicted@1000", "total", 1.25),
    Target("(d) in the time (p) takes for 500 steps at most 1.9x (total)", "default@time-of-previous-default@500", "total", 1.9),
)


def split_photos(folder: Path, held_out: int) -> tuple[list[Path], list[Path]]:
    """(training photos, held-out photos): the held-out ones are the last ``held_out`` of the sorted list."""
    photos, _ = find_photos(folder)
    if len(photos) <= held_out:
        raise SystemExit(f"{folder} has {len(photos)} photos; --held-out {held_out} leaves none to train on")
    return photos[:-held_out], photos[-held_out:]


def link_training_photos(photos: list[Path], folder: Path) -> Path:
    """A folder of symbolic links to ``photos`` only, for ``--content-dir``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for photo in photos:
        (folder / photo.name).symlink_to(photo.resolve())
    return folder


def train_variant(
    key: str, variant: Variant, painting: Path, content_dir: Path, stops: list[str], common: tuple[str, ...], folder: Path,
    earlier: dict[str, ModelContender],
) -> list[ModelContender]:
    """One fresh ``stylize train`` run per stop in ``stops``: a step count, a time budget such as ``300s`` (a run's
    learning-rate schedule is fitted to its own length, so a longer run is not a shorter one continued), or
    ``time-of-LABEL``: the wall time the ``earlier`` contender LABEL took, for a comparison at equal time.
    The "save-style" variant is one ``stylize save-style`` (the prediction alone), timed the same way."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if variant.train_args == ("save-style",):
        model = folder / "model.safetensors"
        command = [sys.executable, "-m", "stylize", "save-style", str(model), "--style-image", str(painting)]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise SystemExit(f"[{key}] stylize save-style failed ({done.returncode}):\n{done.stdout[-3000:]}")
        return [ModelContender(key, model, None, round(time.perf_counter() - started, 1), 0)]
    args = [a.replace("{models}", str(ROOT / "models")) for a in variant.train_args or ()]
    contenders = []
    for stop in stops:
        if stop.startswith("time-of-"):
            label = stop.removeprefix("time-of-")
            if label not in earlier or earlier[label].train_seconds is None:
                raise SystemExit(f"[{key}] {stop}: train {label} first (list it earlier in --variants)")
            length = ["--time", f"{earlier[label].train_seconds:.0f}s"]
        else:
            length = ["--iterations", stop] if stop.isdigit() else ["--time", stop]
        model = folder / f"{slug(stop)}.safetensors"
        command = [sys.executable, "-m", "stylize", "train", "--style", str(painting), "--content-dir", str(content_dir),
                   "--out", str(model), *length, "--checkpoint-every", "1000000", "--log", str(folder / f"{slug(stop)}.jsonl"),
                   *common, *args]  # fmt: skip
        print(f"[{key}] training for {stop}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"[{key}] stylize train failed ({done.returncode}):\n{done.stdout[-3000:]}")
        steps = int(load_model(model).training["steps"])
        contenders.append(ModelContender(f"{key}@{stop}", model, painting.stem, round(seconds, 1), steps))
        print(f"[{key}] {stop}: {steps} steps in {seconds:.0f} s (process start to model file)", flush=True)
    return contenders


def parse_model(spec: str) -> ModelContender:
    """``label=path[@style]``."""
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"--models takes label=path[@style], got {spec!r}")
    path, _, style = rest.partition("@")
    return ModelContender(label, Path(path), style or None)


def trained_on(model: Path, photos_folder: Path, held_out: list[Path]) -> list[str]:
    """Held-out photos that ``model`` was trained on, as far as its metadata tells: ``stylize train`` records its
    ``content_dir`` and ``content_photos`` (the first N of the folder's sorted photos; it holds out the last few)."""
    from stylize.network.modelfile import load_model

    training = load_model(model).training or {}
    folder, count = training.get("content_dir"), training.get("content_photos")
    if not folder or not count or not Path(folder).is_dir() or Path(folder).resolve() != photos_folder.resolve():
        return []
    seen = {path.name for path in find_photos(folder)[0][: int(count)]}
    return [path.name for path in held_out if path.name in seen]


def mean_evaluations(values: list[int | None], cap: int) -> str:
    """The mean over photos of from-noise equivalents; ">N" when a photo's run never reached the model's loss."""
    if not values:
        return "-"
    if any(value is None for value in values):
        return f">{cap}"
    return f"{statistics.fmean(values):.0f}"


def check_targets(results: dict[str, dict]) -> list[tuple[str, str]]:
    """``(status, line)`` per target; status is ok, MISSED or skipped."""
    lines = []
    for target in TARGETS:
        if target.contender not in results or (isinstance(target.at_most, str) and target.at_most not in results):
            lines.append(("skipped", f"{target.text}: not scored in this run"))
            continue
        value = results[target.contender]["ratios"][target.term]["mean"]
        if isinstance(target.at_most, str):
            bound = results[target.at_most]["ratios"][target.term]["mean"]
            name = f"{target.at_most}'s {bound:.3f}x"
        else:
            bound, name = target.at_most, f"{target.at_most}x"
        status = "ok" if value <= bound else "MISSED"
        lines.append((status, f"{target.text}: {value:.3f}x against {name}"))
    return lines


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--painting", type=Path, default=ROOT / "stylize/data/styles/starry_night.jpg")
    parser.add_argument("--photos", type=Path, required=True, help="photo folder; the last --held-out are scored")
    parser.add_argument("--held-out", type=int, default=8, help="photos scored, taken from the end of the sorted list")
    parser.add_argument("--steps", default="100,300,1000", help="training runs: step counts or time budgets (300s, 10m), comma-separated")
    parser.add_argument("--variants", default="from26,scratch", help=f"comma-separated keys of {', '.join(VARIANTS)}, or none; "
                        "KEY@STOP trains that variant to its own STOP instead of --steps (a count, a time, time-of-LABEL)")
    parser.add_argument("--models", nargs="*", default=[], metavar="LABEL=PATH[@STYLE]", help="model files to score")
    parser.add_argument("--size", type=int, default=384, help="long side of the scored photos (384: training's scale)")
    parser.add_argument("--lbfgs-steps", type=int, default=100, help="L-BFGS iterations of per-image optimisation")
    parser.add_argument("--noise-evaluations", type=int, default=120, help="L-BFGS iterations of the from-noise run (0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench/quality", help="strips, quality.json, training runs")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench/quality-cache", help="per-image optimisation cache")
    parser.add_argument("--train-args", default="", help="more `stylize train` flags for every variant, e.g. \"--lr 3e-3\" (a sweep)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, 5 L-BFGS steps, 1 photo, steps 2,4")
    args = parser.parse_args()
    for name in ("painting", "photos", "out", "cache"):  # training runs in ROOT: relative paths must not move
        setattr(args, name, getattr(args, name).resolve())

    common = COMMON_TRAIN_ARGS
    if args.quick:
        args.size, args.lbfgs_steps, args.held_out, args.steps, common = 64, 5, 1, "2,4", QUICK_TRAIN_ARGS
        args.noise_evaluations = min(args.noise_evaluations, 5)
    common = (*common, *shlex.split(args.train_args))
    stops = [s.strip() for s in args.steps.split(",") if s.strip()]
    runs: dict[str, list[str]] = {}  # variant key -> its stops, in the order given
    for entry in [] if args.variants.strip() in ("", "none") else [e.strip() for e in args.variants.split(",") if e.strip()]:
        key, _, stop = entry.partition("@")
        runs.setdefault(key, []).extend([stop] if stop else stops)
    keys = list(runs)
    for key in keys:
        if key not in VARIANTS:
            raise SystemExit(f"unknown variant {key!r}; known: {', '.join(VARIANTS)}")
        if VARIANTS[key].train_args is None:
            raise SystemExit(f"variant {key} {VARIANTS[key].tag} is not available yet: {VARIANTS[key].missing}")
    contenders = [parse_model(spec) for spec in args.models]
    if not keys and not contenders:
        raise SystemExit("nothing to score: pass --variants and/or --models")

    training_photos, held_out = split_photos(args.photos, args.held_out)
    loss_config = LossConfig()
    started = time.perf_counter()

    # 1. Training variants (their stdout stays out of the table below).
    if keys:
        content_dir = link_training_photos(training_photos, args.out / "train-photos")
        for key in keys:
            earlier = {contender.label: contender for contender in contenders}
            contenders += train_variant(key, VARIANTS[key], args.painting, content_dir, runs[key], common, args.out / "train" / key, earlier)

    # 2. Per-image optimisation of every held-out photo (cached).
    scorer = Scorer(args.painting, loss_config)
    cache = OptimisationCache(args.cache, scorer, args.size, LbfgsSettings(steps=args.lbfgs_steps))
    photos, optimised, references = [], [], []
    for path in held_out:
        photo = load_photo(path, args.size)
        image, record = cache.get(path, photo)
        photos.append(photo)
        optimised.append(image)
        references.append(record)
        source = "cached" if record["cached"] else "computed"
        print(f"optimisation {path.name} {photo.shape[3]}x{photo.shape[2]}: total {record['terms']['total']:.4g}, "
              f"{record['iterations']} iterations, {record['evaluations']} evaluations, {record['seconds']:.1f} s ({source})",
              flush=True)
    reference_terms = [record["terms"] for record in references]
    traces: list[list[float]] = []
    if args.noise_evaluations:
        noise_cache = OptimisationCache(args.cache, scorer, args.size, LbfgsSettings(steps=args.noise_evaluations), from_noise=True)
        for path, photo in zip(held_out, photos, strict=True):
            _, record = noise_cache.get(path, photo)
            traces.append(record["trace"])
            print(f"from noise {path.name}: {record['evaluations']} evaluations, last total {record['trace'][-1]:.4g} "
                  f"({'cached' if record['cached'] else 'computed'})", flush=True)

    # 3. Score the contenders.
    results: dict[str, dict] = {}
    for contender in contenders:
        outputs, apply_seconds = run_contender(contender, photos)
        model_terms = [scorer.terms(output, photo) for output, photo in zip(outputs, photos, strict=True)]
        for path, photo, output, image in zip(held_out, photos, outputs, optimised, strict=True):
            save_strip([photo, output, image], args.out / "strips" / slug(contender.label) / f"{path.stem}.png")
        results[contender.label] = {
            "path": os.path.relpath(contender.path, ROOT) if contender.path else None, "style": contender.style, "steps": contender.steps,
            "trained_on_scored_photos": trained_on(contender.path, args.photos, held_out),
            "train_seconds": contender.train_seconds, "apply_seconds_per_photo": apply_seconds,
            "terms": model_terms, "ratios": ratios(model_terms, reference_terms),
            "noise_evaluations": [noise_equivalent(trace, terms["total"]) for trace, terms in zip(traces, model_terms, strict=False)],
        }

    # 4. Report.
    threads = torch.get_num_threads()
    print(f"\npainting {args.painting.name}, {len(held_out)} held-out photos of {args.photos.name} (last by name; "
          f"{len(training_photos)} others for training), long side {args.size}, per-image optimisation "
          f"{args.lbfgs_steps} L-BFGS iterations, {cpu_name()}, {threads} threads, {date.today()}")
    seconds = [record["seconds"] for record in references]
    print(f"per-image optimisation (timed when computed, cached since): {sum(seconds) / len(seconds):.1f} s per photo (mean; "
          f"{min(seconds):.1f}-{max(seconds):.1f}), mean total {sum(t['total'] for t in reference_terms) / len(seconds):.4g}")
    print("ratios are model loss / optimisation loss, mean over photos of per-photo ratios; 'total sums' is the ratio of sums")
    width = max(22, *(len(label) for label in results))
    header = (f"{'contender':<{width}} {'train s':>8} {'apply s':>8} {'total':>7} {'total sums':>10} "
              f"{'content':>8} {'style':>7} {'tv':>7} {'noise evals':>11}")
    print(header)
    print("-" * len(header))
    for label, result in results.items():
        r = result["ratios"]
        train = f"{result['train_seconds']:.0f}" if result["train_seconds"] is not None else "-"
        print(f"{label:<{width}} {train:>8} {result['apply_seconds_per_photo']:>8.3f} {r['total']['mean']:>7.3f} "
              f"{r['total']['of_sums']:>10.3f} {r['content']['mean']:>8.3f} {r['style']['mean']:>7.3f} {r['tv']['mean']:>7.3f} "
              f"{mean_evaluations(result['noise_evaluations'], args.noise_evaluations):>11}")
    print("per-photo total ratios (* = a photo the model was trained on, by its metadata):")
    for label, result in results.items():
        seen = set(result["trained_on_scored_photos"])
        values = result["ratios"]["total"]["per_photo"]
        print(f"  {label}: " + ", ".join(f"{v:.2f}{'*' if p.name in seen else ''}" for v, p in zip(values, held_out, strict=True)))
    target_lines = check_targets(results)
    for status, line in target_lines:
        print(f"{status:<7} {line}")
    print(f"strips: {args.out / 'strips'}; wall clock {time.perf_counter() - started:.0f} s")

    report = {
        "command": " ".join(sys.argv), "date": str(date.today()), "cpu": cpu_name(), "threads": threads,
        "painting": {"name": args.painting.name, "sha256": sha256_of(args.painting)},
        "size": args.size, "lbfgs": asdict(LbfgsSettings(steps=args.lbfgs_steps)), "loss": asdict(loss_config),
        "held_out": [p.name for p in held_out], "training_photos": len(training_photos),
        "train_args": list(common), "variants": {k: asdict(VARIANTS[k]) for k in keys},
        "optimisation": references, "results": results,
        "targets": [{"status": s, "line": line} for s, line in target_lines],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(report, indent=1) + "\n")
    return 1 if any(status == "MISSED" for status, _ in target_lines) else 0


if __name__ == "__main__":
    sys.exit(main())
