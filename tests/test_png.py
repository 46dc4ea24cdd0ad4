"""The fast PNG writer: Pillow reads back the exact pixels and metadata, the file is valid, and it is not much larger."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from stylize.io.decoding import open_image
from stylize.io.encoding import encode_image
from stylize.io.png import average_filter, encode_png


def _noisy(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, width * height).reshape(height, width)[..., None]
    pixels = np.clip(base + rng.normal(0, 20, (height, width, len(mode))), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if len(mode) == 1 else pixels, mode)


def chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, after checking its signature, every chunk's CRC and that nothing follows IEND."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert len(body) == length and zlib.crc32(kind + body) == crc, kind
        kinds.append(kind)
        position += 12 + length
    assert position == len(data)
    return kinds


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (13, 1), (37, 300)])  # 300 rows: more than one filtered block
def test_pillow_reads_back_the_same_pixels(mode, size):
    image = _noisy(mode, *size)
    data = encode_png(image)
    kinds = chunks(data)
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}
    assert open_image(data).size == size  # stylize's own reader checks every CRC too
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    assert decoded.mode == mode and decoded.size == size
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_average_filter_known_answer():
    # one RGB row of two pixels under a row of 10s: byte - floor((left + up) / 2), left of the first pixel is 0
    rows = np.array([[100, 50, 0, 104, 56, 2]], dtype=np.uint8)
    above = np.full((1, 6), 10, dtype=np.uint8)
    filtered = np.frombuffer(average_filter(rows, above, 3), dtype=np.uint8)
    assert filtered.tolist() == [3, 100 - 5, 50 - 5, (0 - 5) % 256, 104 - 55, 56 - 30, 2 - 5 + 256]


def test_metadata_matches_what_pillow_writes():
    image = _noisy("RGB", 40, 30)
    exif = Image.Exif()
    exif[0x010F] = "Maker"  # Make
    exif[0x0112] = 1  # Orientation
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode_png(image, exif=exif.tobytes(), icc_profile=icc)
    assert chunks(data) == [b"IHDR", b"iCCP", b"eXIf", b"IDAT", b"IEND"]  # metadata before the pixels, as the spec asks
    ours = Image.open(io.BytesIO(data))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes(), icc_profile=icc)
    pillows = Image.open(buffer)
    assert ours.info["icc_profile"] == pillows.info["icc_profile"] == icc
    assert dict(ours.getexif()) == dict(pillows.getexif()) == {0x010F: "Maker", 0x0112: 1}


@pytest.mark.parametrize("mode", ["P", "I;16", "1", "CMYK"])
def test_other_modes_are_refused_and_encode_image_converts_them(mode):
    image = _noisy("RGB", 5, 4).convert(mode)
    with pytest.raises(ValueError, match="L, LA, RGB and RGBA"):
        encode_png(image)
    decoded = Image.open(io.BytesIO(encode_image(image, "PNG")))
    assert decoded.mode == "RGB" and decoded.tobytes() == image.convert("RGB").tobytes()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_encode_image_writes_png_with_this_writer(mode):
    image = _noisy(mode, 20, 10)
    assert encode_image(image, "PNG") == encode_png(image)


def test_size_close_to_pillows_adaptive_filters():
    image = _noisy("RGB", 256, 192, seed=3)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_type=zlib.Z_RLE)
    ours = len(encode_png(image))
    assert ours <= 1.05 * len(buffer.getvalue())
