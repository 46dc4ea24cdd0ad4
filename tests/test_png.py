"""The fast PNG writer: Pillow reads back the exact pixels and metadata, the file is valid, and it is not much larger."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from stylize.imaging import _png_checksum_error, encode_image
from stylize.png import average_filter, encode_png


def _noisy(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, width * height).reshape(height, width)[..., None]
    pixels = np.clip(base + rng.normal(0, 20, (height, width, len(mode))), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if len(mode) == 1 else pixels, mode)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (13, 1), (37, 300)])  # 300 rows: more than one filtered block
def test_pillow_reads_back_the_same_pixels(mode, size):
    image = _noisy(mode, *size)
    data = encode_png(image)
    assert _png_checksum_error(io.BytesIO(data), "out.png") is None  # every chunk's CRC, and IEND present
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
    ours = Image.open(io.BytesIO(encode_png(image, exif=exif.tobytes(), icc_profile=icc)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes(), icc_profile=icc)
    pillows = Image.open(buffer)
    assert ours.info["icc_profile"] == pillows.info["icc_profile"] == icc
    assert dict(ours.getexif()) == dict(pillows.getexif()) == {0x010F: "Maker", 0x0112: 1}


def test_other_modes_are_left_to_pillow():
    assert encode_png(Image.new("P", (4, 4))) is None
    assert encode_png(Image.new("I;16", (4, 4))) is None
    # encode_image still writes them (through Pillow)
    decoded = Image.open(io.BytesIO(encode_image(Image.new("I;16", (4, 4), 300), "PNG")))
    assert decoded.size == (4, 4)


def test_size_close_to_pillows_adaptive_filters():
    image = _noisy("RGB", 256, 192, seed=3)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_type=zlib.Z_RLE)
    ours = len(encode_png(image))
    assert ours <= 1.05 * len(buffer.getvalue())
