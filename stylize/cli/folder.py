"""The folder form of ``stylize apply DIR OUTDIR``: a Rich progress display and summary around
:meth:`stylize.api.Stylizer.apply_folder`."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from stylize.config import FolderOptions, VideoOptions
from stylize.distributed import Launch
from stylize.io import display_path
from stylize.pipeline import FileRecord, FolderSummary


class _RateColumn(ProgressColumn):
    """Images per second since the start."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.2f} img/s")


def apply_folder(
    source: str, target: str, *, model: str | None, device: str, precision: str, compile: str, options: FolderOptions,
    report: str | None, as_json: bool, temporal: bool = True, video: VideoOptions | None = None,
) -> int:  # fmt: skip
    """Run the folder with a progress display; print the summary; return the exit code (1 when any file failed)."""
    from stylize.api import Stylizer

    launch = Launch.from_env()
    stylizer = Stylizer.load(model, device=device, precision=precision, compile=compile, local_rank=launch.local_rank)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    show = launch.is_main  # under torchrun only rank 0 talks; the others work quietly
    if show and err.is_terminal:
        columns = (TextColumn("stylize"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("files", total=None)

            def on_progress(total: int, record: FileRecord | None) -> None:
                progress.update(task, total=total, advance=0 if record is None else 1)
                if record is not None and record.status == "failed":
                    progress.console.print(f"[red]failed[/red] {escape(display_path(record.input))}: {escape(record.reason or '')}", markup=True)

            summary = stylizer.apply_folder(source, target, options, on_progress=on_progress, report=report, temporal=temporal, video=video)
    else:
        count = [0]

        def on_progress(total: int, record: FileRecord | None) -> None:
            if record is None or not show:
                return
            count[0] += 1
            line = f"[{count[0]}/{total}] {record.status} {display_path(record.input)}"
            line += f" -> {display_path(record.output)} ({record.seconds:.2f} s)" if record.status == "done" else f": {record.reason}"
            print(line, file=sys.stderr, flush=True)

        summary = stylizer.apply_folder(source, target, options, on_progress=on_progress, report=report, temporal=temporal, video=video)
    if show:
        if as_json:
            typer.echo(json.dumps(summary.to_dict()))
        else:
            _print_summary(summary, launch.world_size)
    return summary.exit_code


def _print_summary(summary: FolderSummary, world: int) -> None:
    out = Console(highlight=False, soft_wrap=True)
    table = Table(title="stylize apply" + (f" ({world} processes)" if world > 1 else ""))
    for name in ("done", "skipped", "failed", "seconds", "images/s"):
        table.add_column(name, justify="right")
    table.add_row(
        str(summary.done),
        str(summary.skipped),
        Text(str(summary.failed), style="red" if summary.failed else ""),
        f"{summary.seconds:.1f}",
        f"{summary.images_per_second:.2f}",
    )
    out.print(table)
    info: dict[str, Any] = summary.info
    out.print(f"{info.get('model')} style {info.get('style')} on {info.get('device')} {info.get('precision')}")
    if summary.failures:  # plain lines, not a table: long paths stay whole and can be copied
        out.print(f"[bold red]{summary.failed} failed:[/bold red]", markup=True)
        for record in summary.failures:
            out.print(f"  {display_path(record.input)}: {record.reason}", markup=False)
