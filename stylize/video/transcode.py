"""The entry point: :func:`transcode` a video through a :class:`FrameProcessor` into a new file.

Three threads work at once: decoding (:mod:`~stylize.video.decode`) fills a bounded queue ahead of the processor, the
caller's thread runs the processor on batches of consecutive frames, and encoding (:mod:`~stylize.video.encode`)
drains a second bounded queue behind it. The video is cut into segments of ``segment_seconds`` of input; a batch never
spans two. After each segment the encoder's packets and the processor's state are saved in the work folder
(:mod:`~stylize.video.workdir`), so that a killed run, started again with the same source and options, continues with
the first missing segment and produces the same file. When every segment is done, :mod:`~stylize.video.remux` joins
them with the source's audio and subtitles into the output, which appears under its name only when complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import floor
from pathlib import Path
from typing import Protocol

import torch

from stylize.config import VideoOptions
from stylize.errors import StylizeError
from stylize.io import check_output, display_path, same_file
from stylize.video.backend import require_av
from stylize.video.decode import DecodedFrame, DecodeStats, decode_frames, describe_repairs, scaled_size
from stylize.video.encode import EncoderSettings, SegmentEncoder, encoder_settings
from stylize.video.probe import VideoInfo, probe
from stylize.video.remux import join
from stylize.video.settings import OutputPlan, plan_output
from stylize.video.workdir import SegmentRecord, WorkFolder, source_identity
from stylize.video.worker import Consumer, Producer

#: ``on_progress(done_frames, total_frames)``: total is the header's count or an estimate, None when unknown.
ProgressCallback = Callable[[int, "int | None"], None]


class FrameProcessor(Protocol):
    """What :func:`transcode` runs every frame through: in stylize, the style network wrapped by the engine.

    ``__call__`` gets a batch of up to ``batch_size`` consecutive frames of one segment, each ``(3, H, W)`` uint8 RGB
    (possibly a non-contiguous view), and returns as many ``(3, H', W')`` uint8 RGB tensors, in order, all of one size
    (any device). The returned tensors are encoded in another thread: do not modify them afterwards. CUDA tensors are
    copied to the CPU there, on that thread's current stream: synchronise first if they come from a side stream.

    ``state_dict()`` is called after the last batch of each segment and saved with it; when a run resumes,
    ``load_state_dict()`` gets the state saved after the last finished segment before the first frame of the next, so
    a temporal processor continues as if never interrupted. A stateless processor returns ``{}``.
    """

    def __call__(self, frames: list[torch.Tensor]) -> list[torch.Tensor]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class VideoResult:
    """What :func:`transcode` wrote."""

    path: Path
    frames: int  # video frames in the output
    processed_frames: int  # frames this run decoded, processed and encoded (the rest came from reused segments)
    seconds: float  # wall-clock time of this run
    fps: float  # processed_frames / seconds
    size: tuple[int, int]  # (width, height) of the output video
    codec: str  # encoder, e.g. "libx264"
    duration: float  # seconds of video, first frame's start to last frame's end
    streams_copied: tuple[str, ...]  # the source's other streams in the output, e.g. "audio #1 (aac)"
    segments: int
    segments_reused: int  # finished by an earlier, interrupted run
    notes: tuple[str, ...]  # what was not kept as it was: re-encoded or dropped streams, cropped edges, repairs


@dataclass(frozen=True)
class _Frame:
    pixels: torch.Tensor
    pts: int
    duration: int
    segment: int


@dataclass(frozen=True)
class _SegmentEnd:
    segment: int
    state: dict[str, torch.Tensor]


def transcode(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    processor: FrameProcessor | Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
    options: VideoOptions = VideoOptions(),
    *,
    batch_size: int = 8,
    overwrite: bool = False,
    fingerprint: str = "",
    on_progress: ProgressCallback | None = None,
    check_frames: Callable[[int, int], None] | None = None,
) -> VideoResult:
    """Run every frame of ``source``'s video through ``processor`` and write ``target`` with its audio and subtitles.

    ``processor`` None copies the frames (a re-encode). ``fingerprint`` names the processor and its settings (model
    file hash, style, strength): segments left by an interrupted run are reused only when it, the source and the
    options are all the same. ``check_frames(height, width)`` raises StylizeError for a frame size the processor
    cannot take. Raises StylizeError for anything the user can fix, before any work where possible; when the processor
    raises, its exception propagates and the finished segments are kept for the next run.
    """
    require_av()
    started = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source, target = Path(source), Path(target)
    plan = plan_output(target, options)
    _check_paths(source, target, overwrite=overwrite)
    info = probe(source)
    size = scaled_size(*info.size, options.max_size)
    if check_frames is not None:
        check_frames(size[1], size[0])
    options_used = {**options.to_dict(), "codec": plan.codec, "crf": plan.crf, "preset": plan.preset, "format": plan.format}
    del options_used["queue_frames"]  # changes memory use, not the output
    identity = {
        "source": source_identity(source),
        "options": options_used,
        "fingerprint": fingerprint,
        "batch_size": batch_size,
    }
    work = WorkFolder.open(target, identity)
    try:
        reused = len(work.segments)
        notes = [f"the interrupted run's segments were not reused: {work.discarded_reason}"] if work.discarded_reason else []
        stats = DecodeStats()
        if not work.complete:
            _process(info, size, processor, work, plan, options, batch_size, stats, on_progress)
        if not work.segments:
            raise StylizeError(f"{display_path(source)} has no video frames that could be decoded", "check the file")
        settings = _settings(plan, info, options, tuple(work.encoder["input_size"]))  # type: ignore[index]
        joined = join(info, [work.segment_path(s.index) for s in work.segments], settings, plan, target, overwrite=overwrite)
    except BaseException:
        work.close()
        raise
    work.remove()
    seconds = time.perf_counter() - started
    segments = work.segments
    notes += describe_repairs(stats, info) + _conversion_notes(info, settings) + list(joined.notes)
    return VideoResult(
        path=target,
        frames=sum(s.frames for s in segments),
        processed_frames=stats.frames,
        seconds=seconds,
        fps=stats.frames / seconds if seconds > 0 else 0.0,
        size=(settings.width, settings.height),
        codec=plan.codec,
        duration=float((segments[-1].end_pts - segments[0].first_pts) * info.time_base),
        streams_copied=joined.streams_copied,
        segments=len(segments),
        segments_reused=min(reused, len(segments)),
        notes=tuple(notes),
    )


def _check_paths(source: Path, target: Path, *, overwrite: bool) -> None:
    if same_file(source, target):
        raise StylizeError(f"the output {display_path(target)} is the input file", "choose another output name")
    if target.is_dir():
        raise StylizeError(f"the output {display_path(target)} is a folder", "give the output a file name")
    check_output(target, overwrite=overwrite)
    folder = target.parent
    if not folder.is_dir():
        raise StylizeError(f"cannot write {display_path(target)}: the folder {display_path(folder)} does not exist", "create it first")


def _settings(plan: OutputPlan, info: VideoInfo, options: VideoOptions, size: tuple[int, int]) -> EncoderSettings:
    """Encoder settings for processed frames of ``size``; the same in every run with the same source and options."""
    sar = info.sample_aspect_ratio
    if sar and info.orientation.swaps_sides:
        sar = 1 / sar  # a pixel twice as wide is twice as tall once turned a quarter
    return encoder_settings(
        plan,
        size,
        time_base=info.time_base,
        frame_rate=info.average_rate or Fraction(25),
        colour=info.colour,
        sample_aspect_ratio=sar,
        threads=options.encoder_threads,
    )


def _process(
    info: VideoInfo,
    size: tuple[int, int],
    processor: FrameProcessor | Callable[[list[torch.Tensor]], list[torch.Tensor]] | None,
    work: WorkFolder,
    plan: OutputPlan,
    options: VideoOptions,
    batch_size: int,
    stats: DecodeStats,
    on_progress: ProgressCallback | None,
) -> None:
    """Decode, process and encode every frame after the finished segments; mark the work complete."""
    finished = work.segments
    after_pts = finished[-1].last_pts if finished else None
    if finished and hasattr(processor, "load_state_dict"):
        processor.load_state_dict(work.load_state(finished[-1].index))  # type: ignore[union-attr]
    writer = _SegmentWriter(work, lambda frame_size: _settings(plan, info, options, frame_size))
    decoder: Producer[DecodedFrame] = Producer(
        lambda: decode_frames(info, size=size, after_pts=after_pts, stats=stats), options.queue_frames, "stylize-video-decode"
    )
    encoder: Consumer[_Frame | _SegmentEnd] = Consumer(writer.handle, options.queue_frames, "stylize-video-encode")
    batches = _Batches(processor, encoder, on_progress, sum(s.frames for s in finished), info.expected_frames)
    segment_length = Fraction(options.segment_seconds)
    try:
        batch: list[DecodedFrame] = []
        current: int | None = None
        for frame in decoder:
            segment = max(0, floor((frame.pts - info.first_pts) * info.time_base / segment_length))
            if current is not None and segment != current:
                batches.run(batch, current)
                batch = []
                batches.end(current)
            current = segment
            batch.append(frame)
            if len(batch) == batch_size:
                batches.run(batch, current)
                batch = []
        if current is not None:
            batches.run(batch, current)
            batches.end(current)
        encoder.finish()
    except BaseException:
        decoder.close()
        try:
            encoder.finish()  # the segments already handed over are finished and kept: their work is done
        except BaseException:
            encoder.abort()  # the encoder itself failed
        writer.discard()  # the unfinished segment
        raise
    decoder.close()
    work.mark_complete()


class _Batches:
    """The caller's side: batches of frames through the processor to the encoder thread, state at segment ends."""

    def __init__(
        self,
        processor: FrameProcessor | Callable[[list[torch.Tensor]], list[torch.Tensor]] | None,
        encoder: Consumer[_Frame | _SegmentEnd],
        on_progress: ProgressCallback | None,
        done: int,
        total: int | None,
    ) -> None:
        self._processor = processor
        self._encoder = encoder
        self._on_progress = on_progress
        self._done = done
        self._total = total
        self._size: tuple[int, int] | None = None  # of the processor's outputs: the same for every frame
        self._report()

    def run(self, batch: list[DecodedFrame], segment: int) -> None:
        if not batch:
            return
        inputs = [frame.pixels for frame in batch]
        outputs = self._processor(inputs) if self._processor is not None else inputs
        self._check(outputs, len(inputs))
        for frame, pixels in zip(batch, outputs, strict=True):
            self._encoder.put(_Frame(pixels, frame.pts, frame.duration, segment))
        self._done += len(batch)
        self._report()

    def end(self, segment: int) -> None:
        processor = self._processor
        state = processor.state_dict() if hasattr(processor, "state_dict") else {}  # type: ignore[union-attr]
        # A copy on the CPU: the processor goes on changing its tensors while the encoder thread saves these.
        self._encoder.put(_SegmentEnd(segment, {name: t.detach().to("cpu", copy=True).contiguous() for name, t in state.items()}))

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self._done, self._total)

    def _check(self, outputs: object, count: int) -> None:
        """The processor's contract: ``count`` tensors (3, H, W) uint8 of one size. Breaking it is a programming error."""
        if not isinstance(outputs, (list, tuple)) or len(outputs) != count:
            raise ValueError(f"the frame processor must return a list of {count} tensors, got {type(outputs).__name__}")
        for pixels in outputs:
            if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.dim() != 3 or pixels.shape[0] != 3:
                described = f"{pixels.dtype} {tuple(pixels.shape)}" if isinstance(pixels, torch.Tensor) else type(pixels).__name__
                raise ValueError(f"the frame processor must return (3, H, W) uint8 tensors, got {described}")
            size = (pixels.shape[2], pixels.shape[1])
            if self._size is None:
                self._size = size
            elif size != self._size:
                raise ValueError(f"the frame processor returned frames of different sizes: {self._size} and {size}")


