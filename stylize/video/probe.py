"""Opening a video file and describing it: :func:`probe` -> :class:`VideoInfo`.

The first video stream that is not cover art is the one processed. Probing decodes its first frame, because only a
decoded frame carries the display matrix and the colour tags for sure, and because a file whose first frame cannot be
decoded should fail before any work starts. Everything a user can cause (a missing file, an image or random bytes, a
truncated file, a file with no pictures) is raised as a one-line :class:`~stylize.errors.StylizeError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from stylize.errors import StylizeError
from stylize.io import display_path
from stylize.video.backend import av, require_av
from stylize.video.colour import Colour, resolve_colour
from stylize.video.orientation import Orientation, from_display_matrix, from_rotate_tag

#: FFmpeg demuxers of single pictures: such a file is an image, not a video.
_IMAGE_DEMUXERS = ("image2", "_pipe")
_HINT_DAMAGED = "the file is damaged or incomplete; copy or download it again"


@dataclass(frozen=True)
class StreamInfo:
    """A stream of the file other than the processed video: audio, subtitles, data, attachments, other video."""

    index: int
    kind: str  # "audio", "subtitle", "video", "data", "attachment"
    codec: str  # FFmpeg codec name ("aac", "subrip", "mov_text"); "" when FFmpeg does not know it
    language: str | None = None

    def describe(self) -> str:
        language = f", {self.language}" if self.language and self.language != "und" else ""
        return f"{self.kind} #{self.index} ({self.codec or 'unknown codec'}{language})"


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found: the processed video stream's properties and the file's other streams."""

    path: Path
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"
    stream_index: int  # the processed video stream
    codec: str  # its codec, e.g. "h264"
    width: int  # coded size, before the orientation is applied
    height: int
    frames: int | None  # as the header says; None when the container does not record it (Matroska, WebM)
    duration: float | None  # seconds of the video stream (of the file when the stream does not say)
    average_rate: Fraction | None  # frames per second on average; the frame rate of a constant-rate clip
    time_base: Fraction  # unit of the stream's timestamps, in seconds
    first_pts: int  # timestamp of the first frame, in time_base units
    start_time: float  # seconds at which the file's earliest stream starts (0 for most files; 1.4 for MPEG-TS)
    orientation: Orientation  # applied to the pixels on decode
    sample_aspect_ratio: Fraction | None  # pixel width / height when not square; None for square or unknown pixels
    colour: Colour  # conversion matrix and range, and the tags the output gets
    pix_fmt: str  # decoded pixel format, e.g. "yuv420p", "yuv420p10le", "yuv444p"
    bit_depth: int  # bits per sample of that format
    audio: tuple[StreamInfo, ...] = ()
    subtitles: tuple[StreamInfo, ...] = ()
    other_streams: tuple[StreamInfo, ...] = ()  # data, attachments and further video streams: never copied

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright picture, as shown and as decoded."""
        return self.orientation.upright_size(self.width, self.height)

    @property
    def rotation(self) -> int:
        """Clockwise degrees (0, 90, 180, 270) the frames are turned by on decode."""
        return self.orientation.rotation

    @property
    def expected_frames(self) -> int | None:
        """The header's frame count, else an estimate from the duration and average rate; None when neither is known."""
        if self.frames:
            return self.frames
        if self.duration and self.average_rate:
            return max(1, round(self.duration * self.average_rate))
        return None


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path``, find its video stream, decode its first frame, and describe the file."""
    require_av()
    path = Path(path)
    label = display_path(path)
    with open_container(path) as container:
        stream = _video_stream(container, label)
        first = _first_frame(container, stream, label)
        _check_index(stream, path, label)
        return _describe(path, container, stream, first)


@contextmanager
def open_container(path: Path) -> Iterator[Any]:
    """``av.open(path)`` for reading, with every failure turned into a StylizeError; closed on exit."""
    label = display_path(path)
    if path.is_dir():
        raise StylizeError(f"{label} is a folder, not a video", "give the path of a video file")
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise StylizeError(f"{label}: no such file", "check the path") from exc
    except OSError as exc:
        raise StylizeError(f"could not open {label}: {exc.strerror or exc}") from exc
    if size == 0:
        raise StylizeError(f"{label} is empty (0 bytes)", "the file has no content; copy or download it again")
    try:
        container = av.open(os.fspath(path), metadata_errors="replace")
    except PermissionError as exc:
        raise StylizeError(f"{label}: permission denied", "check that you may read this file") from exc
    except av.error.InvalidDataError as exc:
        kind = _sniff_container(path)
        if kind:
            raise StylizeError(f"{label} is a corrupt or truncated {kind} file", _HINT_DAMAGED) from exc
        raise StylizeError(f"{label} is not a video file", "stylize reads the videos FFmpeg reads: MP4, MOV, MKV, WebM, AVI...") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise StylizeError(f"could not open {label}: {exc}") from exc
    try:
        yield container
    finally:
        container.close()


def _video_stream(container: Any, label: str) -> Any:
    if any(name == "image2" or name.endswith("_pipe") for name in container.format.name.split(",")):
        raise StylizeError(f"{label} is an image, not a video", "stylize apply styles images too; give it a video file here")
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # cover art is a picture, not the video
            return stream
    if container.streams.audio:
        raise StylizeError(f"{label} has no video stream, only audio", "give a file with pictures in it")
    raise StylizeError(f"{label} has no video stream", "give a file with pictures in it")


def _first_frame(container: Any, stream: Any, label: str) -> Any:
    stream.thread_type = "AUTO"
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                return frame
    except av.error.FFmpegError as exc:
        raise StylizeError(f"{label} is corrupt: its first video frame cannot be decoded ({exc})", _HINT_DAMAGED) from exc
    raise StylizeError(f"{label} has no video frames", "its video stream is empty; check the file")


def _check_index(stream: Any, path: Path, label: str) -> None:
    """Refuse a file whose index points past its end: an MP4 with its index first, cut off while copying."""
    entries = stream.index_entries
    if len(entries) == 0:
        return
    last = entries[len(entries) - 1]
    if last.pos >= 0 and last.pos + last.size > path.stat().st_size:
        raise StylizeError(f"{label} is truncated: its video data ends early", _HINT_DAMAGED)


def _describe(path: Path, container: Any, stream: Any, first: Any) -> VideoInfo:
    context = stream.codec_context
    time_base = stream.time_base or Fraction(1, 1_000_000)
    duration = None
    if stream.duration:
        duration = float(stream.duration * time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    matrix = first.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    orientation = from_display_matrix(bytes(matrix)) if matrix is not None else from_rotate_tag(stream.metadata.get("rotate"))
    pix_fmt = first.format.name
    colour = resolve_colour(
        _tag(first.colorspace, context.colorspace),
        first.color_range or context.color_range,
        _tag(first.color_primaries, context.color_primaries),
        _tag(first.color_trc, context.color_trc),
        pix_fmt=pix_fmt,
        is_rgb=first.format.is_rgb,
        width=first.width,
        height=first.height,
    )
    sar = stream.sample_aspect_ratio
    others, audio, subtitles = [], [], []
    for other in container.streams:
        if other.index == stream.index:
            continue
        info = StreamInfo(other.index, other.type, _codec_name(other), other.language)
        {"audio": audio, "subtitle": subtitles}.get(other.type, others).append(info)
    return VideoInfo(
        path=path,
        container=container.format.name,
        stream_index=stream.index,
        codec=context.name,
        width=first.width,
        height=first.height,
        frames=stream.frames or None,
        duration=duration,
        average_rate=stream.average_rate or stream.guessed_rate,
        time_base=time_base,
        first_pts=first.pts if first.pts is not None else 0,
        # The shift to 0 must not put the first picture before it: Matroska reports an AAC track's priming delay as
        # every stream's start (64 ms at 16 kHz) while its first frame is at 0.
        start_time=max(0.0, min((container.start_time or 0) / av.time_base, float((first.pts or 0) * time_base))),
        orientation=orientation,
        sample_aspect_ratio=sar if sar and sar != 1 else None,
        colour=colour,
        pix_fmt=pix_fmt,
        bit_depth=max(component.bits for component in first.format.components),
        audio=tuple(audio),
        subtitles=tuple(subtitles),
        other_streams=tuple(others),
    )


def _tag(frame_value: int, stream_value: int) -> int:
    """A frame's colour tag, or the stream's when the frame's is unspecified (2 in all three enums)."""
    return frame_value if frame_value != 2 else stream_value


def _codec_name(stream: Any) -> str:
    context = stream.codec_context
    if context is not None:
        return context.name
    return ""


def _sniff_container(path: Path) -> str | None:
    """Name the container format from the first bytes, for "corrupt MP4" rather than "not a video"."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(376)
    except OSError:
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "MPEG-TS"
    if head.startswith(b"OggS"):
        return "Ogg"
    if head.startswith(b"FLV"):
        return "FLV"
    return None
