"""The video form of ``stylize apply clip.mp4 out.mp4``: a Rich progress bar (frames, fps, ETA) around
:meth:`stylize.api.Stylizer.apply_video`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from stylize.config import ApplyOptions, VideoOptions
from stylize.io import display_path


class _FpsColumn(ProgressColumn):
    """Frames per second since the start."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / elapsed if elapsed > 0 else 0.0:.1f} fps")


def apply_video(
    source: str, target: str, *, model: str | None, device: str, precision: str, options: ApplyOptions, video: VideoOptions,
    temporal: bool, batch_size: int | None, as_json: bool,
) -> None:  # fmt: skip
    """Stylize a video with a progress bar on a terminal; print what was written."""
    from stylize.api import Stylizer

    stylizer = Stylizer.load(model, device=device, precision=precision, compile="never")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    columns = (TextColumn("stylize"), BarColumn(), MofNCompleteColumn(), _FpsColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("frames", total=None)

        def on_progress(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        result = stylizer.apply_video(source, target, options, temporal=temporal, video=video, batch_size=batch_size, on_progress=on_progress)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if as_json:
        record = {
            "input": source, "output": str(result.path), "size": list(result.size), "frames": result.frames,
            "processed_frames": result.processed_frames, "seconds": round(result.seconds, 3), "fps": round(result.fps, 3),
            "codec": result.codec, "duration": round(result.duration, 4), "streams_copied": list(result.streams_copied),
            "segments": result.segments, "segments_reused": result.segments_reused, "model": stylizer.name,
            "device": stylizer.device, "precision": stylizer.precision, "temporal": temporal,
        }  # fmt: skip
        typer.echo(json.dumps(record))
        return
    width, height = result.size
    reused = f", {result.segments_reused} of {result.segments} segments from an earlier run" if result.segments_reused else ""
    typer.echo(
        f"{display_path(source)} -> {display_path(result.path)}  ({width}x{height}, {result.frames} frames, {result.codec}, "
        f"{stylizer.name}, {stylizer.device} {stylizer.precision}, {result.seconds:.1f} s, {result.fps:.1f} fps{reused})"
    )
