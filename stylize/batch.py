"""Folder conversion: ``stylize apply DIR OUTDIR`` as a pipelined, resumable, failure-tolerant batch.

The work is split in three stages that overlap in time:

1. **decode** — worker processes (a torch ``DataLoader`` over the file list) open, decode and downscale each file into a
   ``(3, H, W)`` uint8 tensor; a file that cannot be read comes back as a failure record instead of an exception;
2. **stylize** — the main process groups images of equal padded size into batches (a small reorder buffer lets groups
   form; a large image goes alone) and runs the network on the device;
3. **encode and write** — a thread pool encodes each result and writes it atomically (:func:`imaging.write_atomic`).

Queues between the stages are bounded (the loader's prefetch, the reorder buffer, the writer semaphore), so memory stays
flat however many files there are. Nothing here prints: progress goes to a callback, user errors are
:class:`~stylize.errors.StylizeError`, and the result is a :class:`BatchSummary` the CLI renders.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) every process plans the same sorted file list, takes every
``WORLD_SIZE``-th file, and the records of all ranks are gathered (gloo) so that every rank returns the combined summary.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stylize import imaging, tiling
from stylize.blending import blend, preserve_color
from stylize.config import ImageConfig
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.network import MIN_SIDE, SIZE_MULTIPLE

#: Extensions picked up when ``--ext`` is not given.
DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")
#: ``--format`` values for folders; ``same`` keeps each file's own format (PNG for formats stylize cannot write).
FOLDER_FORMATS = ("same", "jpg", "png", "webp", "tif", "bmp")
#: Most padded pixels one batch may hold. On the CPU, batching 1024x768 photos measured no faster than one at a time
#: (the network is memory-bound there) and costs memory, so only images up to about 0.5 MP are batched.
CPU_BATCH_PIXELS = 1024 * 1024
CUDA_BATCH_PIXELS = 32 * 1024 * 1024
#: Hidden test hook: seconds to sleep per stylized image, so that a test can kill a run in the middle.
SLOW_ENV = "_STYLIZE_TEST_SECONDS_PER_IMAGE"

Status = str  # "done" | "skipped" | "failed"


@dataclass(frozen=True)
class BatchOptions:
    """Everything that decides what a folder run does (the CLI flags, minus model/device/precision)."""

    style: str | None = None
    mix: str | None = None
    strength: float = 1.0
    preserve_color: bool = False
    max_size: int | None = None  # downscale so the long side is at most this (never upscale)
    max_pixels: int = ImageConfig.max_pixels  # decompression-bomb guard, per file
    quality: int = ImageConfig.quality
    fmt: str = "same"  # one of FOLDER_FORMATS
    suffix: str = ""  # appended to each output's stem
    recursive: bool = True
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS  # lower case, without dots
    batch_size: int | None = None  # None: 4 on the CPU, 8 on CUDA (then capped by the pixel budget)
    workers: int | None = None  # decoding processes; None: from the CPU count; 0 decodes in this process
    overwrite: bool = False
    tile: str | int = "auto"  # whole-image pass, or streamed tiles when memory is short (see stylize.tiling)
    memory_limit: str | int | None = None  # budget for that decision; None: a share of free memory


@dataclass
class FileRecord:
    """What happened to one input file; ``seconds`` is the work spent on it (decode + share of its batch + write)."""

    input: str
    output: str
    status: Status
    reason: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class BatchSummary:
    """The outcome of a folder run (all ranks together under torchrun)."""

    records: list[FileRecord]
    seconds: float  # wall time of the run (the slowest rank's)
    world_size: int = 1
    info: dict[str, Any] = field(default_factory=dict)  # model, style, device, precision, batch size, workers

    def count(self, status: Status) -> int:
        return sum(1 for record in self.records if record.status == status)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def failures(self) -> list[FileRecord]:
        return [record for record in self.records if record.status == "failed"]

    @property
    def images_per_second(self) -> float:
        """Images stylized per second of wall time (skipped files do not count)."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": len(self.records),
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "world_size": self.world_size,
            **self.info,
            "failures": [{"input": r.input, "reason": r.reason} for r in self.failures],
        }

    def report(self) -> dict[str, Any]:
        """The ``--report`` document: the summary and one record per file."""
        summary = self.to_dict()
        summary.pop("failures")
        return {"summary": summary, "files": [record.to_dict() for record in self.records]}


