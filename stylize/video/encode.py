"""Encoding processed RGB frames, one segment at a time: :class:`SegmentEncoder`.

Each segment gets a fresh encoder, so it starts with a keyframe and refers to no frame before it (a closed GOP): a
segment can be encoded again, in another run, and come out the same. For that, equal frames must give equal packets,
byte for byte, and two things in x264 break it:

- its thread count changes its output (854x480: different bytes with 1 and 4 threads), so it is fixed
  (``VideoOptions.encoder_threads``) rather than taken from the machine;
- its AVX-512 code is not deterministic (x264 of PyAV 18.1's wheel, on an AMD EPYC): the same frames encoded
  differently in processes whose fresh heap memory held different bytes (glibc ``MALLOC_PERTURB_``), at 64x48,
  192x144, 320x240, 426x240 and 854x480 with B-frames; and without B-frames too, about once in 150 segments. With
  x264 told to use nothing above AVX2 (``asm=AVX2,Cache64``) every one of those runs gave the same bytes, at the same
  speed within the noise of a shared machine (x264's assembly is bit-exact with its C code, so the output does not
  change either). It is applied when opening the encoder on CPUs with AVX-512 (as torch reports it), not recorded in
  the settings, so a run resumed on a machine without AVX-512 continues with the same settings.

Frames keep their source timestamps (in the source's time base) and durations, so a variable frame rate stays variable.
RGB is converted to YUV with the same matrix and range the source was decoded with, and the stream is tagged with
them, the source's primaries and transfer, and its pixel aspect ratio.

Odd sizes: 4:2:0 and 4:2:2 store one chroma sample per 2 pixels, and H.264/HEVC can only crop an even number of
pixels off the coded picture, so an odd width or height cannot be stored at all. The last column or row is cropped:
one pixel at the edge is invisible, whereas padding would add a band of invented pixels and make the output larger
than the input. Formats without subsampling (yuv444p) keep odd sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from stylize.io import AtomicFile, write_error
from stylize.video.backend import av
from stylize.video.colour import Colour
from stylize.video.packets import PacketFileHeader, PacketFileWriter, PacketRecord
from stylize.video.settings import OutputPlan


@dataclass(frozen=True)
class EncoderSettings:
    """Everything besides the frames that decides the encoded bytes."""

    codec: str  # encoder name, e.g. "libx264"
    options: dict[str, str] = field(hash=False)  # the encoder's private options: crf, preset, ...
    pix_fmt: str
    input_size: tuple[int, int]  # (width, height) of the frames given to the encoder
    width: int  # encoded size: input_size with an odd side cropped by one where pix_fmt subsamples chroma
    height: int
    time_base: Fraction  # the source stream's: timestamps are copied, not converted
    frame_rate: Fraction  # average rate, for the encoder's rate control and the stream's timing info
    colour: Colour
    sample_aspect_ratio: Fraction | None
    threads: int
    global_header: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, for the work folder's manifest."""
        return {
            "codec": self.codec,
            "options": dict(sorted(self.options.items())),
            "pix_fmt": self.pix_fmt,
            "input_size": list(self.input_size),
            "size": [self.width, self.height],
            "time_base": str(self.time_base),
            "frame_rate": str(self.frame_rate),
            "colour": [self.colour.matrix, self.colour.range, self.colour.primaries, self.colour.transfer],
            "sample_aspect_ratio": str(self.sample_aspect_ratio) if self.sample_aspect_ratio else None,
            "threads": self.threads,
            "global_header": self.global_header,
        }


def encoder_settings(
    plan: OutputPlan,
    size: tuple[int, int],
    *,
    time_base: Fraction,
    frame_rate: Fraction,
    colour: Colour,
    sample_aspect_ratio: Fraction | None,
    threads: int,
) -> EncoderSettings:
    """Settings for encoding frames of ``size`` (width, height), cropped to what ``plan.pix_fmt`` can store."""
    width, height = size
    pixel_format = av.VideoFormat(plan.pix_fmt)
    if pixel_format.chroma_width(width) * 2 == width + 1:  # one chroma sample per two columns: width must be even
        width -= 1
    if pixel_format.chroma_height(height) * 2 == height + 1:
        height -= 1
    return EncoderSettings(
        codec=plan.codec,
        options=_encoder_options(plan, threads),
        pix_fmt=plan.pix_fmt,
        input_size=size,
        width=width,
        height=height,
        time_base=time_base,
        frame_rate=frame_rate,
        colour=colour,
        sample_aspect_ratio=sample_aspect_ratio,
        threads=threads,
        global_header=plan.global_header,
    )


