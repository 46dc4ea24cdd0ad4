"""Folder planning: which files of ``stylize apply DIR OUTDIR`` are converted, and where each result goes.

:func:`plan` walks DIR (following symlinks, never a folder twice, never into OUTDIR), maps every image to its output
path under OUTDIR (the tree mirrored, the stem plus ``suffix``, the format kept or chosen), and refuses layouts where
an output could replace an input. :func:`check_target` decides, just before a file runs, whether it must not: an
output that exists (skipped), or one that would land on an input or leave OUTDIR through a symlink (failed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stylize.config import VIDEO_EXTENSIONS, FolderOptions
from stylize.errors import StylizeError
from stylize.io import OUTPUT_EXTENSIONS, display_path, same_file

#: ``format`` values for folders; ``same`` keeps each file's own format (PNG for formats stylize cannot write).
FOLDER_FORMATS = ("same", "jpg", "png", "webp", "tif", "bmp")


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes (``fmt`` a Pillow format, or :data:`VIDEO`)."""

    index: int
    source: Path
    target: Path
    fmt: str  # Pillow format name


#: The "format" of a video job: the output is the same kind of container as the input (see stylize.video).
VIDEO = "video"


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file by its extension."""
    return Path(path).suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


def _output_extension(source: Path, fmt: str) -> tuple[str, str]:
    """(extension, Pillow format, or VIDEO) of the output for ``source``; videos keep their container."""
    if is_video(source):
        return source.suffix, VIDEO
    if fmt == "same":
        ext = source.suffix
        if ext.lower() in OUTPUT_EXTENSIONS:
            return ext, OUTPUT_EXTENSIONS[ext.lower()]
        return ".png", "PNG"  # GIF, PPM, ...: stylize does not write those
    ext = "." + fmt
    return ext, OUTPUT_EXTENSIONS[ext]


def discover(root: Path, extensions: Sequence[str], recursive: bool = True, exclude: Path | None = None) -> list[Path]:
    """Image files under ``root`` (relative paths, sorted), following symlinks but never a folder twice.

    Symlinks with an image extension that cannot be followed are included, so that the run reports them as failed.

    Hidden names (``.*``, which includes stylize's temporary files) are ignored; ``exclude`` (the output folder) is not
    entered, by whatever path it is reached. Folders that cannot be listed are skipped.
    """
    wanted = {"." + ext for ext in extensions}
    seen: set[tuple[int, int]] = set()
    if exclude is not None:
        try:
            info = os.stat(exclude)
            seen.add((info.st_dev, info.st_ino))
        except OSError:
            pass
    found: list[Path] = []
    stack = [Path()]
    while stack:
        relative = stack.pop()
        folder = root / relative
        try:
            info = os.stat(folder)
            key = (info.st_dev, info.st_ino)
            if key in seen:  # a symlink loop, a second link to a folder, or the output folder
                continue
            seen.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:  # a symlink loop
                is_dir = is_file = False
            if is_dir:
                if recursive:
                    stack.append(relative / entry.name)
            # A symlink that cannot be followed (dangling, or a loop) is kept, so that it is reported as a failed
            # file rather than silently left out; other non-files (FIFOs, sockets, devices) are not opened at all.
            elif (is_file or entry.is_symlink()) and os.path.splitext(entry.name)[1].lower() in wanted:
                found.append(relative / entry.name)
    return sorted(found, key=lambda p: p.as_posix())


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan(source_dir: str | os.PathLike, out_dir: str | os.PathLike, options: FolderOptions) -> list[Job]:
    """Find the inputs and map each to its output; refuse layouts where an output could replace an input."""
    if options.format not in FOLDER_FORMATS and "." + str(options.format) not in OUTPUT_EXTENSIONS:
        raise StylizeError(f"unknown folder output format '{options.format}'", f"use `format` {', '.join(FOLDER_FORMATS)}")
    root = Path(source_dir)
    if not root.is_dir():
        raise StylizeError(f"{display_path(root)} is not a folder", "give a folder of images")
    out_root = Path(out_dir)
    if out_root.exists() and not out_root.is_dir():
        raise StylizeError(f"output {display_path(out_root)} exists and is not a folder", "give a folder for OUTDIR")
    given_root, given_out = root, out_root
    root, out_root = root.resolve(), out_root.resolve()
    # OUTDIR is never walked for inputs: neither when it lies inside DIR nor when a symlink in DIR leads to it.
    relatives = discover(root, options.extensions, options.recursive, exclude=out_root if out_root != root else None)

    mapped: list[tuple[Path, Path, str]] = []  # (relative input, relative output, Pillow format)
    for relative in relatives:
        ext, fmt = _output_extension(relative, options.format)
        mapped.append((relative, relative.parent / f"{relative.stem}{options.suffix}{ext}", fmt))

    if _inside(root, out_root):  # OUTDIR is DIR or contains it: outputs land among the inputs
        sources = {root / relative for relative, _, _ in mapped}
        for relative, output, _ in mapped:
            if out_root / output == root / relative:
                raise StylizeError(
                    f"output {display_path(given_out / output)} would replace its input: OUTDIR is DIR or contains it",
                    "choose an OUTDIR outside DIR, or pass `suffix=_styled` (or a `format` other than the inputs')"
                )
        targets = {out_root / output for _, output, _ in mapped}
        if out_root != root and targets & sources:  # DIR inside OUTDIR: DIR/x.jpg may be the output of DIR/DIR/x.jpg
            clash = min(targets & sources)
            raise StylizeError(
                f"output {display_path(clash)} would replace an input: DIR lies inside OUTDIR",
                "choose an OUTDIR outside DIR",
            )
        # OUTDIR is DIR: files that are the output of another input (x_styled.jpg of x.jpg) are results of an
        # earlier run, never inputs.
        mapped = [entry for entry in mapped if root / entry[0] not in targets]
    return [Job(i, given_root / rel, given_out / out, fmt) for i, (rel, out, fmt) in enumerate(mapped)]


def claimed_outputs(jobs: Sequence[Job]) -> dict[Path, int]:
    """Resolved output path -> index of the first job that writes it (two inputs may share an output name)."""
    claimed: dict[Path, int] = {}
    for job in jobs:
        try:
            claimed.setdefault(job.target.resolve(), job.index)
        except (OSError, RuntimeError):
            pass
    return claimed


def check_target(job: Job, out_root: Path, inputs: set[Path], claimed: dict[Path, int], overwrite: bool) -> tuple[str, str] | None:
    """``("failed" | "skipped", reason)`` when ``job`` must not run, else None. ``out_root`` is resolved; ``inputs``
    are every job's real source path, ``claimed`` is :func:`claimed_outputs` of every job (all ranks' alike)."""
    try:
        resolved = job.target.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on Python < 3.13
        return "failed", f"cannot resolve the output path: {exc}"
    if claimed.get(resolved, job.index) != job.index:
        return "failed", "another input has the same output name (same stem, different extension)"
    if resolved in inputs:
        return "failed", "output would replace another input file (inputs are never overwritten)"
    if not _inside(resolved, out_root):
        return "failed", f"output path leaves OUTDIR through a symlink (to {display_path(resolved)})"
    if os.path.lexists(job.target):
        if os.path.exists(job.target) and same_file(job.source, job.target):
            return "failed", "output is the input file (inputs are never overwritten)"
        if not overwrite:
            return "skipped", SKIPPED_EXISTS
    return None


#: Why a file whose output exists is skipped.
SKIPPED_EXISTS = "output exists"