#: ``on_progress(total, record)``: called once with ``record=None`` when the file list is known, then once per file.
ProgressCallback = Callable[[int, "FileRecord | None"], None]


# ------------------------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    index: int
    source: Path
    target: Path
    fmt: str  # Pillow format name


def parse_extensions(text: str | None) -> tuple[str, ...]:
    """``"jpg, .PNG"`` -> ``("jpg", "png")``; None -> the defaults."""
    if text is None:
        return DEFAULT_EXTENSIONS
    extensions = tuple(dict.fromkeys(part.strip().lower().lstrip(".") for part in text.split(",") if part.strip()))
    if not extensions:
        raise StylizeError(f"--ext '{text}' names no extension", "e.g. --ext jpg,png")
    return extensions


def _check_options(options: BatchOptions) -> None:
    if options.fmt != "same" and "." + options.fmt not in imaging.OUTPUT_EXTENSIONS:
        raise StylizeError(f"unknown folder output format '{options.fmt}'", f"use one of {', '.join(FOLDER_FORMATS)}")
    if any(sep in options.suffix for sep in ("/", "\\", "\0")) or options.suffix in (".", ".."):
        raise StylizeError(f"--suffix '{options.suffix}' may not contain a path separator", "e.g. --suffix _styled")
    if options.batch_size is not None and options.batch_size < 1:
        raise StylizeError(f"--batch-size must be at least 1, got {options.batch_size}", "e.g. --batch-size 4")
    if options.workers is not None and options.workers < 0:
        raise StylizeError(f"--workers must be 0 or more, got {options.workers}", "0 decodes in the main process")
    tiling.parse_tile(options.tile)  # bad --tile / --memory-limit values fail before any file is touched
    tiling.parse_memory_size(options.memory_limit)


def _output_extension(source: Path, fmt: str) -> tuple[str, str]:
    """(extension, Pillow format) of the output for ``source``."""
    if fmt == "same":
        ext = source.suffix
        if ext.lower() in imaging.OUTPUT_EXTENSIONS:
            return ext, imaging.OUTPUT_EXTENSIONS[ext.lower()]
        return ".png", "PNG"  # GIF, PPM, ...: stylize does not write those
    ext = "." + fmt
    return ext, imaging.OUTPUT_EXTENSIONS[ext]


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


def plan(source_dir: str | os.PathLike, out_dir: str | os.PathLike, options: BatchOptions) -> list[Job]:
    """Find the inputs and map each to its output; refuse layouts where an output could replace an input."""
    _check_options(options)
    root = Path(source_dir)
    if not root.is_dir():
        raise StylizeError(f"{imaging.display_path(root)} is not a folder", "give a folder of images")
    out_root = Path(out_dir)
    if out_root.exists() and not out_root.is_dir():
        raise StylizeError(f"output {imaging.display_path(out_root)} exists and is not a folder", "give a folder for OUTDIR")
    given_root, given_out = root, out_root
    root, out_root = root.resolve(), out_root.resolve()
    # OUTDIR is never walked for inputs: neither when it lies inside DIR nor when a symlink in DIR leads to it.
    relatives = discover(root, options.extensions, options.recursive, exclude=out_root if out_root != root else None)

    mapped: list[tuple[Path, Path, str]] = []  # (relative input, relative output, Pillow format)
    for relative in relatives:
        ext, fmt = _output_extension(relative, options.fmt)
        mapped.append((relative, relative.parent / f"{relative.stem}{options.suffix}{ext}", fmt))

    if _inside(root, out_root):  # OUTDIR is DIR or contains it: outputs land among the inputs
        sources = {root / relative for relative, _, _ in mapped}
        for relative, output, _ in mapped:
            if out_root / output == root / relative:
                raise StylizeError(
                    f"output {imaging.display_path(given_out / output)} would replace its input: OUTDIR is DIR or contains it",
                    "choose an OUTDIR outside DIR, or pass --suffix _styled (or a --format other than the inputs')",
                )
        targets = {out_root / output for _, output, _ in mapped}
        if out_root != root and targets & sources:  # DIR inside OUTDIR: DIR/x.jpg may be the output of DIR/DIR/x.jpg
            clash = min(targets & sources)
            raise StylizeError(
                f"output {imaging.display_path(clash)} would replace an input: DIR lies inside OUTDIR",
                "choose an OUTDIR outside DIR",
            )
        # OUTDIR is DIR: files that are the output of another input (x_styled.jpg of x.jpg) are results of an
        # earlier run, never inputs.
        mapped = [entry for entry in mapped if root / entry[0] not in targets]
    return [Job(i, given_root / rel, given_out / out, fmt) for i, (rel, out, fmt) in enumerate(mapped)]


