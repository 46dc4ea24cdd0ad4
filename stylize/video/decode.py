"""Decoding the video stream into upright RGB frames with exact timestamps: :func:`decode_frames`.

Each frame is converted by swscale in one pass (YUV of any depth and subsampling -> 8-bit RGB, scaled down when
``max_size`` asks), with the stream's matrix and range passed explicitly (see :mod:`stylize.video.colour`), then turned
upright (see :mod:`stylize.video.orientation`). Timestamps stay in the stream's time base; a frame's duration is the
gap to the next frame, so a variable frame rate survives as it is.

Damaged streams are read as far as possible, like FFmpeg does: a packet that does not decode is skipped, a frame
without a timestamp gets the previous one plus one nominal frame, and a frame whose timestamp does not increase
(which no encoder or muxer accepts) is dropped. :class:`DecodeStats` counts them for the result's notes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stylize.errors import StylizeError
from stylize.io import display_path
from stylize.video.backend import av
from stylize.video.probe import VideoInfo, open_container


@dataclass(frozen=True)
class DecodedFrame:
    """One frame as the processor gets it."""

    pixels: torch.Tensor  # (3, H, W) uint8 RGB, upright; a view of (H, W, 3) memory
    pts: int  # presentation timestamp, in the stream's time base
    duration: int  # until the next frame's pts; the last frame's own duration, or one nominal frame


@dataclass
class DecodeStats:
    """What decoding had to repair; read after the iterator is exhausted."""

    frames: int = 0  # frames yielded
    undecodable_packets: int = 0
    dropped_frames: int = 0  # timestamp not after the previous frame's
    restarted: bool = False  # a seek for resumption landed too late; decoding started again from the beginning


def scaled_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most ``max_size``, keeping the aspect, in even numbers.

    Sizes already within ``max_size`` (or ``max_size`` 0) are kept, odd or not: the encoder deals with odd sizes.
    """
    if not max_size or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def decode_frames(
    info: VideoInfo, *, size: tuple[int, int] | None = None, after_pts: int | None = None, stats: DecodeStats | None = None
) -> Iterator[DecodedFrame]:
    """Yield the frames of ``info``'s video stream in presentation order, as upright RGB of ``size`` (default: as is).

    ``after_pts`` resumes: only frames with a later timestamp are yielded. The file is seeked to the keyframe at or
    before it; if the first frame decoded there is already later (a container whose index is coarse or wrong), the
    stream is decoded from the beginning instead, so that no frame is ever skipped.
    """
    stats = stats if stats is not None else DecodeStats()
    width, height = size or info.size
    coded_width, coded_height = info.orientation.upright_size(width, height)  # the size before turning upright
    scaling = (coded_width, coded_height) != (info.width, info.height)
    interpolation = av.video.reformatter.Interpolation
    convert = {
        "width": coded_width,
        "height": coded_height,
        "format": "rgb24",
        "src_colorspace": info.colour.sws_colorspace,
        "src_color_range": info.colour.range,
        # Area averaging when scaling down (no aliasing); otherwise only chroma is upsampled, bilinearly.
        "interpolation": interpolation.AREA if scaling else interpolation.BILINEAR,
    }
    nominal = _nominal_duration(info)
    reformatter = av.video.reformatter.VideoReformatter()  # one swscale context, reused for every frame
    previous_pts = after_pts
    before_resumption = after_pts is not None  # frames up to after_pts were yielded by an earlier run
    pending: tuple[Any, int] | None = None
    for frame in _decoded(info, after_pts, stats):
        pts = frame.pts if frame.pts is not None else (previous_pts + nominal if previous_pts is not None else info.first_pts)
        if before_resumption and pts <= after_pts:  # type: ignore[operator]
            continue
        before_resumption = False
        if previous_pts is not None and pts <= previous_pts:
            stats.dropped_frames += 1
            continue
        if pending is not None:
            yield _to_frame(reformatter, pending[0], convert, info, pending[1], pts - pending[1])
            stats.frames += 1
        pending, previous_pts = (frame, pts), pts
    if pending is not None:
        last, pts = pending
        yield _to_frame(reformatter, last, convert, info, pts, last.duration or nominal)
        stats.frames += 1


def _decoded(info: VideoInfo, after_pts: int | None, stats: DecodeStats) -> Iterator[Any]:
    """Decoded frames from the start, or from the keyframe before ``after_pts`` (falling back to the start)."""
    if after_pts is not None:
        with open_container(info.path) as container:
            stream = _prepared_stream(container, info)
            container.seek(after_pts, stream=stream, backward=True, any_frame=False)
            frames = _decode_packets(container, stream, stats)
            first = next(frames, None)
            if first is None:
                return
            if first.pts is None or first.pts <= after_pts:
                yield first
                yield from frames
                return
        stats.restarted = True
    with open_container(info.path) as container:
        yield from _decode_packets(container, _prepared_stream(container, info), stats)


def _prepared_stream(container: Any, info: VideoInfo) -> Any:
    stream = container.streams[info.stream_index]
    stream.thread_type = "AUTO"  # frame and slice threads: the same pictures, only sooner
    return stream


def _decode_packets(container: Any, stream: Any, stats: DecodeStats) -> Iterator[Any]:
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets, None)
        except av.error.FFmpegError as exc:  # the container itself is damaged here; its end is a clean StopIteration
            label = display_path(container.name)
            raise StylizeError(f"{label} is corrupt: reading stopped after {stats.frames} frames ({exc})", "the file is damaged") from exc
        if packet is None:
            return
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            stats.undecodable_packets += 1
            continue
        yield from frames


def _to_frame(reformatter: Any, frame: Any, convert: dict[str, Any], info: VideoInfo, pts: int, duration: int) -> DecodedFrame:
    rgb = reformatter.reformat(frame, **convert).to_ndarray()  # (H, W, 3) uint8
    upright = np.ascontiguousarray(info.orientation.apply(rgb))  # the one copy: the frame's buffer is reused
    return DecodedFrame(torch.from_numpy(upright).permute(2, 0, 1), pts, max(1, duration))


def _nominal_duration(info: VideoInfo) -> int:
    """One frame at the average rate, in time-base units (at least 1)."""
    if not info.average_rate:
        return 1
    return max(1, round(1 / (info.average_rate * info.time_base)))


def describe_repairs(stats: DecodeStats, info: VideoInfo) -> list[str]:
    """Notes for the result: what decoding skipped or dropped."""
    label = display_path(info.path)
    notes = []
    if stats.undecodable_packets:
        notes.append(f"{stats.undecodable_packets} damaged video packets of {label} could not be decoded and were skipped")
    if stats.dropped_frames:
        notes.append(f"{stats.dropped_frames} frames of {label} repeated an earlier timestamp and were dropped")
    if info.frames and stats.frames + stats.dropped_frames < info.frames and stats.undecodable_packets:
        notes.append(f"{label} announces {info.frames} frames but {stats.frames + stats.dropped_frames} could be decoded")
    return notes
