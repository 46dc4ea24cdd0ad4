"""Assembling the output: the segments' video packets and the source's other streams in one file, :func:`join`.

Nothing is re-encoded here except audio the container cannot hold. Video packets are copied from the segment files;
audio and subtitle packets from the source, byte for byte, with their timestamps (rescaled to the output streams' time
bases by the muxer). The two are merged in time order and the muxer interleaves them. File metadata (title, creation
time, location) and chapters are copied too.

What the output container cannot hold:

- audio in a codec it cannot store, or PCM in MP4 (legal since 2023, played by almost nothing), is re-encoded to AAC
  (Opus for WebM), keeping its sample rate and channel layout; a note says so;
- subtitles in a codec it cannot store (SubRip or ASS into MP4, anything but WebVTT into WebM) are dropped, with a
  note: converting them would lose their styling, and MKV keeps them all;
- data streams (timecode tracks, GPS tracks) and attachments are not copied, with a note.

Timestamps start where the source's do, except that a source starting later than 0 (MPEG-TS starts at 1.4 s) is
shifted, all streams alike, to start at 0, as FFmpeg's command line does.
"""

from __future__ import annotations

import errno
import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.io import AtomicFile, display_path, remove_stale_temporaries_of, write_error
from stylize.video.backend import av
from stylize.video.encode import EncoderSettings, configure
from stylize.video.packets import read_header, read_packets
from stylize.video.probe import VideoInfo, open_container
from stylize.video.settings import OutputPlan

#: Container tags the muxer writes itself; copying the source's would describe the source's file.
_FILE_TAGS_NOT_COPIED = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands", "duration"})
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO})

_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


@dataclass(frozen=True)
class JoinResult:
    streams_copied: tuple[str, ...]  # e.g. "audio #1 (aac)"
    notes: tuple[str, ...]  # streams re-encoded or dropped


def join(info: VideoInfo, segments: list[Path], settings: EncoderSettings, plan: OutputPlan, target: Path, *, overwrite: bool) -> JoinResult:
    """Write ``target`` from the segment packet files (in order) and the streams of ``info.path`` besides its video."""
    remove_stale_temporaries_of(target)  # what a run killed while joining left
    output = AtomicFile(target, overwrite=overwrite)
    try:
        with open_container(info.path) as source:
            result = _write(source, output.temp, info, segments, settings, plan)
    except av.error.FFmpegError as exc:
        output.discard()
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise write_error(exc, target) from exc
        raise StylizeError(f"could not write {display_path(target)}: {exc}", exit_code=EXIT_FAILURE) from exc
    except BaseException:
        output.discard()
        raise
    output.commit()
    return result


def _write(source: Any, temp: Path, info: VideoInfo, segments: list[Path], settings: EncoderSettings, plan: OutputPlan) -> JoinResult:
    offset = Fraction(info.start_time).limit_denominator(1_000_000) if info.start_time > 0 else Fraction(0)
    with av.open(os.fspath(temp), "w", format=plan.format) as output:
        video = output.add_stream(settings.codec)
        configure(video.codec_context, settings)
        video.time_base = settings.time_base
        language = source.streams[info.stream_index].metadata.get("language")
        if language:
            video.metadata["language"] = language
        copies, encoders, described, notes = _add_other_streams(source, output, plan, info.stream_index)
        output.metadata.update({k: v for k, v in source.metadata.items() if k.lower() not in _FILE_TAGS_NOT_COPIED})
        _copy_chapters(source, output, offset)
        output.start_encoding()
        extradata = read_header(segments[0]).extradata if segments else b""
        if bytes(video.codec_context.extradata or b"") != extradata:
            raise RuntimeError("the final stream's codec headers differ from the segments' (encoder settings changed?)")
        merged = heapq.merge(
            _video_packets(segments, video, settings.time_base, _ticks(offset, settings.time_base)),
            _source_packets(source, copies, set(encoders), offset),
            key=lambda item: item[0],
        )
        started: set[int] = set()  # re-encoded streams whose first frame has been placed
        for _, packet, decoder_stream in merged:
            if decoder_stream is None:
                output.mux(packet)
            else:
                _reencode(packet, decoder_stream, encoders[decoder_stream.index], output, offset, started)
        for encoder in encoders.values():
            output.mux(encoder.encode(None))
    return JoinResult(tuple(described), tuple(notes))