def _check_target(job: Job, out_root: Path, inputs: set[Path], claimed: dict[Path, int], overwrite: bool) -> FileRecord | None:
    """A ``failed`` or ``skipped`` record when ``job`` must not run, else None."""

    def record(status: Status, reason: str | None) -> FileRecord:
        return FileRecord(str(job.source), str(job.target), status, reason)

    try:
        resolved = job.target.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on Python < 3.13
        return record("failed", f"cannot resolve the output path: {exc}")
    if claimed.get(resolved, job.index) != job.index:
        return record("failed", "another input has the same output name (same stem, different extension)")
    if resolved in inputs:
        return record("failed", "output would replace another input file (inputs are never overwritten)")
    if not _inside(resolved, out_root):
        return record("failed", f"output path leaves OUTDIR through a symlink (to {imaging.display_path(resolved)})")
    if os.path.lexists(job.target):
        if os.path.exists(job.target) and imaging.same_file(job.source, job.target):
            return record("failed", "output is the input file (inputs are never overwritten)")
        if not overwrite:
            return record("skipped", "output exists (pass --overwrite to redo it)")
    return None


# ------------------------------------------------------------------------------------------------------------ decoding


@dataclass
class DecodedFile:
    """A decoded input as it travels from a loader worker to the main process."""

    job: Job
    pixels: torch.Tensor | None = None  # (3, H, W) uint8, after --max-size
    jpeg: torch.Tensor | None = None  # the file's bytes (1-D uint8) when the GPU decodes it (see decode_job)
    alpha: np.ndarray | None = None  # (H, W) uint8 at the pixels' size, or None
    source_mode: str = "RGB"
    exif: bytes | None = None
    icc_profile: bytes | None = None
    seconds: float = 0.0
    error: str | None = None

    def pin_memory(self) -> DecodedFile:
        """Called by the DataLoader with ``pin_memory=True`` (CUDA): page-locked pixels copy asynchronously."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        if self.jpeg is not None:
            self.jpeg = self.jpeg.pin_memory()
        return self

    @property
    def padded_size(self) -> tuple[int, int]:
        _, height, width = self.pixels.shape
        return height + (-height % SIZE_MULTIPLE), width + (-width % SIZE_MULTIPLE)


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes job ``i`` into a :class:`DecodedFile`; never raises for a bad file."""

    def __init__(self, jobs: Sequence[Job], options: BatchOptions, gpu_jpeg: bool = False) -> None:
        self.jobs = list(jobs)
        self.options = options
        self.gpu_jpeg = gpu_jpeg

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> DecodedFile:
        return decode_job(self.jobs[i], self.options, self.gpu_jpeg)