def _encoder_options(plan: OutputPlan, threads: int) -> dict[str, str]:
    if plan.codec == "libvpx-vp9":
        # Constant quality needs a zero bitrate; "good" at cpu-used 4 is libvpx's usual speed/quality balance.
        return {"crf": str(plan.crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
    options = {"crf": str(plan.crf), "preset": plan.preset}
    if plan.codec == "libx265":
        # x265 sizes its pools and frame threads from the core count unless told; fixed, like x264's threads.
        options["x265-params"] = f"log-level=error:pools={threads}:frame-threads={max(1, threads // 2)}"
    return options


def configure(context: Any, settings: EncoderSettings) -> None:
    """Set every field of an unopened encoder context (a segment's, or the final file's video stream's)."""
    context.width = settings.width
    context.height = settings.height
    context.pix_fmt = settings.pix_fmt
    context.time_base = settings.time_base
    context.framerate = settings.frame_rate
    context.bit_rate = 0  # constant quality (PyAV's add_stream and a bare context default differently)
    context.colorspace = settings.colour.matrix
    context.color_range = settings.colour.range
    context.color_primaries = settings.colour.primaries
    context.color_trc = settings.colour.transfer
    if settings.sample_aspect_ratio:
        context.sample_aspect_ratio = settings.sample_aspect_ratio
    context.thread_count = settings.threads
    context.options = dict(settings.options)
    if settings.codec == "libx264" and torch.backends.cpu.get_cpu_capability() == "AVX512":
        context.options["x264-params"] = "asm=AVX2,Cache64"  # deterministic output; see the module docstring
    if settings.global_header:
        context.flags |= av.codec.context.Flags.global_header


class SegmentEncoder:
    """Encodes the frames of one segment into a packet file that appears at ``path`` when :meth:`finish` returns.

    A little over a screen: opening the codec deterministically is most of it.
    """

    def __init__(self, settings: EncoderSettings, path: Path) -> None:
        self.settings = settings
        self.frames = 0
        self._file = AtomicFile(path, overwrite=True)
        self._context = av.CodecContext.create(settings.codec, "w")
        configure(self._context, settings)
        self._context.open()
        self._reformatter = av.video.reformatter.VideoReformatter()
        self._durations: dict[int, int] = {}  # pts -> duration of the frames inside the encoder
        header = PacketFileHeader(self._context.codec.name, settings.time_base, bytes(self._context.extradata or b""))
        try:
            self._fp = open(self._file.temp, "xb")  # noqa: SIM115 - closed by finish() or abort()
        except OSError as exc:
            raise write_error(exc, path) from exc
        self._writer = PacketFileWriter(self._fp, header)

    def add(self, pixels: torch.Tensor, pts: int, duration: int) -> None:
        """Encode one ``(3, H, W)`` uint8 RGB frame (any device) shown at ``pts`` for ``duration`` time-base units."""
        frame = self._to_video_frame(pixels)
        frame.pts = pts
        frame.time_base = self.settings.time_base
        self._durations[pts] = duration
        self._write(self._context.encode(frame))
        self.frames += 1

    def finish(self) -> tuple[int, int]:
        """Flush the encoder and publish the file; returns (packets, bytes of packet data)."""
        self._write(self._context.encode(None))
        try:
            self._fp.close()
        except OSError as exc:
            self.abort()
            raise write_error(exc, self._file.path) from exc
        self._file.commit()
        return self._writer.packets, self._writer.bytes

    def abort(self) -> None:
        """Drop the unfinished file."""
        self._fp.close()
        self._file.discard()

    def _to_video_frame(self, pixels: torch.Tensor) -> Any:
        settings = self.settings
        rgb = pixels[:, : settings.height, : settings.width].permute(1, 2, 0).to("cpu").contiguous().numpy()  # (H, W, 3)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        return self._reformatter.reformat(
            frame,
            format=settings.pix_fmt,
            dst_colorspace=settings.colour.sws_colorspace,
            dst_color_range=settings.colour.range,
        )

    def _write(self, packets: list[Any]) -> None:
        for packet in packets:
            duration = self._durations.pop(packet.pts, 0) if packet.pts is not None else 0
            record = PacketRecord(packet.pts, packet.dts, duration or packet.duration or 0, packet.is_keyframe, bytes(packet))
            try:
                self._writer.write(record)
            except OSError as exc:
                raise write_error(exc, self._file.path) from exc
