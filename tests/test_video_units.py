"""stylize.video's parts one by one: orientation, colour, sizes, packet files, threads, the work folder, PyAV missing."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import math
import struct
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from stylize.errors import StylizeError
from stylize.video.colour import RANGE_FULL, RANGE_LIMITED, resolve_colour
from stylize.video.decode import scaled_size
from stylize.video.orientation import from_display_matrix, from_rotate_tag
from stylize.video.packets import PacketFileHeader, PacketFileWriter, PacketRecord, read_header, read_packets
from stylize.video.workdir import SegmentRecord, WorkFolder
from stylize.video.worker import Consumer, Producer


def display_matrix(counterclockwise: float, hflip: bool = False) -> bytes:
    """FFmpeg's av_display_rotation_set(-counterclockwise), optionally then av_display_matrix_flip(hflip)."""
    radians = math.radians(counterclockwise)
    c, s = math.cos(radians), math.sin(radians)
    m = [round(c * 65536), round(-s * 65536), 0, round(s * 65536), round(c * 65536), 0, 0, 0, 1 << 30]
    if hflip:
        m[0], m[3] = -m[0], -m[3]  # negate the first column
    return struct.pack("=9i", *m)


def test_display_matrix_turns_pixels_as_ffmpeg_shows_them() -> None:
    coded = np.arange(6).reshape(2, 3, 1)  # [[0 1 2] [3 4 5]]
    turned = {
        0: [[0, 1, 2], [3, 4, 5]],
        90: [[2, 5], [1, 4], [0, 3]],  # shown turned a quarter counterclockwise
        180: [[5, 4, 3], [2, 1, 0]],
        270: [[3, 0], [4, 1], [5, 2]],
    }
    for degrees, expected in turned.items():
        orientation = from_display_matrix(display_matrix(degrees))
        assert orientation.apply(coded)[..., 0].tolist() == expected, degrees
        assert orientation.upright_size(3, 2) == ((2, 3) if degrees in (90, 270) else (3, 2))
    assert from_display_matrix(display_matrix(0, hflip=True)).apply(coded)[..., 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert from_rotate_tag("90").apply(coded)[..., 0].tolist() == turned[270]  # the old tag counts clockwise
    assert from_display_matrix(b"").steps == () and from_rotate_tag("sideways").steps == ()


def test_colour_guesses_like_players() -> None:
    hd = resolve_colour(2, 0, 2, 2, pix_fmt="yuv420p", is_rgb=False, width=1920, height=1080)
    sd = resolve_colour(None, None, None, None, pix_fmt="yuv420p", is_rgb=False, width=720, height=576)
    jpeg = resolve_colour(5, 0, 5, 6, pix_fmt="yuvj420p", is_rgb=False, width=640, height=480)
    assert (hd.matrix, hd.range, hd.guessed) == (1, RANGE_LIMITED, True)
    assert (sd.matrix, sd.sws_colorspace, sd.guessed) == (6, 5, True)
    assert (jpeg.matrix, jpeg.range, jpeg.primaries, jpeg.transfer, jpeg.guessed) == (5, RANGE_FULL, 5, 6, False)
    assert resolve_colour(9, 2, 9, 16, pix_fmt="yuv420p10le", is_rgb=False, width=3840, height=2160).sws_colorspace == 9


def test_scaled_size_keeps_aspect_in_even_numbers() -> None:
    assert scaled_size(1920, 1080, 0) == (1920, 1080)
    assert scaled_size(1920, 1080, 640) == (640, 360)
    assert scaled_size(1080, 1920, 853) == (480, 852)
    assert scaled_size(65, 49, 100) == (65, 49)  # within the limit: kept, odd or not


def test_packet_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "segment.packets"
    records = [PacketRecord(0, -512, 512, True, b"\x00\x00\x01key"), PacketRecord(None, None, 0, False, b"")]
    with open(path, "wb") as fp:
        writer = PacketFileWriter(fp, PacketFileHeader("h264", Fraction(1, 15360), b"\x01avcC"))
        for record in records:
            writer.write(record)
    assert read_header(path) == PacketFileHeader("h264", Fraction(1, 15360), b"\x01avcC")
    assert list(read_packets(path)) == records
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="ends inside"):
        list(read_packets(path))