def decode_job(job: Job, options: BatchOptions, gpu_jpeg: bool = False) -> DecodedFile:
    """Open, decode and downscale one file; a failure becomes ``DecodedFile.error`` (its reason).

    With ``gpu_jpeg``, a plain JPEG (RGB or grey, upright, within the pixel limit, no downscaling needed) is only read
    here and decoded on the GPU by the main process (:func:`_decode_on_device`); anything else decodes here.
    """
    from stylize.api import _fit  # the single-image path's resize, so folders and files give the same pixels

    started = time.perf_counter()
    if gpu_jpeg:
        deferred = _read_plain_jpeg(job, options)
        if deferred is not None:
            deferred.seconds = time.perf_counter() - started
            return deferred
    try:
        loaded = imaging.open_image(job.source, max_pixels=options.max_pixels)
        rgb = _fit(loaded.rgb, options.max_size)
        if min(rgb.size) < MIN_SIDE:
            raise StylizeError(f"image is too small ({rgb.width}x{rgb.height}); it needs {MIN_SIDE} pixels a side")
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # (3, H, W)
        alpha = None
        if loaded.alpha is not None:
            mask = loaded.alpha if loaded.alpha.size == rgb.size else loaded.alpha.resize(rgb.size, Image.Resampling.LANCZOS)
            alpha = np.array(mask, dtype=np.uint8)
    except StylizeError as exc:
        return DecodedFile(job, seconds=time.perf_counter() - started, error=exc.one_line())
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        return DecodedFile(job, seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    return DecodedFile(
        job,
        pixels=pixels,
        alpha=alpha,
        source_mode=loaded.source_mode,
        exif=loaded.exif,
        icc_profile=loaded.icc_profile,
        seconds=time.perf_counter() - started,
    )


def _read_plain_jpeg(job: Job, options: BatchOptions) -> DecodedFile | None:
    """The file's bytes and metadata when the GPU can decode it exactly as Pillow would, else None."""
    try:
        with Image.open(job.source) as image:
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return None
            width, height = image.size
            if width * height > options.max_pixels or (options.max_size and max(width, height) > options.max_size):
                return None
            exif, orientation = imaging._read_exif(image)  # the same EXIF handling as open_image
            if orientation != 1 or min(width, height) < MIN_SIDE:
                return None
            icc = image.info.get("icc_profile") or None
            mode = image.mode
        data = torch.from_numpy(np.fromfile(job.source, dtype=np.uint8))
    except Exception:  # noqa: BLE001 - let the ordinary decoder produce the error message
        return None
    return DecodedFile(job, jpeg=data, source_mode=mode, exif=exif, icc_profile=icc)


def _decode_on_device(item: DecodedFile, device: torch.device, options: BatchOptions) -> DecodedFile:
    """Decode a deferred JPEG with nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``); fall back to Pillow."""
    if item.jpeg is None:
        return item
    try:
        from torchvision.io import ImageReadMode, decode_jpeg  # only this path needs torchvision

        item.pixels = decode_jpeg(item.jpeg, mode=ImageReadMode.RGB, device=device)  # (3, H, W) uint8 on the GPU
        item.jpeg = None
        return item
    except Exception:  # noqa: BLE001 - a JPEG nvJPEG cannot take (progressive, damaged) still decodes on the CPU
        return decode_job(item.job, options)


def _gpu_jpeg_available(device: torch.device) -> bool:
    # Opt-in: on an H200 with 16 cores, 80 photos went 10.5-12.4 img/s with nvJPEG against 34.6-34.9 with Pillow in
    # the loader's worker processes (scripts/bench_cuda.py, docs/gpu.md): per-image GPU decodes serialise with the network.
    if device.type != "cuda" or os.environ.get("STYLIZE_GPU_DECODE", "0") != "1":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # noqa: BLE001 - torchvision missing or built without image support
        return False
    return True


def collate_records(items: list[DecodedFile]) -> list[DecodedFile]:
    """The loader's collate: keep per-file records (sizes differ and failures ride along); batching happens later."""
    return items


def _batch_size(options: BatchOptions, device: torch.device) -> int:
    """``--batch-size``, else 8 on CUDA and 4 elsewhere (then capped per batch by the pixel budget)."""
    return options.batch_size or (8 if device.type == "cuda" else 4)


#: How much nicer than the network the decoding and writing threads run (Linux niceness, added to the current one).
HELPER_NICENESS = 10


def yield_to_network() -> None:
    """Lower the calling thread's CPU priority: decoding and encoding then fill the gaps the network's threads leave
    instead of preempting one of them, which stalls its partner at the next barrier (80 sun80 photos, three runs each
    way: 13.20 against 13.42 s). Linux nice values are per thread; elsewhere, or when not allowed, nothing happens."""
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + HELPER_NICENESS))
    except (OSError, AttributeError):
        pass


