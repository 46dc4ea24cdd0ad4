"""Folder conversion: the per-image pipeline run over a planned folder, pipelined, resumable and failure-tolerant.

Three stages overlap in time, each running the pipeline's own functions (:mod:`stylize.pipeline.stages`):

1. **decode** — worker processes (a torch ``DataLoader`` over the file list) run :func:`~stylize.pipeline.stages.decode`; a
   file that cannot be read comes back as a failure record instead of an exception;
2. **stylize** — the main process groups photos of equal padded size into batches (a small reorder buffer lets groups
   form; a large photo goes alone) and runs :func:`~stylize.pipeline.stages.stylize`;
3. **finish, encode and write** — a thread pool runs :func:`~stylize.pipeline.stages.finish`, ``encode`` and ``write``.

Queues between the stages are bounded (the loader's prefetch, the reorder buffer, the writer semaphore), so memory stays
flat however many files there are. Nothing here prints: progress goes to a callback, and the result is a
:class:`FolderSummary`. Under ``torchrun`` every process plans the same sorted file list, takes every
``world_size``-th file, and the records of all ranks are gathered (gloo) so that every rank returns the combined summary.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stylize.config import FolderOptions
from stylize.distributed import Launch, ProcessGroup
from stylize.engine import Engine
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.io import display_path, remove_stale_temporaries, write_atomic
from stylize.network import padded_size
from stylize.pipeline import stages
from stylize.pipeline.folder_plan import VIDEO, Job, check_target, claimed_outputs, plan
from stylize.pipeline.stages import Photo, StyleWeights

#: Most padded pixels one batch may hold. On the CPU, batching 1024x768 photos measured no faster than one at a time
#: (the network is memory-bound there) and costs memory, so only images up to about 0.5 MP are batched.
CPU_BATCH_PIXELS = 1024 * 1024
CUDA_BATCH_PIXELS = 32 * 1024 * 1024
#: How much nicer than the network the decoding and writing threads run (Linux niceness, added to the current one).
HELPER_NICENESS = 10


@dataclass
class FileRecord:
    """What happened to one input file; ``seconds`` is the work spent on it (decode + share of its batch + write)."""

    input: str
    output: str
    status: str  # "done" | "skipped" | "failed"
    reason: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "status": self.status, "reason": self.reason, "seconds": round(self.seconds, 4)}


@dataclass
class FolderSummary:
    """The outcome of a folder run (all ranks together under torchrun)."""

    records: list[FileRecord]
    seconds: float  # wall time of the run (the slowest rank's)
    world_size: int = 1
    info: dict[str, Any] = field(default_factory=dict)  # model, style, device, precision, batch size, workers

    def count(self, status: str) -> int:
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
        """The report document: the summary and one record per file."""
        summary = self.to_dict()
        summary.pop("failures")
        return {"summary": summary, "files": [record.to_dict() for record in self.records]}


#: ``on_progress(total, record)``: called once with ``record=None`` when the file list is known, then once per file.
ProgressCallback = Callable[[int, "FileRecord | None"], None]


def default_workers() -> int:
    """Decoding processes: half the CPUs (the other half runs the network), at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def batch_size_for(options: FolderOptions, device: torch.device) -> int:
    """``batch_size``, else 8 on CUDA and 4 elsewhere (then capped per batch by the pixel budget)."""
    return options.batch_size or (8 if device.type == "cuda" else 4)


def batch_limit(padded: tuple[int, int], device: torch.device, batch_size: int | None = None) -> int:
    """How many photos of padded size ``padded`` (H, W) go through the network together on ``device``: ``batch_size``
    (None: 8 on CUDA, 4 elsewhere) capped by the device's pixel budget. Sheets and the server batch by it too."""
    budget = CUDA_BATCH_PIXELS if device.type == "cuda" else CPU_BATCH_PIXELS
    return _capped(padded, batch_size or (8 if device.type == "cuda" else 4), budget)


