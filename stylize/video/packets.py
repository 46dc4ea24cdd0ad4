"""The file a segment's encoded video is kept in until the final file is assembled.

A plain record of the encoder's packets, not a media container: every container tried for this (NUT, Matroska, MP4)
rewrites something on the way (time base, a shift of negative timestamps, Annex B to length-prefixed NAL units), and
the joined file must hold exactly the packets the encoder made. Layout::

    b"STYLIZE-PACKETS\\n"  u32 header length  header (JSON: codec, time base, extradata as hex)
    then per packet: int64 pts, int64 dts, int64 duration, uint8 keyframe, uint32 size, size bytes of data

All integers little-endian; a missing pts or dts is stored as INT64_MIN (FFmpeg's AV_NOPTS_VALUE).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

_MAGIC = b"STYLIZE-PACKETS\n"
_RECORD = struct.Struct("<qqqBI")
_NO_TIMESTAMP = -(2**63)


@dataclass(frozen=True)
class PacketRecord:
    pts: int | None
    dts: int | None
    duration: int
    keyframe: bool
    data: bytes


@dataclass(frozen=True)
class PacketFileHeader:
    codec: str  # FFmpeg codec name of the data, e.g. "h264"
    time_base: Fraction  # unit of pts, dts and duration
    extradata: bytes  # the encoder's out-of-band headers (H.264 SPS/PPS); empty when it has none


class PacketFileWriter:
    """Appends packets to an open binary file after writing the header."""

    def __init__(self, fp: BinaryIO, header: PacketFileHeader) -> None:
        self._fp = fp
        text = json.dumps(
            {"codec": header.codec, "time_base": str(header.time_base), "extradata": header.extradata.hex()}
        ).encode()
        fp.write(_MAGIC + struct.pack("<I", len(text)) + text)
        self.packets = 0
        self.bytes = 0

    def write(self, record: PacketRecord) -> None:
        pts = _NO_TIMESTAMP if record.pts is None else record.pts
        dts = _NO_TIMESTAMP if record.dts is None else record.dts
        self._fp.write(_RECORD.pack(pts, dts, record.duration, int(record.keyframe), len(record.data)))
        self._fp.write(record.data)
        self.packets += 1
        self.bytes += len(record.data)


def read_header(path: Path) -> PacketFileHeader:
    with open(path, "rb") as fp:
        return _read_header(fp, path)


def read_packets(path: Path) -> Iterator[PacketRecord]:
    """The packets of a file :class:`PacketFileWriter` wrote, in the order they were written."""
    with open(path, "rb") as fp:
        _read_header(fp, path)
        while True:
            head = fp.read(_RECORD.size)
            if not head:
                return
            if len(head) < _RECORD.size:
                raise ValueError(f"{path} ends inside a packet record")
            pts, dts, duration, keyframe, size = _RECORD.unpack(head)
            data = fp.read(size)
            if len(data) < size:
                raise ValueError(f"{path} ends inside a packet's data")
            yield PacketRecord(
                None if pts == _NO_TIMESTAMP else pts, None if dts == _NO_TIMESTAMP else dts, duration, bool(keyframe), data
            )


def _read_header(fp: BinaryIO, path: Path) -> PacketFileHeader:
    if fp.read(len(_MAGIC)) != _MAGIC:
        raise ValueError(f"{path} is not a stylize packet file")
    (length,) = struct.unpack("<I", fp.read(4))
    fields = json.loads(fp.read(length))
    return PacketFileHeader(fields["codec"], Fraction(fields["time_base"]), bytes.fromhex(fields["extradata"]))
