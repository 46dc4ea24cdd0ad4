"""``stylize train``: flags -> :class:`TrainConfig` -> :func:`stylize.training.train`, with a Rich progress bar.

Flags are the config's field names in kebab case (``--style-weight`` is ``LossConfig.style_weight``); defaults come
from the config dataclasses. Errors are raised as StylizeError for the app's ``main()`` to report.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import typer

from stylize.config import ARCHITECTURES, LossConfig, TrainConfig
from stylize.errors import StylizeError

_TRAIN = TrainConfig()
_LOSS = LossConfig()


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command(
        "train",
        help="Train a style network: one or several --style images become one model file.",
        no_args_is_help=True,
    )(train_command)


def train_command(
    style: list[str] = typer.Option(
        [],
        "--style",
        "-s",
        help="Style image, or a bundled painting (starry_night, the_scream, wave, composition_vii). "
        "Repeat it, or list several after it, to train one network with N styles.",
    ),
    more_styles: list[str] | None = typer.Argument(None, hidden=True, metavar=""),
    content_dir: Path | None = typer.Option(
        None, help="Folder of training photos, searched recursively (default: 6 bundled photos)."
    ),  # noqa: E501
    out: Path | None = typer.Option(None, "--out", "-o", help="Model file to write (default: <style>.safetensors)."),
    iterations: int = typer.Option(_TRAIN.iterations, help="Optimiser steps."),
    epochs: float | None = typer.Option(None, help="Passes over the photos instead of --iterations."),
    batch_size: int = typer.Option(_TRAIN.batch_size, help="Images per step, over all processes."),
    image_size: int = typer.Option(_TRAIN.image_size, help="Side of the square training crops."),
    style_size: int = typer.Option(_LOSS.style_size, help="Long side the style image is scaled to (0: as is)."),
    lr: float = typer.Option(_TRAIN.lr, help="Adam learning rate."),
    content_weight: float = typer.Option(_LOSS.content_weight, help="Weight of the content (relu2_2 feature) loss."),
    style_weight: float = typer.Option(_LOSS.style_weight, help="Weight of the style (Gram) loss."),
    tv_weight: float = typer.Option(_LOSS.tv_weight, help="Weight of the total-variation smoothing."),
    arch: str = typer.Option(_TRAIN.arch, help=f"Generator size: {', '.join(ARCHITECTURES)}."),
    from_model: Path | None = typer.Option(
        None, "--from", "--from-model", help="Add the styles to this model, training only their norm parameters."
    ),
    seed: int = typer.Option(_TRAIN.seed, help="Seed of weights, photo order and crops."),
    device: str = typer.Option(_TRAIN.device, help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(_TRAIN.precision, help="auto, fp32, bf16 or fp16 (autocast)."),
    workers: int = typer.Option(_TRAIN.workers, help="Photo-decoding worker processes."),
    compile: str = typer.Option(_TRAIN.compile, help="torch.compile the step: auto (runs of 500+ steps), always or never."),
    checkpoint_every: int = typer.Option(_TRAIN.checkpoint_every, help="Steps between checkpoints."),
    resume: str | None = typer.Option(None, help="'auto' (the checkpoint next to --out) or a checkpoint file."),
    preview_every: int = typer.Option(_TRAIN.preview_every, help="Steps between preview PNGs (0: none)."),
    log: Path | None = typer.Option(None, help="JSON-lines log file, one line per logging step."),
    log_every: int = typer.Option(_TRAIN.log_every, help="Steps between log lines."),
    loss_net: str = typer.Option(_TRAIN.loss_net, help="bundled (shipped VGG16) or torchvision (downloads once)."),
    vgg_weights: Path | None = typer.Option(None, help="VGG16 conv1_1-conv4_3 safetensors to use instead."),
) -> None:
    from stylize.training import train  # torch is imported only when the command runs

    styles = [*style, *(more_styles or [])]
    if not styles:
        raise StylizeError("no style image given", "pass --style IMAGE (or a bundled name such as starry_night)")
    config = TrainConfig(
        style=tuple(styles),
        content_dir=_text(content_dir),
        out=_text(out),
        iterations=iterations,
        epochs=epochs,
        batch_size=batch_size,
        image_size=image_size,
        lr=lr,
        arch=arch,
        from_model=_text(from_model),
        seed=seed,
        device=device,
        precision=precision,  # type: ignore[arg-type]  # checked by training.check_config
        workers=workers,
        compile=compile,
        checkpoint_every=checkpoint_every,
        resume=resume,
        preview_every=preview_every,
        log=_text(log),
        log_every=log_every,
        loss_net=loss_net,
        vgg_weights=_text(vgg_weights),
        loss=dataclasses.replace(
            _LOSS, content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight, style_size=style_size
        ),
    )
    path = _run_with_progress(config, train)
    typer.echo(f"saved {path}")


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _run_with_progress(config: TrainConfig, train) -> Path:
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    logger = logging.getLogger("stylize")
    handler = RichHandler(console=console, show_time=False, show_path=False)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]:.1f} img/s"),
        TextColumn("content {task.fields[content]:.3g} style {task.fields[style]:.3g} tv {task.fields[tv]:.3g}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("train", total=None, speed=0.0, content=0.0, style=0.0, tv=0.0)

    shown = False  # the bar starts with the first step, so that an error before training stays one line

    def on_step(info) -> None:
        nonlocal shown
        if not shown:
            progress.start()
            shown = True
        progress.update(
            task,
            completed=info.step,
            total=info.total_steps,
            speed=info.images_per_second,
            content=info.content,
            style=info.style,
            tv=info.tv,
        )

    try:
        return train(config, on_step=on_step)
    finally:
        if shown:
            progress.stop()
        logger.removeHandler(handler)