def _capped(padded: tuple[int, int], batch_size: int, max_batch_pixels: int) -> int:
    return max(1, min(batch_size, max_batch_pixels // (padded[0] * padded[1])))


def run_folder(
    engine: Engine,
    weights: StyleWeights,
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: FolderOptions,
    on_progress: ProgressCallback | None = None,
    report: str | os.PathLike | None = None,
    info: dict[str, Any] | None = None,
    convert_video: Callable[[Job], FileRecord] | None = None,
) -> FolderSummary:
    """Stylize every image under ``source_dir`` into ``out_dir``; ``weights`` as :func:`stylize.pipeline.stages.stylize` takes.

    Videos among the files go, after the images, one by one through ``convert_video`` (the caller's video pipeline,
    which has its own decoding and encoding threads). Files that fail are recorded and the run goes on; the summary
    (all ranks' records under torchrun) is returned and, with ``report``, written there as JSON by rank 0. ``info``
    (model, style, ...) is carried into the summary.
    """
    started = time.perf_counter()
    if report is not None and not Path(report).parent.is_dir():
        raise StylizeError(f"cannot write the report {display_path(report)}: its folder does not exist", "create it first")
    jobs = plan(source_dir, out_dir, options)
    out_root = Path(out_dir).resolve()
    launch = Launch.from_env()
    with ProcessGroup(launch) as group:
        if launch.is_main:
            try:
                out_root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StylizeError(f"cannot create {display_path(out_root)}: {exc.strerror or exc}") from exc
            remove_stale_temporaries(out_root)
        group.barrier()  # no rank writes before the stale temporaries are gone
        if not os.access(out_root, os.W_OK | os.X_OK):  # one clear error, not one failure per file
            raise StylizeError(
                f"cannot write into {display_path(out_dir)}: the folder is read-only or not yours", "choose a folder you may write to"
            )
        mine = jobs[launch.rank :: launch.world_size]
        records = _run_jobs(engine, weights, mine, jobs, out_root, options, on_progress, convert_video)
        gathered = group.gather((records, time.perf_counter() - started))
    summary = FolderSummary(
        sorted((r for part, _ in gathered for r in part), key=lambda r: r.input),
        seconds=max(seconds for _, seconds in gathered),
        world_size=launch.world_size,
        info={
            **(info or {}),
            "batch_size": batch_size_for(options, engine.device),
            "workers": default_workers() if options.workers is None else options.workers,
        },
    )
    if report is not None and launch.is_main:
        write_atomic(json.dumps(summary.report(), indent=2).encode(), report, overwrite=True)
    return summary


def _run_jobs(
    engine: Engine,
    weights: StyleWeights,
    jobs: list[Job],
    all_jobs: list[Job],
    out_root: Path,
    options: FolderOptions,
    on_progress: ProgressCallback | None,
    convert_video: Callable[[Job], FileRecord] | None = None,
) -> list[FileRecord]:
    device = engine.device
    workers = default_workers() if options.workers is None else options.workers
    batch_size = batch_size_for(options, device)
    budget = CUDA_BATCH_PIXELS if device.type == "cuda" else CPU_BATCH_PIXELS
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
    claimed = claimed_outputs(all_jobs)
    todo: list[Job] = []
    videos: list[Job] = []
    for job in jobs:
        verdict = check_target(job, out_root, inputs, claimed, options.overwrite)
        if verdict is not None:
            emit(FileRecord(str(job.source), str(job.target), *verdict))
        else:
            (videos if job.fmt == VIDEO else todo).append(job)

    writers = max(1, min(4, workers or 1))
    in_flight = threading.BoundedSemaphore(2 * writers + batch_size)
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="stylize-write", initializer=yield_to_network) as pool:

        def submit(item: DecodedFile, result: torch.Tensor, share: float) -> None:
            in_flight.acquire()  # back-pressure: the network waits when encoding falls behind
            future = pool.submit(_write_result, item, result, options, share)
            future.add_done_callback(lambda f: (finished.put(f.result()), in_flight.release()))

        remaining = len(todo)  # images not yet through the network: bounds the forward calls still to come
        try:
            for batch in group_batches(_decoded_stream(todo, options, workers, device), batch_size, budget, buffer_size=2 * batch_size):
                drain()
                if batch[0].photo is None:
                    item = batch[0]
                    emit(FileRecord(str(item.job.source), str(item.job.target), "failed", item.error, item.seconds))
                    remaining -= 1
                    continue
                engine.expect_calls(remaining)  # compile="auto" skips a compile that the images left cannot repay
                remaining -= len(batch)
                started = time.perf_counter()
                try:
                    results = stages.stylize(engine, [item.photo.pixels for item in batch], weights, options)
                except StylizeError as exc:  # out of memory on the device: these files fail, the rest go on
                    for item in batch:
                        emit(FileRecord(str(item.job.source), str(item.job.target), "failed", exc.one_line(), item.seconds))
                    continue
                share = (time.perf_counter() - started) / len(batch)
                for item, result in zip(batch, results, strict=True):
                    submit(item, result, share)
        finally:
            engine.expect_calls(None)
    drain()
    for job in videos:
        if convert_video is None:
            emit(FileRecord(str(job.source), str(job.target), "failed", "videos are not converted here"))
        else:
            emit(convert_video(job))
    return records


# ------------------------------------------------------------------------------------------------------------ decoding


@dataclass
class DecodedFile:
    """A decoded input (or why it could not be decoded) as it travels from a loader worker to the main process."""

    job: Job
    photo: Photo | None = None
    seconds: float = 0.0
    error: str | None = None

    def pin_memory(self) -> DecodedFile:
        """Called by the DataLoader with ``pin_memory=True`` (CUDA)."""
        if self.photo is not None:
            self.photo.pin_memory()
        return self

    @property
    def padded_size(self) -> tuple[int, int]:
        _, height, width = self.photo.pixels.shape
        return padded_size(height, width)


def decode_job(job: Job, options: FolderOptions) -> DecodedFile:
    """:func:`stylize.pipeline.stages.decode` for one job; a failure becomes ``DecodedFile.error`` (its reason)."""
    started = time.perf_counter()
    try:
        photo = stages.decode(job.source, options)
    except StylizeError as exc:
        return DecodedFile(job, seconds=time.perf_counter() - started, error=exc.one_line())
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        return DecodedFile(job, seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    return DecodedFile(job, photo, seconds=time.perf_counter() - started)


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes job ``i`` into a :class:`DecodedFile`; never raises for a bad file."""

    def __init__(self, jobs: Sequence[Job], options: FolderOptions) -> None:
        self.jobs = list(jobs)
        self.options = options

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> DecodedFile:
        return decode_job(self.jobs[i], self.options)


def _keep_records(items: list[DecodedFile]) -> list[DecodedFile]:
    """The loader's collate: keep per-file records (sizes differ and failures ride along); batching happens later."""
    return items


def yield_to_network(_worker_id: int | None = None) -> None:
    """Lower the calling thread's CPU priority: decoding and encoding then fill the gaps the network's threads leave
    instead of preempting one of them, which stalls its partner at the next barrier (80 sun80 photos, three runs each
    way: 13.20 against 13.42 s). Linux nice values are per thread; elsewhere, or when not allowed, nothing happens."""
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + HELPER_NICENESS))
    except (OSError, AttributeError):
        pass


