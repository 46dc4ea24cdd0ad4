"""From :class:`~stylize.config.VideoOptions` and the output path to a checked :class:`OutputPlan`.

Everything is checked before any frame is decoded, so a typo in a flag fails at once rather than after an hour's
work: the container format (from ``--format`` or the extension), the encoder, whether the container can hold it, the
CRF range, the preset and the pixel format.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from stylize.config import VIDEO_CRF, VIDEO_PRESET, VideoOptions
from stylize.errors import StylizeError
from stylize.io import display_path
from stylize.video.backend import av

#: Encoders stylize drives, with the largest CRF each accepts.
ENCODERS = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63}
#: --format values and output extensions -> FFmpeg muxer.
FORMATS = {"mp4": "mp4", "m4v": "mp4", "mov": "mov", "mkv": "matroska", "matroska": "matroska", "webm": "webm"}
_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


@dataclass(frozen=True)
class OutputPlan:
    """The resolved choices for the output file."""

    format: str  # FFmpeg muxer name: "mp4", "mov", "matroska", "webm", ...
    codec: str  # a key of ENCODERS
    crf: int
    preset: str  # x264/x265 speed preset; VP9 has none ("" unless given, and then unused)
    pix_fmt: str
    global_header: bool  # the container keeps codec headers out of band (MP4, MKV), so the encoder must too
    audio_codec: str  # what audio the container cannot hold is re-encoded to: "aac", or "libopus" for WebM


def plan_output(target: Path, options: VideoOptions) -> OutputPlan:
    """Resolve and check ``options`` for writing ``target``; raises StylizeError with a hint for each bad value."""
    fmt = _container_format(target, options.format)
    codec = options.codec or ("libvpx-vp9" if fmt == "webm" else "libx264")
    if codec not in ENCODERS:
        raise StylizeError(f"unknown video codec {codec!r}", f"use one of {', '.join(ENCODERS)}")
    if codec not in av.codecs_available:
        raise StylizeError(f"this FFmpeg build has no {codec} encoder", f"use one of {', '.join(c for c in ENCODERS if c in av.codecs_available)}")
    with av.open(io.BytesIO(), "w", format=fmt) as probe_output:
        if codec not in probe_output.supported_codecs:
            raise StylizeError(f"the {fmt} format cannot hold {codec} video", "choose another `codec` or output format")
    crf = VIDEO_CRF[codec] if options.crf is None else options.crf
    if not 0 <= crf <= ENCODERS[codec]:
        raise StylizeError(f"crf {crf} is out of range for {codec}", f"pass `crf=0..{ENCODERS[codec]}` (lower is better)")
    preset = VIDEO_PRESET.get(codec, "") if options.preset is None else options.preset
    if codec != "libvpx-vp9" and preset not in _PRESETS:
        raise StylizeError(f"unknown preset {preset!r}", f"use one of {', '.join(_PRESETS)}")
    pix_fmts = [f.name for f in av.Codec(codec, "w").video_formats or ()]
    if options.pix_fmt not in pix_fmts:
        raise StylizeError(f"{codec} cannot encode pixel format {options.pix_fmt!r}", f"use one of {', '.join(pix_fmts)}")
    if options.max_size and options.max_size < 2:
        raise StylizeError(f"max size {options.max_size} is too small", "pass `max_size` 2 or more, or 0 to keep the size")
    if options.segment_seconds <= 0 or options.encoder_threads < 1 or options.queue_frames < 1:
        raise StylizeError("segment seconds must be > 0, encoder threads and queue frames >= 1", "check the video options")
    return OutputPlan(
        format=fmt,
        codec=codec,
        crf=crf,
        preset=preset,
        pix_fmt=options.pix_fmt,
        global_header=bool(av.format.ContainerFormat(fmt, "w").flags & av.format.Flags.global_header.value),
        audio_codec="libopus" if fmt == "webm" else "aac",
    )


def _container_format(target: Path, requested: str | None) -> str:
    choices = "use .mp4, .mov, .mkv or .webm"
    if requested:
        name = FORMATS.get(requested.lower().lstrip("."), requested)
        try:
            av.format.ContainerFormat(name, "w")
        except ValueError as exc:
            raise StylizeError(f"unknown video format {requested!r}", "use mp4, mov, mkv or webm, or an FFmpeg muxer name") from exc
        return name
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        what = f"extension {target.suffix!r}" if suffix else "no extension"
        raise StylizeError(f"cannot tell the video format of {display_path(target)}: it has {what}", f"{choices}, or pass `format`")
    return FORMATS[suffix]
