"""How a training run starts: its settings checked, its recipe, the network it starts from, what trains.

- :func:`recipe`: where the network starts ("predicted", "random", or "from" a model) and the defaults of that start:
  what trains, for how long (a step count or a time budget), at which rate and schedule;
- :func:`build_generator`: fresh weights, the arbitrary-style network with each painting's predicted norm rows, or an
  existing model with new rows appended;
- :func:`trainable_parameters`: all, or only the norm tables (and then only the new rows).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from stylize.config import ARCHITECTURES, INITS, LEARNING_RATE, SCHEDULES, TRAIN_RECIPES, TrainConfig
from stylize.devices import PRECISIONS, resolve_device
from stylize.distributed import Launch
from stylize.engine import COMPILE_MODES
from stylize.errors import StylizeError
from stylize.io import find_model
from stylize.network import ConvNormAct, Generator, load_model
from stylize.training.vgg import LAYER_NAMES

#: The arbitrary-style network that init "predicted" starts from.
ARBITRARY_MODEL = "arbitrary"


def check_config(config: TrainConfig) -> None:
    """Refuse bad settings before any work starts, each with what to do instead."""
    if not config.style:
        raise StylizeError("no `style` image given", "pass `style=IMAGE` (or a bundled name such as starry_night)")
    if config.arch not in ARCHITECTURES:
        raise StylizeError(f"unknown architecture {config.arch!r}", f"use `arch` {', '.join(ARCHITECTURES)}")
    if config.init not in INITS:
        raise StylizeError(f"unknown init {config.init!r}", f"use `init` {', '.join(INITS)}")
    if config.trainable not in (None, "norms", "all"):
        raise StylizeError(f"unknown trainable {config.trainable!r}", "use `trainable` norms or all")
    if config.precision not in PRECISIONS:
        raise StylizeError(f"unknown precision {config.precision!r}", f"use `precision` {', '.join(PRECISIONS)}")
    if config.compile not in COMPILE_MODES:
        raise StylizeError(f"unknown compile mode {config.compile!r}", f"use `compile` {', '.join(COMPILE_MODES)}")
    if config.time is not None and (config.iterations is not None or config.epochs is not None):
        raise StylizeError("give a time budget or a step count (`iterations`, `epochs`), not both", "drop `time` or `iterations`")
    if config.schedule not in (None, *SCHEDULES):
        raise StylizeError(f"unknown schedule {config.schedule!r}", f"use `schedule` {', '.join(SCHEDULES)}")
    if not 0.0 <= config.ema < 1.0:
        raise StylizeError(f"`ema` must be at least 0 and below 1, got {config.ema}", "e.g. `ema=0.995`, or 0 for none")
    plan = recipe(config)
    positive = {"iterations": plan.iterations or 1, "batch_size": plan.batch_size, "checkpoint_every": config.checkpoint_every}
    positive["log_every"] = config.log_every
    for name, value in positive.items():
        if value < 1:
            raise StylizeError(f"{name} must be at least 1, got {value}", f"pass a positive {name}")
    if config.epochs is not None and config.epochs <= 0:
        raise StylizeError(
            f"`epochs` must be positive, got {config.epochs}", "pass a positive `epochs` or use `iterations`"
        )
    if config.image_size < 32 or config.image_size % 4:
        raise StylizeError(f"`image_size` must be a multiple of 4 and at least 32, got {config.image_size}", "try 256")
    for name, value in (("lr", plan.lr), ("norm_rate", plan.norm_rate), ("workers", config.workers + 1), ("preview_every", config.preview_every + 1)):
        if value <= 0:
            raise StylizeError(f"{name} must be {'positive' if name == 'lr' else 'zero or more'}", f"check {name}")
    layers = (config.loss.content_layer, *config.loss.style_layers)
    unknown = [layer for layer in layers if layer not in LAYER_NAMES]
    if unknown:
        raise StylizeError(f"unknown VGG16 layers: {', '.join(unknown)}", f"use layers among {', '.join(LAYER_NAMES)}")


def training_device(name: str, launch: Launch) -> torch.device:
    """The device to train on: :func:`stylize.devices.resolve_device` (one GPU per torchrun process), CPU or CUDA only."""
    device = resolve_device(name, launch.local_rank)
    if device.type not in ("cpu", "cuda"):
        raise StylizeError(f"training on {device.type} is not supported", "use `device=cpu` or `device=cuda`")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def default_out(config: TrainConfig, style_names: list[str]) -> Path:
    return Path(config.out) if config.out else Path(f"{'+'.join(style_names)}.safetensors")


def checkpoint_path(out: Path) -> Path:
    """The one rolling checkpoint of a run: ``<out stem>.ckpt`` next to the model file."""
    return out.with_name(out.stem + ".ckpt")


class Recipe(NamedTuple):
    """What a run does: ``start`` is "from" (a from_model given), "predicted" or "random"; ``trainable`` "all" or
    "norms"; the optimiser steps, or None when a time budget of ``seconds`` plans them; Adam's learning rate, its
    schedule, the crops a step, the norm tables' multiple of the rate and the border term's weight."""

    start: str
    trainable: str
    iterations: int | None
    lr: float
    seconds: float | None
    schedule: str
    batch_size: int
    norm_rate: float
    border_weight: float


def recipe(config: TrainConfig) -> Recipe:
    """The run's :class:`Recipe`: unset fields take that start's recipe (:data:`stylize.config.TRAIN_RECIPES`).
    ``iterations`` or ``epochs`` replace a time budget; ``time`` replaces a fixed step count. A ``trainable`` other than
    the start's own trains at :data:`~stylize.config.LEARNING_RATE`, all tables at that rate, as it was measured."""
    start = "from" if config.from_model is not None else config.init
    own = TRAIN_RECIPES[start]
    iterations, seconds = own.iterations, own.seconds
    if seconds is not None:
        seconds *= max(1, len(config.style))
    if config.time is not None:
        iterations, seconds = None, parse_duration(config.time)
    if config.iterations is not None or config.epochs is not None:
        iterations, seconds = config.iterations, None  # epochs: the loop counts the steps from the photos
    trainable = config.trainable or own.trainable
    kept = trainable == own.trainable
    lr = config.lr if config.lr is not None else (own.lr if kept else LEARNING_RATE)
    norm_rate = config.norm_rate if config.norm_rate is not None else (own.norm_rate if kept else 1.0)
    schedule = config.schedule or own.schedule
    border_weight = config.loss.border_weight if config.loss.border_weight is not None else own.border_weight
    batch_size = config.batch_size or own.batch_size
    return Recipe(start, trainable, iterations, lr, seconds, schedule, batch_size, norm_rate, border_weight)


