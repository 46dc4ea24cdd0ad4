"""``train(config, on_step)``: fit a conditional-instance-norm generator to N styles with a VGG16 perceptual loss.

One process, or K under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on CUDA): each process takes its
slice of every global batch (see :mod:`stylize.training_data`), gradients are averaged, rank 0 logs and saves.
Nothing here prints: progress goes to ``on_step``, notices to the ``stylize.training`` logger, failures are raised
as :class:`StylizeError`.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from stylize.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from stylize.config import ARCHITECTURES, GeneratorConfig, TrainConfig
from stylize.engine import COMPILE_MODES, cpu_has_fast_bf16
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.losses import LossTerms, PerceptualLoss
from stylize.modelfile import StyleModel, load_model, save_model
from stylize.network import ConvNormAct, Generator, TransposedConvNormAct
from stylize.training_data import ContentStream, find_photos, load_crop, load_style_image
from stylize.vgg import LAYER_NAMES, load_vgg16

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


@dataclass
class Run:
    """Where this process sits in a (possibly distributed) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Run:
        # torchrun sets these; a plain `python -m stylize train` has none of them.
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def check_config(config: TrainConfig) -> None:
    """Refuse bad settings before any work starts, each with what to do instead."""
    if not config.style:
        raise StylizeError("no style image given", "pass --style IMAGE (or a bundled name such as starry_night)")
    if config.arch not in ARCHITECTURES:
        raise StylizeError(f"unknown architecture {config.arch!r}", f"use one of: {', '.join(ARCHITECTURES)}")
    if config.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise StylizeError(f"unknown precision {config.precision!r}", "use auto, fp32, bf16 or fp16")
    if config.compile not in COMPILE_MODES:
        raise StylizeError(f"unknown compile mode {config.compile!r}", f"use {', '.join(COMPILE_MODES)}")
    positive = {"iterations": config.iterations, "batch-size": config.batch_size, "checkpoint-every": config.checkpoint_every}
    positive["log-every"] = config.log_every
    for flag, value in positive.items():
        if value < 1:
            raise StylizeError(f"--{flag} must be at least 1, got {value}", f"pass a positive --{flag}")
    if config.epochs is not None and config.epochs <= 0:
        raise StylizeError(f"--epochs must be positive, got {config.epochs}", "pass a positive --epochs or use --iterations")
    if config.image_size < 32 or config.image_size % 4:
        raise StylizeError(f"--image-size must be a multiple of 4 and at least 32, got {config.image_size}", "try 256")
    if config.lr <= 0 or config.workers < 0 or config.preview_every < 0:
        raise StylizeError("--lr must be positive and --workers, --preview-every non-negative", "check the flags")
    layers = (config.loss.content_layer, *config.loss.style_layers)
    unknown = [layer for layer in layers if layer not in LAYER_NAMES]
    if unknown:
        raise StylizeError(f"unknown VGG16 layers: {', '.join(unknown)}", f"use layers among {', '.join(LAYER_NAMES)}")


def resolve_device(name: str, run: Run) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StylizeError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StylizeError("CUDA was requested but no CUDA GPU is available", "use --device cpu")
        if run.world_size > 1 and device.index is None:
            device = torch.device("cuda", run.local_rank)  # one GPU per torchrun process
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # set_device needs an index (torch 2.11)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise StylizeError(f"training on {device.type} is not supported", "use --device cpu or cuda")
    return device