def test_producer_runs_ahead_and_hands_over_errors() -> None:
    made: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(1000):
            made.append(n)
            yield n

    producer = Producer(numbers, maxsize=3, name="test")
    assert next(iter(producer)) == 0
    producer.close()  # stops the thread although 997 numbers are left
    assert len(made) < 10

    def failing() -> Iterator[int]:
        yield 1
        raise StylizeError("bad frame")

    with pytest.raises(StylizeError, match="bad frame"):
        list(Producer(failing, maxsize=2, name="test"))


def test_consumer_hands_over_errors_and_aborts() -> None:
    handled: list[int] = []
    consumer: Consumer[int] = Consumer(handled.append, maxsize=2, name="test")
    for n in range(5):
        consumer.put(n)
    consumer.finish()
    assert handled == [0, 1, 2, 3, 4]

    def explode(n: int) -> None:
        raise OSError(28, "No space left on device")

    failing: Consumer[int] = Consumer(explode, maxsize=1, name="test")
    with pytest.raises(OSError, match="No space"):
        for n in range(100):
            failing.put(n)
        failing.finish()

    release = threading.Event()
    slow: Consumer[int] = Consumer(lambda n: release.wait(5), maxsize=1, name="test")
    slow.put(1)
    release.set()
    slow.abort()  # returns without handling what is queued


def test_work_folder_reuses_only_the_same_identity(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    work = WorkFolder.open(target, {"source": 1})
    work.segment_path(0).write_bytes(b"12345")
    work.add_segment(SegmentRecord(0, 5, 0, 4, 5, 5, 5), {"mean": torch.ones(2)})
    work.segment_path(1).write_bytes(b"123")
    work.add_segment(SegmentRecord(1, 3, 5, 7, 8, 3, 3), {})
    with pytest.raises(StylizeError, match="another stylize run is writing"):
        WorkFolder.open(target, {"source": 1})
    work.close()

    work.segment_path(1).write_bytes(b"12")  # a damaged file: it and everything after it are redone
    again = WorkFolder.open(target, {"source": 1})
    assert [s.index for s in again.segments] == [0] and torch.equal(again.load_state(0)["mean"], torch.ones(2))
    again.close()

    other = WorkFolder.open(target, {"source": 2})
    assert other.segments == [] and other.discarded_reason and not other.segment_path(0).exists()
    other.remove()
    assert not other.folder.exists()


def test_without_pyav_the_package_imports_and_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # "import av" now raises ImportError
    for name in [name for name in sys.modules if name.startswith("stylize.video")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    video = importlib.import_module("stylize.video")
    with pytest.raises(StylizeError) as caught:
        video.transcode("a.mp4", "b.mp4")
    assert str(caught.value) == "video files need PyAV, which is not installed (install it with: pip install 'stylize[video]')"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt(M_PERTURB) is glibc's")
def test_segments_encode_the_same_whatever_the_heap_holds(tmp_path: Path) -> None:
    """x264's AVX-512 code reads memory it never wrote (see stylize.video.encode): encode the same frames while glibc
    fills fresh allocations with different bytes, and compare. (Without the fix this fails on CPUs with AVX-512.)"""
    pytest.importorskip("av")
    from stylize.config import VideoOptions
    from stylize.video.colour import Colour
    from stylize.video.encode import SegmentEncoder, encoder_settings
    from stylize.video.settings import plan_output

    plan = plan_output(Path("x.mp4"), VideoOptions())
    settings = encoder_settings(
        plan, (192, 144), time_base=Fraction(1, 15360), frame_rate=Fraction(30), colour=Colour(6, 1), sample_aspect_ratio=None, threads=4
    )
    y, x = torch.meshgrid(torch.arange(144), torch.arange(192), indexing="ij")
    frames = []
    for i in range(10):  # moving gradients and a moving disc: the content that showed the difference
        disc = ((y - 72 - 3 * i) ** 2 + (x - 96 - 4 * i) ** 2 < 36**2).to(torch.uint8)
        rgb = torch.stack([(x * 3 + i * 7) % 256, (y * 2 + i * 5) % 256, ((x + y) // 3 + i * 11) % 256])
        frames.append((rgb * (1 - disc) + 200 * disc).to(torch.uint8))
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    m_perturb = -6
    encoded = set()
    try:
        for fill in (165, 90, 0):
            mallopt(m_perturb, fill)
            encoder = SegmentEncoder(settings, tmp_path / "segment.packets")
            for index, frame in enumerate(frames):
                encoder.add(frame, index * 512, 512)
            encoder.finish()
            encoded.add((tmp_path / "segment.packets").read_bytes())
    finally:
        mallopt(m_perturb, 0)
    assert len(encoded) == 1