def _decoder_yields_to_network(_worker_id: int) -> None:
    yield_to_network()


def default_workers() -> int:
    """Decoding processes: half the CPUs (the other half runs the network), at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _decoded_stream(jobs: Sequence[Job], options: BatchOptions, workers: int, device: torch.device) -> Iterator[DecodedFile]:
    if not jobs:
        return
    on_cuda = device.type == "cuda"
    gpu_jpeg = _gpu_jpeg_available(device)
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(jobs, options, gpu_jpeg),
        batch_size=1,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_records,
        pin_memory=on_cuda,
        prefetch_factor=2 if workers else None,
        in_order=False,  # a slow file must not hold up the rest; results are keyed by job
        worker_init_fn=_decoder_yields_to_network,
    )
    for items in loader:
        for item in items:
            yield _decode_on_device(item, device, options) if gpu_jpeg else item


# ---------------------------------------------------------------------------------------------------------- batching


def group_batches(
    stream: Iterator[DecodedFile], batch_size: int, max_batch_pixels: int, buffer_size: int
) -> Iterator[list[DecodedFile]]:
    """Group decoded images of equal padded size into batches of up to ``batch_size``; failures pass through alone.

    At most ``buffer_size`` images wait for partners; when the buffer is full the fullest group goes as it is. An image
    whose padded size alone exceeds ``max_batch_pixels`` goes alone; otherwise a group is capped by the pixel budget.
    """
    groups: dict[tuple[int, int], list[DecodedFile]] = {}
    waiting = 0
    for item in stream:
        if item.error is not None:
            yield [item]
            continue
        key = item.padded_size
        limit = max(1, min(batch_size, max_batch_pixels // (key[0] * key[1])))
        if limit == 1:
            yield [item]
            continue
        group = groups.setdefault(key, [])
        group.append(item)
        waiting += 1
        if len(group) >= limit:
            waiting -= len(group)
            yield groups.pop(key)
        elif waiting > buffer_size:
            fullest = max(groups, key=lambda k: len(groups[k]))
            waiting -= len(groups[fullest])
            yield groups.pop(fullest)
    for key in list(groups):
        yield groups.pop(key)


def _stack_padded(items: list[DecodedFile]) -> torch.Tensor:
    """``(B, 3, Hp, Wp)`` uint8: each image reflection-padded at the bottom/right to the group's padded size.

    The generator pads to a multiple of 4 the same way, so each image gives exactly what it gives alone.
    """
    height, width = items[0].padded_size
    # GPU-decoded JPEGs are already on the device; the others join them there
    device = next((item.pixels.device for item in items if item.pixels.device.type != "cpu"), torch.device("cpu"))
    padded = []
    for item in items:
        _, h, w = item.pixels.shape
        pixels = item.pixels.unsqueeze(0).to(device, non_blocking=True)
        if (h, w) != (height, width):
            # reflect padding is not implemented for uint8; pad as float and round back (exact for integers)
            pixels = F.pad(pixels.float(), (0, width - w, 0, height - h), mode="reflect").to(torch.uint8)
        padded.append(pixels)
    return torch.cat(padded)


# ------------------------------------------------------------------------------------------------------------ running


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: str) -> str:
    """Under torchrun, ``auto``/``cuda`` become this process's own GPU (``cuda:LOCAL_RANK``)."""
    _, world, local_rank = distributed_context()
    if world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


class _ProcessGroup:
    """The gloo group of a torchrun launch (created here if the caller has not), or nothing outside torchrun."""

    def __init__(self) -> None:
        self.rank, self.world, _ = distributed_context()
        self.created = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")
                self.created = True

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def close(self) -> None:
        if self.created:
            import torch.distributed as dist

            dist.destroy_process_group()