def _add_other_streams(source: Any, output: Any, plan: OutputPlan, video_index: int) -> tuple[dict[int, Any], dict[int, Any], list[str], list[str]]:
    """Output streams for the source's audio and subtitles: copied, re-encoded (audio) or dropped (subtitles)."""
    supported = output.supported_codecs
    copies: dict[int, Any] = {}  # source stream index -> output stream its packets are copied to
    encoders: dict[int, Any] = {}  # source stream index -> output stream its decoded audio is encoded into
    described: list[str] = []
    notes: list[str] = []
    for stream in source.streams:
        if stream.index == video_index:
            continue
        codec = stream.codec_context.name if stream.codec_context is not None else ""
        label = f"{stream.type} #{stream.index} ({codec or 'unknown codec'})"
        if stream.type in ("audio", "subtitle") and codec in supported and not (plan.format == "mp4" and codec.startswith("pcm_")):
            copies[stream.index] = output.add_stream_from_template(stream)
            copies[stream.index].metadata.update(stream.metadata)
            described.append(label)
        elif stream.type == "audio":
            rate = 48_000 if plan.audio_codec == "libopus" else stream.codec_context.sample_rate  # Opus: 48 kHz only
            encoded = output.add_stream(plan.audio_codec, rate=rate)
            encoded.layout = _named_layout(stream.codec_context.layout)
            encoded.metadata.update({k: v for k, v in stream.metadata.items() if k in ("language", "title")})
            encoders[stream.index] = encoded
            described.append(f"{label} re-encoded to {plan.audio_codec}")
            notes.append(f"{label} was re-encoded to {plan.audio_codec}: the {plan.format} format cannot hold it for players")
        elif stream.type == "subtitle":
            notes.append(f"{label} was dropped: the {plan.format} format cannot hold it (write .mkv to keep it)")
        else:
            notes.append(f"{label} was not copied: only the processed video, audio and subtitle streams are")
    return copies, encoders, described, notes


def _named_layout(layout: Any) -> Any:
    """A layout known only by its channel count ("2 channels", PCM in Matroska) as that count's usual layout."""
    if not layout.name.endswith(" channels"):
        return layout
    return _DEFAULT_LAYOUTS.get(layout.nb_channels, layout)


def _copy_chapters(source: Any, output: Any, offset: Fraction) -> None:
    chapters = source.chapters()
    for chapter in chapters:
        shift = _ticks(offset, chapter["time_base"])
        chapter["start"] -= shift
        chapter["end"] -= shift
    if chapters:
        output.set_chapters(chapters)


def _video_packets(segments: list[Path], stream: Any, time_base: Fraction, shift: int) -> Iterator[tuple[float, Any, None]]:
    """The segments' packets in decode order, as (seconds, packet, None).

    Each segment's encoder starts its decode timestamps a little before its first frame (by the B-frame delay), which
    can fall at or before the previous segment's last one; those are moved just after it. A decode timestamp only
    orders the packets, and the moved ones stay at or before their presentation timestamps.
    """
    last_dts: int | None = None
    for path in segments:
        for record in read_packets(path):
            packet = av.Packet(record.data)
            dts = record.dts
            if dts is not None and last_dts is not None and dts <= last_dts:
                dts = last_dts + 1
            last_dts = dts if dts is not None else last_dts
            packet.pts = None if record.pts is None else record.pts - shift
            packet.dts = None if dts is None else dts - shift
            packet.duration = record.duration
            packet.is_keyframe = record.keyframe
            packet.time_base = time_base
            packet.stream = stream
            moment = packet.dts if packet.dts is not None else packet.pts or 0
            yield float(moment * time_base), packet, None


def _source_packets(source: Any, copies: dict[int, Any], reencoded: set[int], offset: Fraction) -> Iterator[tuple[float, Any, Any]]:
    """The source's audio and subtitle packets in file order, as (seconds, packet, source stream if re-encoded)."""
    indices = sorted(set(copies) | reencoded)
    if not indices:
        return
    moment = 0.0
    for packet in source.demux([source.streams[index] for index in indices]):
        if packet.size == 0:  # the demuxer's end-of-stream marker
            continue
        in_stream = packet.stream
        shift = _ticks(offset, in_stream.time_base)
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is not None:
            moment = float((stamp - shift) * in_stream.time_base)
        if in_stream.index in reencoded:
            yield moment, packet, in_stream
            continue
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = copies[in_stream.index]
        yield moment, packet, None


def _reencode(packet: Any, in_stream: Any, out_stream: Any, output: Any, offset: Fraction, started: set[int]) -> None:
    try:
        frames = in_stream.decode(packet)
    except av.error.InvalidDataError:
        return  # a damaged audio packet: skipped, like a damaged video packet
    for frame in frames:
        if in_stream.index in started or frame.pts is None:
            frame.pts = None  # the encoder counts samples on from the first frame, whose start is kept
        else:
            rate = out_stream.codec_context.sample_rate
            frame.pts = round((frame.pts * in_stream.time_base - offset) * rate)
            frame.time_base = Fraction(1, rate)
            started.add(in_stream.index)
        output.mux(out_stream.encode(frame))


def _ticks(seconds: Fraction, time_base: Fraction) -> int:
    return round(seconds / time_base) if seconds else 0