def resolved(config: TrainConfig) -> TrainConfig:
    """``config`` with the recipe's batch size and border weight filled in: what the run, its checkpoints and its model
    file record."""
    own = recipe(config)
    loss = dataclasses.replace(config.loss, border_weight=own.border_weight)
    return dataclasses.replace(config, batch_size=own.batch_size, loss=loss)


def parse_duration(text: str) -> float:
    """``"10m"``, ``"90s"``, ``"1.5h"`` or plain seconds (``"600"``) -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise StylizeError(f"`time` must be a duration such as 10m, 90s or 1.5h, got {text!r}", "e.g. `time=10m`") from None
    if not 0 < seconds < float("inf"):
        raise StylizeError(f"`time` must be positive, got {text!r}", "e.g. `time=10m`")
    return seconds


def build_generator(config: TrainConfig, style_names: list[str]) -> tuple[Generator, list[str], int]:
    """The generator a run starts from: fresh weights, the arbitrary-style network with each painting's predicted norm
    rows, or ``from_model`` with new rows appended. Returns it, all style names, and the index of the first new style.
    """
    start = recipe(config).start
    if start == "random":
        generator = Generator(ARCHITECTURES[config.arch].with_styles(len(style_names)))
        return generator, list(style_names), 0
    if start == "predicted":
        return predicted_generator(config.style), list(style_names), 0
    base = load_model(find_model(config.from_model))  # a path or a model name ("multistyle26")
    if base.embedding_size:
        raise StylizeError(f"{config.from_model} is an arbitrary-style network; styles cannot be added to it", "use another `from_model`")
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


def predicted_generator(paintings: tuple[str, ...]) -> Generator:
    """The bundled arbitrary-style network with one norm-table row per painting, its predicted style (Ghiasi et al.)."""
    from stylize.io import bundled_path
    from stylize.network import load_predictor, style_code
    from stylize.styles import PREDICTOR_FILE, PaintingEmbedder, generator_for_codes
    from stylize.training.data import resolve_style

    arbitrary = load_model(find_model(ARBITRARY_MODEL))
    embedder = PaintingEmbedder(load_predictor(bundled_path(PREDICTOR_FILE)), torch.device("cpu"))
    codes = torch.stack([style_code(embedder.painting(str(resolve_style(spec)))) for spec in paintings])
    return generator_for_codes(arbitrary, codes)


def trainable_parameters(generator: Generator, first_new_style: int, norms_only: bool = False) -> list[nn.Parameter]:
    """The parameters to optimise: all, or with ``norms_only`` the gamma/beta tables; with ``from_model`` only the new
    rows of the tables (the old rows' gradients zeroed).

    Conv biases directly followed by instance norm are frozen: the norm subtracts them again, so their true gradient
    is zero and what backward returns is rounding noise, which Adam would scale up to steps of size ``lr`` (and
    which differs between one process and several). Adam turns a gradient that is always exactly zero into an
    update that is exactly zero, so with ``--from`` the old styles stay bit-identical.
    """
    for module in generator.modules():
        if isinstance(module, ConvNormAct) and module.norm is not None and module.conv.bias is not None:
            module.conv.bias.requires_grad_(False)
    if first_new_style == 0 and not norms_only:
        return [parameter for parameter in generator.parameters() if parameter.requires_grad]
    tables = []
    for name, parameter in generator.named_parameters():
        if name.endswith((".gamma", ".beta")):
            mask = torch.zeros_like(parameter)
            mask[first_new_style:] = 1.0
            if first_new_style:
                parameter.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))
            tables.append(parameter)
        else:
            parameter.requires_grad_(False)
    return tables


#: ``compile="auto"`` compiles only runs with at least this many steps to go (the compile costs about a minute).
COMPILE_MIN_STEPS = 500


def should_compile(mode: str, steps_left: int, launch: Launch, device: torch.device) -> bool:
    """``auto``: single-process CUDA runs of :data:`COMPILE_MIN_STEPS` steps or more. Not on the CPU: there the eager
    step (channels-last norms and pads, see network.py) measured faster than the compiled one, 1.13 against 1.34 s
    (Johnson, batch 4, 256 px, 2-core AMD CPU: scripts/bench/bench_train.py --compile). On CUDA the step is launch-bound
    (22-26 ms, docs/gpu.md), which compiling addresses; DDP plus compile was not measured, so it is not automatic."""
    if mode == "never":
        return False
    if mode == "always":
        return True
    return device.type == "cuda" and steps_left >= COMPILE_MIN_STEPS and launch.world_size == 1