class _SegmentWriter:
    """The encoder thread's side: frames into the current segment's encoder; a segment's end into the work folder."""

    def __init__(self, work: WorkFolder, settings_for: Callable[[tuple[int, int]], EncoderSettings]) -> None:
        self._work = work
        self._settings_for = settings_for
        self._settings: EncoderSettings | None = None
        self._encoder: SegmentEncoder | None = None
        self._first_pts = self._last_pts = self._end_pts = 0

    def handle(self, item: _Frame | _SegmentEnd) -> None:
        if isinstance(item, _SegmentEnd):
            self._finish(item)
            return
        if self._encoder is None:
            if self._settings is None:
                self._settings = self._settings_for((item.pixels.shape[2], item.pixels.shape[1]))
                self._work.set_encoder(self._settings.to_dict())
            self._encoder = SegmentEncoder(self._settings, self._work.segment_path(item.segment))
            self._first_pts = item.pts
        self._encoder.add(item.pixels, item.pts, item.duration)
        self._last_pts, self._end_pts = item.pts, item.pts + item.duration

    def discard(self) -> None:
        """Drop the unfinished segment (after the thread has stopped)."""
        if self._encoder is not None:
            self._encoder.abort()
            self._encoder = None

    def _finish(self, end: _SegmentEnd) -> None:
        encoder = self._encoder
        if encoder is None:
            return
        packets, _ = encoder.finish()
        self._encoder = None
        path = self._work.segment_path(end.segment)
        record = SegmentRecord(end.segment, encoder.frames, self._first_pts, self._last_pts, self._end_pts, packets, path.stat().st_size)
        self._work.add_segment(record, end.state)


def _conversion_notes(info: VideoInfo, settings: EncoderSettings) -> list[str]:
    notes = []
    width, height = settings.input_size
    if (settings.width, settings.height) != (width, height):
        notes.append(
            f"the output is {settings.width}x{settings.height}, not {width}x{height}:"
            f" {settings.pix_fmt} needs even sizes, so the last column or row was cropped"
        )
    if info.bit_depth > 8 or not info.pix_fmt.startswith(("yuv420p", "yuvj420p", "nv12")):
        notes.append(f"the source's {info.pix_fmt} video was converted to 8-bit RGB for processing and written as {settings.pix_fmt}")
    return notes
