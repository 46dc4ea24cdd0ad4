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

from stylize.config import GeneratorConfig, TrainConfig
from stylize.devices import autocast_dtype
from stylize.distributed import Launch
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.io import remove_stale_temporaries_of
from stylize.network import Generator, StyleModel, save_model
from stylize.training.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from stylize.training.data import ContentStream, find_photos, load_crop, load_style_image
from stylize.training.losses import LossTerms, PerceptualLoss
from stylize.training.setup import (
    build_generator,
    check_config,
    checkpoint_path,
    default_out,
    recipe,
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
    total_steps: int
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
) -> LossTerms:
    """Forward pass of one training step: stylize ``images`` ``(b, 3, S, S)`` with their styles ``(b,)``, score them."""
    style_weights = F.one_hot(style_index, num_styles).float()  # (b, S)
    enabled = autocast_dtype is not None
    with torch.autocast(images.device.type, dtype=autocast_dtype or torch.float32, enabled=enabled):
        output = model(images, style_weights)
        return loss_fn(output, images, style_index - first_new_style)  # the loss holds only the styles being trained


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
    check_config(config)
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
                return _train(config, on_step, launch, device)
            finally:
                dist.destroy_process_group()
        return _train(config, on_step, launch, device)
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
    total_steps: int
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
        }
        return save_checkpoint(state, self.checkpoint)


def _train(config: TrainConfig, on_step: Callable[[TrainProgress], None] | None, launch: Launch, device: torch.device) -> Path:
    run = _prepare(config, launch, device)
    step, last_terms = _loop(run, on_step)
    if launch.is_main:
        _save(run, step, last_terms)
    if launch.world_size > 1:
        dist.barrier()  # the other ranks return only once the file exists
    return run.out


def _prepare(config: TrainConfig, launch: Launch, device: torch.device) -> _Run:
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
    start, trainable, iterations, lr = recipe(config)
    generator.to(device=device, memory_format=torch.channels_last)
    parameters = trainable_parameters(generator, first_new, norms_only=trainable == "norms")

    vgg = load_vgg16(config.loss_net, config.vgg_weights).to(device=device, memory_format=torch.channels_last)
    loss_fn = PerceptualLoss(vgg, config.loss)
    loss_fn.set_styles([image.to(device) for _, image in styles])  # fp32 targets, once per style

    autocast = autocast_dtype(config.precision, device)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    total_steps = iterations
    if config.epochs is not None:
        total_steps = max(1, math.ceil(config.epochs * len(photos) / config.batch_size))

    start_step = 0
    resume_path = _resume_path(config.resume, ckpt_path)
    if resume_path is not None:
        start_step = _restore(resume_path, generator, optimizer, scaler, style_names, config)
        if launch.is_main:
            log.info("resumed from %s at step %d", resume_path, start_step)

    model: nn.Module = generator
    if launch.world_size > 1:
        model = nn.parallel.DistributedDataParallel(generator, device_ids=[device.index] if device.type == "cuda" else None)
    if should_compile(config.compile, total_steps - start_step, launch, device):
        # Only the training step runs compiled: previews and the saved weights use `generator` itself.
        model = torch.compile(model, dynamic=False)
        loss_fn.vgg = torch.compile(loss_fn.vgg, dynamic=False)
        if launch.is_main:
            log.info("compiling generator and loss network (about a minute before the first step)")
    settings = {
        **config.to_dict(),
        "start": start,
        "trainable": trainable,
        "iterations": iterations,
        "lr": lr,
        "style": [Path(spec).name for spec in config.style],  # names, never this machine's paths
        "precision_used": str(autocast).removeprefix("torch.") if autocast else "float32",
        "world_size": launch.world_size,
        "device_type": device.type,
        "content_photos": len(photos),
    }
    for key in ("content_dir", "out", "log", "resume", "from_model", "vgg_weights"):
        if settings.get(key):
            settings[key] = Path(settings[key]).name
    return _Run(config, launch, device, generator, style_names, first_new, held_out, photos, out, ckpt_path, loss_fn, autocast,
                optimizer, scaler, total_steps, start_step, model, settings)  # fmt: skip


