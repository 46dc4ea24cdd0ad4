"""``train(config, on_step)``: fit a conditional-instance-norm generator to N styles with a VGG16 perceptual loss.

One process, or K under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on CUDA): each process takes its
slice of every global batch (see :mod:`stylize.training.data`), gradients are averaged, rank 0 logs and saves.
Nothing here prints: progress goes to ``on_step`` (or a ``tqdm.auto`` bar with ``progress=True``), notices to the
``stylize.training.loop`` logger, failures are raised as :class:`StylizeError`.

A run is three steps: :func:`_prepare` (styles, photos, network, loss, optimiser, resume), :func:`_loop` (the
optimiser steps, checkpoints, previews, log) and :func:`_save` (the model file with its inference precision). Where
it starts and what trains is :mod:`stylize.training.setup`. This module is one run's life cycle, resume included,
which is why it runs past 400 lines.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from stylize.config import WARMUP_STEPS, GeneratorConfig, TrainConfig
from stylize.devices import autocast_dtype
from stylize.distributed import Launch
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.io import remove_stale_temporaries_of
from stylize.network import Generator, StyleModel, save_model
from stylize.training.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from stylize.training.data import ContentStream, find_photos, load_crop, load_style_image
from stylize.training.losses import BORDER_MARGIN, LossTerms, PerceptualLoss, border_loss
from stylize.training.schedule import UNTIMED_STEPS, WeightAverage, learning_rate_factor, plan_steps
from stylize.training.setup import (
    build_generator,
    check_config,
    checkpoint_path,
    default_out,
    recipe,
    resolved,
    should_compile,
    trainable_parameters,
    training_device,
)
from stylize.training.vgg import load_vgg16

log = logging.getLogger(__name__)

#: Exit code after Ctrl-C, as shells use for SIGINT.
EXIT_INTERRUPTED = 130
#: Held-out photos for previews: at most this many, and only when the set has 20 photos per held-out one.
MAX_HELD_OUT = 4


@dataclass
class TrainProgress:
    """What ``on_step`` receives after every optimiser step (losses are the weighted terms, averaged over processes)."""

    step: int
    total_steps: int | None  # None while a time budget is not planned yet (the first steps)
    content: float
    style: float
    tv: float
    images_per_second: float
    elapsed_s: float
    checkpoint: Path | None = None
    preview: Path | None = None

    @property
    def total(self) -> float:
        return self.content + self.style + self.tv


def compute_losses(
    model: nn.Module,
    loss_fn: PerceptualLoss,
    images: torch.Tensor,
    style_index: torch.Tensor,
    num_styles: int,
    first_new_style: int,
    autocast_dtype: torch.dtype | None,
    border_margin: int = 0,
) -> LossTerms:
    """Forward pass of one training step: stylize ``images`` ``(b, 3, S, S)`` with their styles ``(b,)``, score them.

    With ``border_margin`` m the images are views m pixels wider on every side than the crops that are stylized and
    scored, and the border term compares each crop's output with the network's own output on its view, cut to the
    crop (no gradient flows through the view's pass)."""
    style_weights = F.one_hot(style_index, num_styles).float()  # (b, S)
    crops = images[..., border_margin:-border_margin, border_margin:-border_margin] if border_margin else images
    enabled = autocast_dtype is not None
    with torch.autocast(images.device.type, dtype=autocast_dtype or torch.float32, enabled=enabled):
        output = model(crops, style_weights)
        terms = loss_fn(output, crops, style_index - first_new_style)  # the loss holds only the styles being trained
        if border_margin:
            with torch.no_grad():
                wider = model(images, style_weights)[..., border_margin:-border_margin, border_margin:-border_margin]
            terms.border = border_loss(output, wider) * loss_fn.config.border_weight
    return terms


def apply_gradients(terms: LossTerms, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward pass and optimiser step (the scaler is a no-op unless training in fp16)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms.total).backward()
    scaler.step(optimizer)
    scaler.update()


def save_preview(generator: Generator, photos: list[Path], num_styles: int, size: int, path: Path) -> Path:
    """A grid PNG: one row per photo, columns the photo and each style."""
    from PIL import Image

    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    rows = []
    with torch.no_grad():
        for photo in photos:
            image = load_crop(photo, size, None).unsqueeze(0).to(device)  # (1, 3, S, S)
            styled = [generator(image, F.one_hot(torch.tensor([s]), num_styles).float().to(device)) for s in range(num_styles)]
            rows.append(torch.cat([image, *styled], dim=3))  # (1, 3, S, (S+1)*S)
    generator.train(was_training)
    grid = torch.cat(rows, dim=2)[0].float().clamp(0, 1)  # (3, rows*S, cols*S)
    pixels = grid.mul(255).round().byte().permute(1, 2, 0).contiguous().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def train(config: TrainConfig, on_step: Callable[[TrainProgress], None] | None = None, progress: bool = False) -> Path:
    """Train and save a style model; returns the model file's path (see the module docstring).

    ``on_step`` receives a :class:`TrainProgress` after every step; ``progress=True`` draws a ``tqdm.auto`` bar instead.
    """
    started = time.perf_counter()  # a time budget counts from here: set-up and saving are part of the run
    check_config(config)
    config = resolved(config)
    launch = Launch.from_env()
    device = training_device(config.device, launch)
    bar = None
    if progress and on_step is None and launch.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(unit="step", desc="train")
        on_step = _tqdm_step(bar)
    try:
        if launch.world_size > 1 and not dist.is_initialized():
            if config.batch_size % launch.world_size:
                raise StylizeError(
                    f"`batch_size` {config.batch_size} does not split over {launch.world_size} processes",
                    "pass a multiple of the process count"
                )
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            try:
                return _train(config, on_step, launch, device, started)
            finally:
                dist.destroy_process_group()
        return _train(config, on_step, launch, device, started)
    finally:
        if bar is not None:
            bar.close()


def _tqdm_step(bar: Any) -> Callable[[TrainProgress], None]:
    def on_step(info: TrainProgress) -> None:
        bar.total = info.total_steps
        bar.n = info.step
        bar.set_postfix(content=f"{info.content:.3g}", style=f"{info.style:.3g}", tv=f"{info.tv:.3g}", refresh=False)
        bar.refresh()

    return on_step


@dataclass
class _Run:
    """Everything one training run holds between :func:`_prepare`, :func:`_loop` and :func:`_save`."""

    config: TrainConfig
    launch: Launch
    device: torch.device
    generator: Generator
    style_names: list[str]
    first_new: int  # index of the first style being trained (non-zero with from_model)
    held_out: list[Path]
    photos: list[Path]
    out: Path
    checkpoint: Path
    loss_fn: PerceptualLoss
    autocast: torch.dtype | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    total_steps: int | None  # None until a time budget is turned into steps (after the first steps are timed)
    budget: float | None  # seconds, while the steps are not planned yet
    started: float  # time.perf_counter() when train() was called
    lr: float  # the base rate; each step's is learning_rate_factor of it
    schedule: str
    average: WeightAverage | None
    start_step: int
    model: nn.Module  # the generator as the step runs it: DDP-wrapped and/or compiled
    settings: dict[str, Any] = field(default_factory=dict)  # recorded in checkpoints and the model file

    @property
    def num_styles(self) -> int:
        return len(self.style_names)

    def save_checkpoint(self, step: int) -> Path:
        state = {
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(),
            "step": step,
            "data_position": step * self.config.batch_size,  # global samples consumed (see training_data)
            "styles": self.style_names,
            "generator_config": self.generator.config.to_dict(),
            "train_config": json.dumps(self.settings),
            "average": None if self.average is None else self.average.state_dict(),
        }
        return save_checkpoint(state, self.checkpoint)


def _train(
    config: TrainConfig, on_step: Callable[[TrainProgress], None] | None, launch: Launch, device: torch.device, started: float
) -> Path:
    run = _prepare(config, launch, device, started)
    step, last_terms = _loop(run, on_step)
    if launch.is_main:
        _save(run, step, last_terms)
    if launch.world_size > 1:
        dist.barrier()  # the other ranks return only once the file exists
    return run.out


def _prepare(config: TrainConfig, launch: Launch, device: torch.device, started: float) -> _Run:
    """Styles, photos, network, loss, optimiser and (with resume) the restored state of a run."""
    styles = [load_style_image(spec, config.loss.style_size) for spec in config.style]
    new_names = [name for name, _ in styles]
    if len(set(new_names)) != len(new_names):
        raise StylizeError(f"two style images have the same name: {', '.join(new_names)}", "rename one of the files")
    photos, skipped = find_photos(config.content_dir)
    if launch.is_main:
        if config.content_dir is None:
            log.warning("no content_dir: training on 6 bundled photos; a real model wants thousands (e.g. COCO)")
        if skipped:
            log.warning("skipped %d unreadable image files in %s", skipped, config.content_dir)
    held_out_count = min(MAX_HELD_OUT, len(photos) // 20)
    held_out = photos[len(photos) - held_out_count :] if held_out_count else photos[:3]
    photos = photos[: len(photos) - held_out_count]

    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    generator, style_names, first_new = build_generator(config, new_names)
    out = default_out(config, new_names if config.from_model is None else style_names)
    ckpt_path = checkpoint_path(out)
    if launch.is_main:  # what a killed run of this model left: a half-written checkpoint or model file
        remove_stale_temporaries_of(out)
        remove_stale_temporaries_of(ckpt_path)
    plan = recipe(config)
    generator.to(device=device, memory_format=torch.channels_last)
    parameters = trainable_parameters(generator, first_new, norms_only=plan.trainable == "norms")

    vgg = load_vgg16(config.loss_net, config.vgg_weights).to(device=device, memory_format=torch.channels_last)
    loss_fn = PerceptualLoss(vgg, config.loss)
    loss_fn.set_styles([image.to(device) for _, image in styles])  # fp32 targets, once per style

    autocast = autocast_dtype(config.precision, device)
    tables = {id(table) for name, table in generator.named_parameters() if name.endswith((".gamma", ".beta"))}
    groups = [  # each group's "rate" is its multiple of the scheduled rate
        {"params": [q for q in parameters if id(q) not in tables], "rate": 1.0},
        {"params": [q for q in parameters if id(q) in tables], "rate": plan.norm_rate},
    ]
    optimizer = torch.optim.Adam([group for group in groups if group["params"]], lr=plan.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    average = WeightAverage(generator, config.ema) if config.ema else None
    total_steps = plan.iterations
    if config.epochs is not None:
        total_steps = max(1, math.ceil(config.epochs * len(photos) / config.batch_size))

    start_step = 0
    resume_path = _resume_path(config.resume, ckpt_path)
    if resume_path is not None:
        start_step, planned = _restore(resume_path, generator, optimizer, scaler, average, style_names, config)
        if plan.seconds is not None and planned is not None:
            total_steps = planned  # the count the interrupted run planned from its budget: the resumed run ends as it would have
        if launch.is_main:
            log.info("resumed from %s at step %d", resume_path, start_step)

    model: nn.Module = generator
    if launch.world_size > 1:
        model = nn.parallel.DistributedDataParallel(generator, device_ids=[device.index] if device.type == "cuda" else None)
    # A budget's steps are not known yet: it runs eagerly (a compile would spend the budget before it is measured).
    if total_steps is not None and should_compile(config.compile, total_steps - start_step, launch, device):
        # Only the training step runs compiled: previews and the saved weights use `generator` itself.
        model = torch.compile(model, dynamic=False)
        loss_fn.vgg = torch.compile(loss_fn.vgg, dynamic=False)
        if launch.is_main:
            log.info("compiling generator and loss network (about a minute before the first step)")
    settings = {
        **config.to_dict(),
        "start": plan.start,
        "trainable": plan.trainable,
        "iterations": total_steps,  # a budget's count is filled in once planned
        "time_budget_s": plan.seconds,
        "lr": plan.lr,
        "norm_rate": plan.norm_rate,
        "schedule": plan.schedule,
        "warmup_steps": WARMUP_STEPS if plan.schedule == "cosine" else 0,
        "style": [Path(spec).name for spec in config.style],  # names, never this machine's paths
        "precision_used": str(autocast).removeprefix("torch.") if autocast else "float32",
        "world_size": launch.world_size,
        "device_type": device.type,
        "content_photos": len(photos),
    }
    for key in ("content_dir", "out", "log", "resume", "from_model", "vgg_weights"):
        if settings.get(key):
            settings[key] = Path(settings[key]).name
    return _Run(
        config=config, launch=launch, device=device, generator=generator, style_names=style_names, first_new=first_new,
        held_out=held_out, photos=photos, out=out, checkpoint=ckpt_path, loss_fn=loss_fn, autocast=autocast, optimizer=optimizer,
        scaler=scaler, total_steps=total_steps, budget=plan.seconds if total_steps is None else None, started=started,
        lr=plan.lr, schedule=plan.schedule, average=average, start_step=start_step, model=model, settings=settings,
    )


def _loop(run: _Run, on_step: Callable[[TrainProgress], None] | None) -> tuple[int, dict[str, float]]:
    """The optimiser steps from ``run.start_step`` to ``run.total_steps`` (planned from the budget on the way when there
    is one); returns the last step and its loss terms."""
    config, launch = run.config, run.launch
    margin = BORDER_MARGIN if config.loss.border_weight else 0
    stream = ContentStream(
        run.photos, config.image_size + 2 * margin, config.batch_size, run.num_styles - run.first_new, config.seed,
        run.first_new, launch.rank, launch.world_size,
    )  # fmt: skip
    if launch.is_main:
        log.info("%s", plan_text(run, None))
    # A budget's run reads batches until it has planned its count: the data position is the step either way.
    stop = run.total_steps if run.total_steps is not None else run.start_step + 2**40
    batches = _batches(stream, run.start_step, stop, config.workers, run.device)
    log_file = Path(config.log).open("a") if (config.log and launch.is_main) else None
    step = run.start_step
    started = time.perf_counter()
    window_start, window_steps = started, 0
    timer = _StepTimer(run.start_step)
    last_terms: dict[str, float] = {}
    try:
        run.generator.train()
        for images, style_index in batches:
            if run.total_steps is not None and step >= run.total_steps:
                break
            for group in run.optimizer.param_groups:
                group["lr"] = run.lr * group["rate"] * learning_rate_factor(step, run.total_steps, run.schedule)
            terms = compute_losses(
                run.model, run.loss_fn, images, style_index, run.num_styles, run.first_new, run.autocast, margin
            )
            content, style, tv, border = _reduced_terms(terms, launch)
            if not all(math.isfinite(v) for v in (content, style, tv, border)):
                raise _not_finite(run, content + style + tv + border, step + 1)
            apply_gradients(terms, run.optimizer, run.scaler)
            if run.average is not None:
                run.average.update(run.generator)
            step += 1
            window_steps += 1
            timer.stepped(step, run.device)
            if run.total_steps is None and step >= run.start_step + min(WARMUP_STEPS, UNTIMED_STEPS + 10):
                _plan_from_budget(run, step, timer.seconds())
            last_terms = {"content": content, "style": style, "tv": tv, "border": border}
            saved = preview = None
            if launch.is_main and (step % config.checkpoint_every == 0 or step == run.total_steps):
                saved = run.save_checkpoint(step)
            if launch.is_main and config.preview_every and step % config.preview_every == 0:
                path = run.checkpoint.with_name(f"{run.out.stem}.preview-{step:06d}.png")
                preview = save_preview(run.generator, run.held_out, run.num_styles, config.image_size, path)
            now = time.perf_counter()
            speed = window_steps * config.batch_size / max(now - window_start, 1e-9)
            if step % config.log_every == 0 or step == run.total_steps:
                if log_file is not None:
                    record = {"step": step, **last_terms, "total": content + style + tv + border, "images_per_s": round(speed, 3)}
                    log_file.write(json.dumps({**record, "elapsed_s": round(now - started, 3)}) + "\n")
                    log_file.flush()
                window_start, window_steps = now, 0
            if on_step is not None and launch.is_main:
                on_step(TrainProgress(step, run.total_steps, content, style, tv, speed, now - started, saved, preview))
            if step == run.total_steps:
                break
    except KeyboardInterrupt:
        if launch.is_main:
            saved = run.save_checkpoint(step)
            raise StylizeError(
                f"interrupted at step {step} of {run.total_steps or 'a budget not yet planned'}; checkpoint saved to {saved}",
                "continue with the same command plus `resume=auto`",
                exit_code=EXIT_INTERRUPTED
            ) from None
        raise
    finally:
        if log_file is not None:
            log_file.close()
    return step, last_terms


class _StepTimer:
    """Seconds per optimiser step over the steps after the first :data:`UNTIMED_STEPS` of this process."""

    def __init__(self, first_step: int) -> None:
        self.first_timed = first_step + UNTIMED_STEPS
        self.start: float | None = None
        self.steps = 0
        self.last = 0.0

    def stepped(self, step: int, device: torch.device) -> None:
        if step < self.first_timed:
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # time the work, not its queueing
        self.last = time.perf_counter()
        if self.start is None:
            self.start = self.last
        else:
            self.steps += 1

    def seconds(self) -> float | None:
        return (self.last - self.start) / self.steps if self.start is not None and self.steps else None


def _plan_from_budget(run: _Run, step: int, step_seconds: float | None) -> None:
    """Fix the run's step count from its budget and the measured step time (every process takes rank 0's plan)."""
    assert run.budget is not None and step_seconds is not None
    planned = torch.tensor([plan_steps(step, time.perf_counter() - run.started, step_seconds, run.budget)])
    if run.launch.world_size > 1:
        dist.broadcast(planned, src=0)
    run.total_steps = int(planned.item())
    run.settings.update(iterations=run.total_steps, step_seconds=round(step_seconds, 4))
    if run.launch.is_main:
        log.info("%s", plan_text(run, step_seconds))


def plan_text(run: _Run, step_seconds: float | None) -> str:
    """One line saying what the run will do; with a measured ``step_seconds``, how many steps and how long here."""
    plan = recipe(run.config)
    begin = {"predicted": "the predicted style", "random": "random weights", "from": f"{Path(run.config.from_model or '').name}"}[plan.start]
    what = (
        f"{run.config.batch_size} crops of {run.config.image_size} px from {len(run.photos)} photos, starting from {begin}, "
        f"training {'the norm parameters' if plan.trainable == 'norms' else 'every layer'}, {plan.schedule} rate from {plan.lr:g}"
        + (f" (norm tables x{plan.norm_rate:g})" if plan.norm_rate != 1 and plan.trainable == "all" else "")
    )
    if run.total_steps is None:
        return f"plan: {_duration(run.budget or 0)} budget of {what}; timing the first steps"
    steps = run.total_steps - run.start_step
    budget = f"{_duration(run.settings['time_budget_s'])} budget: " if run.settings.get("time_budget_s") else ""
    text = f"plan: {budget}{steps} steps of {what}"
    if step_seconds is not None:
        text += f"; about {_duration(steps * step_seconds)} of steps on this machine ({step_seconds:.2f} s a step)"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _reduced_terms(terms: LossTerms, launch: Launch) -> tuple[float, float, float, float]:
    """The step's loss terms (content, style, tv, border) as floats, averaged over processes (every rank sees the same,
    so all stop together on NaN)."""
    values = torch.stack([terms.content, terms.style, terms.tv, torch.as_tensor(terms.border, device=terms.content.device)]).detach().float()
    if launch.world_size > 1:
        dist.all_reduce(values)
        values /= launch.world_size
    content, style, tv, border = values.tolist()
    return content, style, tv, border


def _not_finite(run: _Run, total: float, step: int) -> StylizeError:
    kept = "no checkpoint"
    if run.checkpoint.exists():
        kept = f"the last good checkpoint {run.checkpoint} (step {_checkpoint_step(run.checkpoint)})"
    return StylizeError(
        f"loss became {total} at step {step}; stopped, keeping {kept}",
        "lower `lr`, use `precision=fp32`, or check the style and content images; then `resume=auto`",
        exit_code=EXIT_FAILURE
    )


def _save(run: _Run, step: int, last_terms: dict[str, float]) -> None:
    """The model file: the trained weights, style names, provenance (names and hashes, no paths) and precision."""
    from stylize.io import sha256_of
    from stylize.training.data import resolve_style

    final = Generator(run.generator.config)
    weights = run.generator.state_dict() if run.average is None else run.average.weights(run.generator)
    final.load_state_dict({k: v.detach().float().cpu().contiguous() for k, v in weights.items()})
    paintings = [{"name": resolve_style(spec).stem, "sha256": sha256_of(resolve_style(spec))} for spec in run.config.style]
    model_file = StyleModel(
        generator=final,
        styles=run.style_names,
        provenance={"trained_with": "stylize train", "styles": paintings},
        training={**run.settings, "steps": step, "final_losses": last_terms},
        precision=inference_precision(final, run.held_out, run.device),
        default_style=run.style_names[run.first_new],  # with from_model: the first style this run added
    )
    save_model(model_file, run.out)


def inference_precision(generator: Generator, photos: list[Path], device: torch.device) -> dict[str, str]:
    """What ``--precision auto`` will use on this device type: the fastest precision within tolerance of fp32 on
    held-out photos (at most 512 px), measured now because whether bf16/fp16 is safe depends on the trained weights."""
    from PIL import Image

    from stylize.engine import candidate_precisions, choose_precision
    from stylize.io import pixels_of, to_float

    if not candidate_precisions(device):
        return {device.type: "fp32"}
    images = []
    for path in photos[:3]:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((512, 512))
        except OSError:
            continue
        if min(image.size) >= 32:  # a sliver says nothing about rounding error, and under 8 px the network refuses it
            images.append(to_float(pixels_of(image)))
    if not images:
        return {}
    try:
        choice = choose_precision(copy.deepcopy(generator), images, device=device)
    except (RuntimeError, ValueError) as exc:  # e.g. out of memory: never lose a finished run over this measurement
        log.warning("could not measure the inference precision (%s); the model will run in fp32", exc)
        return {}
    log.info("inference precision on %s: %s", device.type, choice.summary())
    return {device.type: choice.precision}


def _batches(
    stream: ContentStream, start: int, stop: int, workers: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        sampler=range(start, stop),  # steps, in order: the data position is the step
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_limit_worker_threads if workers else None,
        persistent_workers=False,
    )
    for images, styles in loader:
        yield images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), styles.to(device)


def _limit_worker_threads(_worker_id: int) -> None:
    # Decoding is single-threaded PIL work; torch's intra-op threads in workers would only fight the training process.
    torch.set_num_threads(1)


def _resume_path(resume: str | None, ckpt_path: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        return ckpt_path if ckpt_path.is_file() else None
    return Path(resume)


def _checkpoint_step(path: Path) -> int | str:
    try:
        return int(load_checkpoint(path)["step"])
    except StylizeError:
        return "unknown"


def _restore(
    path: Path,
    generator: Generator,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    average: WeightAverage | None,
    style_names: list[str],
    config: TrainConfig,
) -> tuple[int, int | None]:
    """Load a checkpoint into the run's objects; returns the number of finished steps and the run's step count (None
    when its budget was not planned yet)."""
    state = load_checkpoint(path)
    if state["styles"] != style_names or GeneratorConfig.from_dict(state["generator_config"]) != generator.config:
        raise StylizeError(
            f"{path.name} belongs to another run (styles {', '.join(state['styles'])}, other network)",
            "resume with the same `style`, `arch` and `from_model`, or start afresh without `resume`",
        )
    saved: dict[str, Any] = json.loads(state["train_config"])
    changed = [key for key in ("seed", "batch_size", "image_size") if saved.get(key) != getattr(config, key)]
    if changed:
        log.warning("resuming with a different %s: the run will not match an uninterrupted one", ", ".join(changed))
    if (average is None) != (state.get("average") is None):
        raise StylizeError(f"{path.name} was saved {'with' if average is None else 'without'} a weight average", "resume with the same `ema`")
    generator.load_state_dict(state["generator"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if average is not None:
        average.load_state_dict(state["average"])
    set_rng_states(state["rng"])
    planned = saved.get("iterations")
    return int(state["step"]), None if planned is None else int(planned)