def run_batch(
    stylizer: Any,
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: BatchOptions,
    on_progress: ProgressCallback | None = None,
    report: str | os.PathLike | None = None,
) -> BatchSummary:
    """Stylize every image under ``source_dir`` into ``out_dir`` with ``stylizer`` (a :class:`stylize.api.Stylizer`).

    Files that fail are recorded and the run goes on; the summary (all ranks' records under torchrun) is returned and,
    with ``report``, written there as JSON by rank 0.
    """
    started = time.perf_counter()
    weights = stylizer.style_weights(options.style, options.mix)  # bad styles fail before any work
    if not 0.0 <= options.strength <= 1.0:
        raise StylizeError(f"strength must be between 0 and 1, got {options.strength}", "e.g. --strength 0.7")
    if report is not None and not Path(report).parent.is_dir():
        raise StylizeError(f"cannot write the report {imaging.display_path(report)}: its folder does not exist", "create it first")
    jobs = plan(source_dir, out_dir, options)
    out_root = Path(out_dir).resolve()
    group = _ProcessGroup()
    try:
        if group.rank == 0:
            try:
                out_root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StylizeError(f"cannot create {imaging.display_path(out_root)}: {exc.strerror or exc}") from exc
            imaging.remove_stale_temporaries(out_root)
        group.barrier()  # no rank writes before the stale temporaries are gone
        if not os.access(out_root, os.W_OK | os.X_OK):  # one clear error, not one failure per file
            raise StylizeError(
                f"cannot write into {imaging.display_path(out_dir)}: the folder is read-only or not yours",
                "choose a folder you may write to",
            )
        mine = jobs[group.rank :: group.world]
        records = _run_jobs(stylizer, mine, jobs, out_root, options, weights, on_progress)
        elapsed = time.perf_counter() - started
        gathered = group.gather((records, elapsed))
    finally:
        group.close()
    all_records = sorted((r for part, _ in gathered for r in part), key=lambda r: r.input)
    summary = BatchSummary(
        all_records,
        seconds=max(seconds for _, seconds in gathered),
        world_size=group.world,
        info={
            "model": stylizer.name,
            "style": stylizer.describe_style(options.style, options.mix),
            "device": stylizer.device,
            "precision": stylizer.precision,
            "batch_size": _batch_size(options, stylizer.engine.device),
            "workers": default_workers() if options.workers is None else options.workers,
        },
    )
    if report is not None and group.rank == 0:
        import json

        imaging.write_atomic(json.dumps(summary.report(), indent=2).encode(), report, overwrite=True)
    return summary


def _run_jobs(
    stylizer: Any,
    jobs: list[Job],
    all_jobs: list[Job],
    out_root: Path,
    options: BatchOptions,
    weights: torch.Tensor,
    on_progress: ProgressCallback | None,
) -> list[FileRecord]:
    engine = stylizer.engine
    device: torch.device = engine.device
    on_cuda = device.type == "cuda"
    workers = default_workers() if options.workers is None else options.workers
    batch_size = _batch_size(options, device)
    budget = CUDA_BATCH_PIXELS if on_cuda else CPU_BATCH_PIXELS
    slow = float(os.environ.get(SLOW_ENV, "0") or 0)

    records: list[FileRecord] = []
    finished: queue.SimpleQueue[FileRecord] = queue.SimpleQueue()

    def emit(record: FileRecord) -> None:
        records.append(record)
        if on_progress is not None:
            on_progress(len(jobs), record)

    def drain() -> None:
        while True:
            try:
                emit(finished.get_nowait())
            except queue.Empty:
                return

    if on_progress is not None:
        on_progress(len(jobs), None)
    # Decided over all ranks' jobs, so that two inputs with one output name collide the same way under torchrun.
    inputs = {Path(os.path.realpath(job.source)) for job in all_jobs}  # realpath: no RuntimeError on a symlink loop
    claimed: dict[Path, int] = {}  # resolved output -> index of the first job that writes it
    for job in all_jobs:
        try:
            claimed.setdefault(job.target.resolve(), job.index)
        except (OSError, RuntimeError):
            pass
    todo: list[Job] = []
    for job in jobs:
        verdict = _check_target(job, out_root, inputs, claimed, options.overwrite)
        if verdict is None:
            todo.append(job)
        else:
            emit(verdict)

    writers = max(1, min(4, workers or 1))
    in_flight = threading.BoundedSemaphore(2 * writers + batch_size)
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="stylize-write", initializer=yield_to_network) as pool:

        def submit(item: DecodedFile, result: torch.Tensor, share: float) -> None:
            in_flight.acquire()  # back-pressure: the network waits when encoding falls behind
            future = pool.submit(_write_result, item, result, options, share)
            future.add_done_callback(lambda f: (finished.put(f.result()), in_flight.release()))

        stream = _decoded_stream(todo, options, workers, device)
        remaining = len(todo)  # images not yet through the network: bounds the forward calls still to come
        try:
            for batch in group_batches(stream, batch_size, budget, buffer_size=2 * batch_size):
                drain()
                if batch[0].error is not None:
                    item = batch[0]
                    emit(FileRecord(str(item.job.source), str(item.job.target), "failed", item.error, item.seconds))
                    remaining -= 1
                    continue
                # compile="auto" skips a compile that the images left cannot repay (see Engine.expect_calls)
                engine.expect_calls(remaining)
                remaining -= len(batch)
                t0 = time.perf_counter()
                try:
                    results = _stylize(engine, batch, weights, options)
                except StylizeError as exc:  # out of memory on the device: these files fail, the rest go on
                    for item in batch:
                        emit(FileRecord(str(item.job.source), str(item.job.target), "failed", exc.one_line(), item.seconds))
                    continue
                if slow:
                    time.sleep(slow * len(batch))
                share = (time.perf_counter() - t0) / len(batch)
                for item, result in zip(batch, results, strict=True):
                    submit(item, result, share)
        finally:
            engine.expect_calls(None)
    drain()
    return records