def resolve_precision(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (``None`` for plain fp32)."""
    if requested == "fp32":
        return None
    if requested == "bf16":
        return torch.bfloat16
    if requested == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def default_out(config: TrainConfig, style_names: list[str]) -> Path:
    return Path(config.out) if config.out else Path(f"{'+'.join(style_names)}.safetensors")


def checkpoint_path(out: Path) -> Path:
    """The one rolling checkpoint of a run: ``<out stem>.ckpt`` next to the model file."""
    return out.with_name(out.stem + ".ckpt")


def build_generator(config: TrainConfig, style_names: list[str]) -> tuple[Generator, list[str], int]:
    """A fresh generator for the styles, or ``--from``'s model with new gamma/beta rows appended.

    Returns the generator, all style names, and the index of the first style being trained.
    """
    if config.from_model is None:
        generator = Generator(ARCHITECTURES[config.arch].with_styles(len(style_names)))
        return generator, list(style_names), 0
    base = load_model(config.from_model)
    clash = sorted(set(base.styles) & set(style_names))
    if clash:
        raise StylizeError(f"{config.from_model} already has styles named {', '.join(clash)}", "rename the style images")
    old = base.config.num_styles
    generator = Generator(base.config.with_styles(old + len(style_names)))
    state = base.generator.state_dict()
    for key, tensor in generator.state_dict().items():
        source = state[key]
        if key.endswith((".gamma", ".beta")):
            # New rows start at the mean of the existing styles: a neutral point from which each new style moves.
            source = torch.cat([source, source.mean(0, keepdim=True).expand(len(style_names), -1)])
        tensor.copy_(source)
    return generator, [*base.styles, *style_names], old


def trainable_parameters(generator: Generator, first_new_style: int) -> list[nn.Parameter]:
    """The parameters to optimise; with ``--from`` only the gamma/beta tables, the old rows' gradients zeroed.

    Conv biases directly followed by instance norm are frozen: the norm subtracts them again, so their true gradient
    is zero and what backward returns is rounding noise, which Adam would scale up to steps of size ``lr`` (and
    which differs between one process and several). Adam turns a gradient that is always exactly zero into an
    update that is exactly zero, so with ``--from`` the old styles stay bit-identical.
    """
    for module in generator.modules():
        if isinstance(module, ConvNormAct | TransposedConvNormAct) and module.norm is not None and module.conv.bias is not None:
            module.conv.bias.requires_grad_(False)
    if first_new_style == 0:
        return [parameter for parameter in generator.parameters() if parameter.requires_grad]
    tables = []
    for name, parameter in generator.named_parameters():
        if name.endswith((".gamma", ".beta")):
            mask = torch.zeros_like(parameter)
            mask[first_new_style:] = 1.0
            parameter.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))
            tables.append(parameter)
        else:
            parameter.requires_grad_(False)
    return tables


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


def train(config: TrainConfig, on_step: Callable[[TrainProgress], None] | None = None) -> Path:
    """Train and save a style model; returns the model file's path (see module docstring)."""
    check_config(config)
    run = Run.from_env()
    device = resolve_device(config.device, run)
    if run.world_size > 1 and not dist.is_initialized():
        if config.batch_size % run.world_size:
            raise StylizeError(
                f"--batch-size {config.batch_size} does not split over {run.world_size} processes",
                "pass a multiple of the process count",
            )
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:
            return _train(config, on_step, run, device)
        finally:
            dist.destroy_process_group()
    return _train(config, on_step, run, device)


def _train(config: TrainConfig, on_step: Callable[[TrainProgress], None] | None, run: Run, device: torch.device) -> Path:
    styles = [load_style_image(spec, config.loss.style_size) for spec in config.style]
    new_names = [name for name, _ in styles]
    if len(set(new_names)) != len(new_names):
        raise StylizeError(f"two style images have the same name: {', '.join(new_names)}", "rename one of the files")
    photos, skipped = find_photos(config.content_dir)
    if run.is_main:
        if config.content_dir is None:
            log.warning("no --content-dir: training on 6 bundled photos; a real model wants thousands (e.g. COCO)")
        if skipped:
            log.warning("skipped %d unreadable image files in %s", skipped, config.content_dir)
    held_out_count = min(MAX_HELD_OUT, len(photos) // 20)
    held_out = photos[len(photos) - held_out_count :] if held_out_count else photos[:3]
    photos = photos[: len(photos) - held_out_count]

    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    generator, style_names, first_new = build_generator(config, new_names)
    num_styles = len(style_names)
    out = default_out(config, new_names if config.from_model is None else style_names)
    ckpt_path = checkpoint_path(out)
    if run.is_main:
        _remove_stale_temporaries(out, ckpt_path)
    generator.to(device=device, memory_format=torch.channels_last)
    parameters = trainable_parameters(generator, first_new)

    vgg = load_vgg16(config.loss_net, config.vgg_weights).to(device=device, memory_format=torch.channels_last)
    loss_fn = PerceptualLoss(vgg, config.loss)
    loss_fn.set_styles([image.to(device) for _, image in styles])  # fp32 targets, once per style

    autocast_dtype = resolve_precision(config.precision, device)
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    total_steps = config.iterations
    if config.epochs is not None:
        total_steps = max(1, math.ceil(config.epochs * len(photos) / config.batch_size))

    start_step = 0
    resume_path = _resume_path(config.resume, ckpt_path)
    if resume_path is not None:
        start_step = _restore(resume_path, generator, optimizer, scaler, style_names, config)
        if run.is_main:
            log.info("resumed from %s at step %d", resume_path, start_step)

    model: nn.Module = generator
    if run.world_size > 1:
        model = nn.parallel.DistributedDataParallel(generator, device_ids=[device.index] if device.type == "cuda" else None)
    if _should_compile(config.compile, total_steps - start_step, run, device):
        # Only the training step runs compiled: previews and the saved weights use `generator` itself.
        model = torch.compile(model, dynamic=False)
        loss_fn.vgg = torch.compile(loss_fn.vgg, dynamic=False)
        if run.is_main:
            log.info("compiling generator and loss network (about a minute before the first step)")

    stream = ContentStream(
        photos, config.image_size, config.batch_size, len(new_names), config.seed, first_new, run.rank, run.world_size
    )
    batches = _batches(stream, start_step, total_steps, config.workers, device)
    settings = {
        **config.to_dict(),
        "precision_used": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "float32",
        "world_size": run.world_size,
        "device_type": device.type,
        "content_photos": len(photos),
    }

    def checkpoint(step: int) -> Path:
        state = {
            "generator": generator.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_states(),
            "step": step,
            "data_position": step * config.batch_size,  # global samples consumed (see training_data)
            "styles": style_names,
            "generator_config": generator.config.to_dict(),
            "train_config": json.dumps(settings),
        }
        return save_checkpoint(state, ckpt_path)

    log_file = Path(config.log).open("a") if (config.log and run.is_main) else None
    step = start_step
    started = time.perf_counter()
    window_start, window_steps = started, 0
    last_terms: dict[str, float] = {}
    try:
        generator.train()
        for images, style_index in batches:
            terms = compute_losses(model, loss_fn, images, style_index, num_styles, first_new, autocast_dtype)
            values = torch.stack([terms.content, terms.style, terms.tv]).detach().float()
            if run.world_size > 1:
                dist.all_reduce(values)  # every rank sees the same losses, so all stop together on NaN
                values /= run.world_size
            content, style, tv = values.tolist()
            if not all(math.isfinite(v) for v in (content, style, tv)):
                kept = "no checkpoint"
                if ckpt_path.exists():
                    kept = f"the last good checkpoint {ckpt_path} (step {_checkpoint_step(ckpt_path)})"
                raise StylizeError(
                    f"loss became {content + style + tv} at step {step + 1}; stopped, keeping {kept}",
                    "lower --lr, use --precision fp32, or check the style and content images; then --resume auto",
                    exit_code=EXIT_FAILURE,
                )
            apply_gradients(terms, optimizer, scaler)
            step += 1
            window_steps += 1
            last_terms = {"content": content, "style": style, "tv": tv}

            saved = preview = None
            if run.is_main and (step % config.checkpoint_every == 0 or step == total_steps):
                saved = checkpoint(step)
            if run.is_main and config.preview_every and step % config.preview_every == 0:
                preview = save_preview(
                    generator, held_out, num_styles, config.image_size, ckpt_path.with_name(f"{out.stem}.preview-{step:06d}.png")
                )
            now = time.perf_counter()
            speed = window_steps * config.batch_size / max(now - window_start, 1e-9)
            if step % config.log_every == 0 or step == total_steps:
                if log_file is not None:
                    record = {"step": step, **last_terms, "total": content + style + tv, "images_per_s": round(speed, 3)}
                    log_file.write(json.dumps({**record, "elapsed_s": round(now - started, 3)}) + "\n")
                    log_file.flush()
                window_start, window_steps = now, 0
            if on_step is not None and run.is_main:
                on_step(TrainProgress(step, total_steps, content, style, tv, speed, now - started, saved, preview))
    except KeyboardInterrupt:
        if run.is_main:
            saved = checkpoint(step)
            raise StylizeError(
                f"interrupted at step {step} of {total_steps}; checkpoint saved to {saved}",
                "continue with the same command plus --resume auto",
                exit_code=EXIT_INTERRUPTED,
            ) from None
        raise
    finally:
        if log_file is not None:
            log_file.close()

    if run.is_main:
        final = Generator(generator.config)
        final.load_state_dict({k: v.detach().float().cpu().contiguous() for k, v in generator.state_dict().items()})
        model_file = StyleModel(
            generator=final,
            styles=style_names,
            provenance={"trained_with": "stylize train", "styles": list(config.style)},
            training={**settings, "steps": step, "final_losses": last_terms},
            precision=inference_precision(final, held_out, device),
            default_style=style_names[0],
        )
        save_model(model_file, out)
    if run.world_size > 1:
        dist.barrier()  # the other ranks return only once the file exists
    return out


#: ``compile="auto"`` compiles only runs with at least this many steps to go (the compile costs about a minute).
COMPILE_MIN_STEPS = 500


def _should_compile(mode: str, steps_left: int, run: Run, device: torch.device) -> bool:
    """``auto``: single-process CUDA runs of :data:`COMPILE_MIN_STEPS` steps or more. Not on the CPU: there the eager
    step (channels-last norms and pads, see network.py) measured faster than the compiled one, 1.13 against 1.34 s
    (Johnson, batch 4, 256 px, 2-core AMD CPU: scripts/bench_train.py --compile). On CUDA the step is launch-bound
    (22-26 ms, docs/gpu.md), which compiling addresses; DDP plus compile was not measured, so it is not automatic."""
    if mode == "never":
        return False
    if mode == "always":
        return True
    return device.type == "cuda" and steps_left >= COMPILE_MIN_STEPS and run.world_size == 1


def inference_precision(generator: Generator, photos: list[Path], device: torch.device) -> dict[str, str]:
    """What ``--precision auto`` will use on this device type: the fastest precision within tolerance of fp32 on
    held-out photos (at most 512 px), measured now because whether bf16/fp16 is safe depends on the trained weights."""
    from PIL import Image

    from stylize.imaging import image_to_tensor
    from stylize.precision import candidate_precisions, choose_precision

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
            images.append(image_to_tensor(image))
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


def _remove_stale_temporaries(out: Path, ckpt_path: Path) -> None:
    """Delete the temporary files a killed run of this model left: a half-written checkpoint or model file.

    Only names derived from ``out`` are touched (see :func:`stylize.checkpoint.save_checkpoint` and
    :func:`stylize.imaging.write_atomic`), so other files in the folder are safe.
    """
    from stylize.imaging import remove_stale_temporaries_of

    remove_stale_temporaries_of(out)
    for path in out.parent.glob(f".{glob.escape(ckpt_path.name)}.*.tmp"):
        path.unlink(missing_ok=True)


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
            "resume with the same --style, --arch and --from, or start afresh without --resume",
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
