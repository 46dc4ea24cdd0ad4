"""``stylize train``: flags generated from :class:`TrainConfig` and :class:`LossConfig`, a Rich progress bar.

Every config field is a flag of the same name in kebab case (``--style-weight`` is ``LossConfig.style_weight``), its
default the field's default and its help the comment above the field in ``stylize/config.py``: a new field is a new
flag, with nothing to copy here. Tuple fields other than ``--style`` (which repeats) take comma-separated values.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import types
import typing
from pathlib import Path
from typing import Any

import typer

from stylize.config import LossConfig, TrainConfig, field_help
from stylize.errors import StylizeError

#: Flag names that differ from the field name in kebab case (and short forms).
_FLAGS = {"from_model": ("--from", "--from-model"), "style": ("--style", "-s"), "out": ("--out", "-o")}


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command(
        "train", help="Train a style network: one or several --style images become one model file.", no_args_is_help=True
    )(_command())


def _command():
    """A function whose signature Typer reads: one keyword parameter per config field."""
    parameters = [_parameter(TrainConfig, item) for item in dataclasses.fields(TrainConfig) if item.name != "loss"]
    parameters += [_parameter(LossConfig, item) for item in dataclasses.fields(LossConfig)]

    def train_command(**values: Any) -> None:
        from stylize.training import train  # torch is imported only when the command runs

        if not values["style"]:
            raise StylizeError("no style image given", "pass --style IMAGE (or a bundled name such as starry_night)")
        config = TrainConfig(
            **{name: _value(TrainConfig, name, values[name]) for name in values if name in _names(TrainConfig) and name != "loss"},
            loss=LossConfig(**{name: _value(LossConfig, name, values[name]) for name in values if name in _names(LossConfig)}),
        )
        path = _run_with_progress(config, train)
        typer.echo(f"saved {path}")

    train_command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    train_command.__doc__ = "Train a style network: one or several --style images become one model file."
    return train_command


def _names(cls: type) -> set[str]:
    return {item.name for item in dataclasses.fields(cls)}


def _parameter(cls: type, item: dataclasses.Field) -> inspect.Parameter:
    hint = typing.get_type_hints(cls)[item.name]
    default = item.default if item.default is not dataclasses.MISSING else None
    flags = _FLAGS.get(item.name, ("--" + item.name.replace("_", "-"),))
    help_text = field_help(cls).get(item.name)
    if item.name == "style":  # the one repeated flag
        annotation: Any = list[str]
        option = typer.Option([], *flags, metavar="IMAGE", help=help_text)
    elif _is_tuple(hint):
        annotation = str
        option = typer.Option(",".join(str(v) for v in default), *flags, help=(help_text or "") + " (comma-separated)")
    else:
        annotation = _plain(hint)
        if annotation is bool:
            flags = (f"{flags[0]}/--no-{flags[0][2:]}",)
        base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Union else annotation
        metavar = {str: "TEXT", int: "INTEGER", float: "NUMBER"}.get(base)  # Typer shows <str> for an Optional[str]
        option = typer.Option(default, *flags, metavar=metavar, help=help_text)
    return inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _plain(hint: Any) -> Any:
    """``X | None`` -> ``Optional[X]``, ``Literal[...]`` -> ``str``; other hints as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return typing.Optional[_plain(inner[0])]  # noqa: UP045 - Typer reads Optional
    if typing.get_origin(hint) is typing.Literal:
        return str
    return hint


def _value(cls: type, name: str, value: Any) -> Any:
    """A flag's value as the config field wants it (comma-separated text -> tuple of the field's item type)."""
    hint = typing.get_type_hints(cls)[name]
    if name == "style":
        return tuple(value)
    if _is_tuple(hint) and isinstance(value, str):
        kind = typing.get_args(hint)[0]
        try:
            return tuple(kind(part.strip()) for part in value.split(",") if part.strip())
        except ValueError:
            flag = "--" + name.replace("_", "-")
            raise StylizeError(f"{flag} needs comma-separated {kind.__name__} values, got '{value}'") from None
    if isinstance(value, Path):
        return str(value)
    return value


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
            task, completed=info.step, total=info.total_steps, speed=info.images_per_second, content=info.content, style=info.style, tv=info.tv
        )

    try:
        return train(config, on_step=on_step)
    finally:
        if shown:
            progress.stop()
        logger.removeHandler(handler)