def _loop(run: _Run, on_step: Callable[[TrainProgress], None] | None) -> tuple[int, dict[str, float]]:
    """The optimiser steps from ``run.start_step`` to ``run.total_steps``; returns the last step and its loss terms."""
    config, launch = run.config, run.launch
    stream = ContentStream(
        run.photos, config.image_size, config.batch_size, run.num_styles - run.first_new, config.seed, run.first_new,
        launch.rank, launch.world_size,
    )  # fmt: skip
    if launch.is_main:
        seconds = _step_seconds(run, stream) if launch.world_size == 1 and run.start_step < run.total_steps else None
        log.info("%s", plan_text(run, seconds))
    batches = _batches(stream, run.start_step, run.total_steps, config.workers, run.device)
    log_file = Path(config.log).open("a") if (config.log and launch.is_main) else None
    step = run.start_step
    started = time.perf_counter()
    window_start, window_steps = started, 0
    last_terms: dict[str, float] = {}
    try:
        run.generator.train()
        for images, style_index in batches:
            terms = compute_losses(run.model, run.loss_fn, images, style_index, run.num_styles, run.first_new, run.autocast)
            content, style, tv = _reduced_terms(terms, launch)
            if not all(math.isfinite(v) for v in (content, style, tv)):
                raise _not_finite(run, content + style + tv, step + 1)
            apply_gradients(terms, run.optimizer, run.scaler)
            step += 1
            window_steps += 1
            last_terms = {"content": content, "style": style, "tv": tv}
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
                    record = {"step": step, **last_terms, "total": content + style + tv, "images_per_s": round(speed, 3)}
                    log_file.write(json.dumps({**record, "elapsed_s": round(now - started, 3)}) + "\n")
                    log_file.flush()
                window_start, window_steps = now, 0
            if on_step is not None and launch.is_main:
                on_step(TrainProgress(step, run.total_steps, content, style, tv, speed, now - started, saved, preview))
    except KeyboardInterrupt:
        if launch.is_main:
            saved = run.save_checkpoint(step)
            raise StylizeError(
                f"interrupted at step {step} of {run.total_steps}; checkpoint saved to {saved}",
                "continue with the same command plus `resume=auto`",
                exit_code=EXIT_INTERRUPTED
            ) from None
        raise
    finally:
        if log_file is not None:
            log_file.close()
    return step, last_terms


def plan_text(run: _Run, step_seconds: float | None) -> str:
    """One line saying what the run will do, and how long it should take here."""
    plan = recipe(run.config)
    begin = {"predicted": "the predicted style", "random": "random weights", "from": f"{Path(run.config.from_model or '').name}"}[plan.start]
    steps = run.total_steps - run.start_step
    text = (
        f"plan: {steps} steps of {run.config.batch_size} crops of {run.config.image_size} px from {len(run.photos)} photos, "
        f"starting from {begin}, training {'the norm parameters' if plan.trainable == 'norms' else 'every layer'}"
    )
    if step_seconds is not None:
        text += f"; about {_duration(steps * step_seconds)} on this machine ({step_seconds:.2f} s a step)"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _step_seconds(run: _Run, stream: ContentStream) -> float:
    """Seconds one step takes, from a timed forward and backward pass on the run's first batch (the second of two: the
    first pays for kernel set-up). Nothing is updated: the gradients are dropped, and the data position is untouched."""
    images, style_index = stream[run.start_step]
    images = images.to(run.device).contiguous(memory_format=torch.channels_last)
    style_index = style_index.to(run.device)
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        terms = compute_losses(run.model, run.loss_fn, images, style_index, run.num_styles, run.first_new, run.autocast)
        run.scaler.scale(terms.total).backward()
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        seconds = time.perf_counter() - started
        run.optimizer.zero_grad(set_to_none=True)
    return seconds


def _reduced_terms(terms: LossTerms, launch: Launch) -> tuple[float, float, float]:
    """The step's loss terms as floats, averaged over processes (every rank sees the same, so all stop together on NaN)."""
    values = torch.stack([terms.content, terms.style, terms.tv]).detach().float()
    if launch.world_size > 1:
        dist.all_reduce(values)
        values /= launch.world_size
    content, style, tv = values.tolist()
    return content, style, tv


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
    final.load_state_dict({k: v.detach().float().cpu().contiguous() for k, v in run.generator.state_dict().items()})
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
    style_names: list[str],
    config: TrainConfig,
) -> int:
    """Load a checkpoint into the run's objects; returns the number of finished steps."""
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
    generator.load_state_dict(state["generator"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_states(state["rng"])
    return int(state["step"])