def _stylize(engine: Any, batch: list[DecodedFile], weights: torch.Tensor, options: BatchOptions) -> list[torch.Tensor]:
    """Run one batch through the network; returns each image's ``(3, h, w)`` float32 CPU result, blended as asked."""
    stacked = _stack_padded(batch)  # (B, 3, Hp, Wp) uint8, pinned on CUDA when the loader pinned the parts
    if engine.device.type == "cuda" and stacked.device.type == "cpu":
        stacked = stacked.pin_memory().to(engine.device, non_blocking=True)
    photos = stacked.float().div_(255.0)
    # (B, 3, Hp, Wp) float32 on the CPU; photos too large for memory are streamed in tiles with exact statistics.
    out = tiling.forward(engine, photos, weights, tile=options.tile, memory_limit=options.memory_limit)
    if options.preserve_color or options.strength < 1.0:
        photos = photos.cpu()  # blending needs the photo next to the result
    if options.preserve_color:
        out = preserve_color(out, photos)
    out = blend(out, photos, options.strength)
    results = []
    for i, item in enumerate(batch):
        _, height, width = item.pixels.shape
        results.append(out[i, :, :height, :width])
    return results


def _write_result(item: DecodedFile, result: torch.Tensor, options: BatchOptions, share: float) -> FileRecord:
    """Encode one result and write it atomically (runs in a writer thread)."""
    job = item.job
    started = time.perf_counter()
    try:
        stylized = imaging.tensor_to_image(result)
        alpha = None if item.alpha is None else Image.fromarray(item.alpha, "L")
        loaded = imaging.LoadedImage(stylized, alpha, item.source_mode, None, item.exif, item.icc_profile, 1)
        keep_grey = options.preserve_color and loaded.is_greyscale
        final = imaging.finish_image(stylized, loaded, job.fmt, keep_greyscale=keep_grey)
        data = imaging.encode_image(final, job.fmt, quality=options.quality, exif=item.exif, icc_profile=item.icc_profile)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        # clean_stale=False: the run removed the output tree's stale temporaries before it started
        imaging.write_atomic(data, job.target, overwrite=options.overwrite, clean_stale=False)
    except StylizeError as exc:
        status, reason = "failed", exc.one_line()
    except Exception as exc:  # noqa: BLE001 - a disk error on one file must not stop the batch
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
    else:
        status, reason = "done", None
    seconds = item.seconds + share + time.perf_counter() - started
    return FileRecord(str(job.source), str(job.target), status, reason, seconds)