def _decoded_stream(jobs: Sequence[Job], options: FolderOptions, workers: int, device: torch.device) -> Iterator[DecodedFile]:
    if not jobs:
        return
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(jobs, options),
        batch_size=1,
        shuffle=False,
        num_workers=workers,
        collate_fn=_keep_records,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
        in_order=False,  # a slow file must not hold up the rest; results are keyed by job
        worker_init_fn=yield_to_network,
    )
    for items in loader:
        yield from items


# ---------------------------------------------------------------------------------------------------------- batching


def group_batches(stream: Iterator[DecodedFile], batch_size: int, max_batch_pixels: int, buffer_size: int) -> Iterator[list[DecodedFile]]:
    """Group decoded photos of equal padded size into batches of up to ``batch_size``; failures pass through alone.

    At most ``buffer_size`` photos wait for partners; when the buffer is full the fullest group goes as it is. A photo
    whose padded size alone exceeds ``max_batch_pixels`` goes alone; otherwise a group is capped by the pixel budget.
    """
    groups: dict[tuple[int, int], list[DecodedFile]] = {}
    waiting = 0
    for item in stream:
        if item.photo is None:
            yield [item]
            continue
        key = item.padded_size
        limit = _capped(key, batch_size, max_batch_pixels)
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


# ------------------------------------------------------------------------------------------------------------ writing


def _write_result(item: DecodedFile, result: torch.Tensor, options: FolderOptions, share: float) -> FileRecord:
    """Finish, encode and write one result atomically (runs in a writer thread)."""
    job, photo = item.job, item.photo
    started = time.perf_counter()
    status, reason = "done", None
    try:
        data = stages.encode(stages.finish(result, photo, job.fmt, options), photo, job.fmt, options)
        # clean_stale=False: the run removed the output tree's stale temporaries before it started
        stages.write(data, job.target, options, clean_stale=False)
    except StylizeError as exc:
        status, reason = "failed", exc.one_line()
        if not options.overwrite and os.path.lexists(job.target):  # another run wrote it since planning
            status, reason = "skipped", "output appeared during the run (another run wrote it)"
    except Exception as exc:  # noqa: BLE001 - a disk error on one file must not stop the batch
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
    seconds = item.seconds + share + time.perf_counter() - started
    return FileRecord(str(job.source), str(job.target), status, reason, seconds)
