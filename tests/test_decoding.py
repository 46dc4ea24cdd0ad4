"""Tests for stylize.io.decoding: every image is generated here with Pillow, in tmp_path."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from stylize.errors import EXIT_BAD_INPUT, StylizeError, as_flags
from stylize.io import decoding
from stylize.io.decoding import open_image, pixels_of, read_exif, to_float
from tests.conftest import noisy_picture as photo
from tests.conftest import saved

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0




def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + png_chunk(b"IEND", b"")
    )


def error_of(source, **kwargs) -> StylizeError:
    with pytest.raises(StylizeError) as info:
        open_image(source, **kwargs)
    assert "\n" not in info.value.one_line()
    return info.value


# ------------------------------------------------------------------------------------------------- files that fail cleanly


def test_missing_file(tmp_path):
    error = error_of(tmp_path / "nope.jpg")
    assert "no such file" in error.message and "nope.jpg" in error.message
    assert error.exit_code == EXIT_BAD_INPUT


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    assert "is a folder" in error_of(tmp_path / "x.jpg").message


def test_permission_denied(tmp_path, monkeypatch):
    path = saved(photo(), tmp_path / "secret.png")
    path.chmod(0)
    if IS_ROOT:  # root reads anything: inject the error the kernel gives everyone else

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(decoding, "open", refuse, raising=False)
    assert "permission denied" in error_of(path).message


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert "is empty (0 bytes)" in error_of(tmp_path / "empty.png").message


def test_text_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("shopping list: eggs, milk\n")
    error = error_of(tmp_path / "notes.jpg")
    assert error.message.endswith("is not an image")
    assert "JPEG" in error.hint


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    photo(64, 64).save(buffer, "JPEG")
    data = buffer.getvalue()
    for cut in (len(data) // 2, len(data) - 2):
        (tmp_path / "cut.jpg").write_bytes(data[:cut])
        assert "is truncated: the JPEG data ends early" in error_of(tmp_path / "cut.jpg").message


@pytest.mark.parametrize("fraction", [0.5, 0.01])
def test_truncated_png(tmp_path, fraction):
    data = png_bytes(photo(64, 64))
    (tmp_path / "cut.png").write_bytes(data[: max(40, int(len(data) * fraction))])
    assert "is truncated: the PNG data ends early" in error_of(tmp_path / "cut.png").message


@pytest.mark.parametrize("chunk", [b"IHDR", b"IDAT"])
def test_png_with_a_bad_crc(tmp_path, chunk):
    data = bytearray(png_bytes(photo()))
    start = data.index(chunk)
    (length,) = struct.unpack(">I", data[start - 4 : start])
    data[start + 4 + length] ^= 0xFF  # first byte of the chunk's CRC
    (tmp_path / "bad.png").write_bytes(bytes(data))
    error = error_of(tmp_path / "bad.png")
    assert f"the '{chunk.decode()}' chunk fails its CRC check" in error.message


@pytest.mark.parametrize("side", [50_000, 12_000])
def test_decompression_bomb_header_is_refused(tmp_path, side):
    # 50000^2 is past twice Pillow's limit (it raises), 12000^2 between once and twice (it warns): both are our errors.
    (tmp_path / "bomb.png").write_bytes(png_claiming(side, side))
    error = error_of(tmp_path / "bomb.png")
    assert "120 megapixels" in error.message and error.exit_code == EXIT_BAD_INPUT
    # The setting is named as the API spells it, and as the CLI spells it on the command line.
    assert "raise the limit with max_pixels" in error.one_line()
    assert "raise the limit with --max-pixels" in as_flags(error.marked_line())


def test_max_pixels_is_checked_before_decoding(tmp_path):
    error = error_of(saved(photo(64, 64), tmp_path / "a.png"), max_pixels=4000)
    assert "is 64x64 (0.0 megapixels), more pixels than the limit of 0.004 megapixels" in error.message
    assert open_image(tmp_path / "a.png", max_pixels=4096).size == (64, 64)


def test_our_limit_governs_over_pillows(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 64x64 as a bomb
    assert open_image(saved(photo(64, 64), tmp_path / "a.png")).size == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000  # the user's own limit is put back afterwards


def test_unsupported_mode():
    image = photo()
    image._mode = "BGR;16"  # no Pillow mode is outside our table today; pretend one appeared
    error = error_of(image, name="odd.tif")
    assert error.message == "odd.tif has colour mode 'BGR;16', which stylize cannot convert to RGB"


def test_symlink_loop(tmp_path):
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    assert "could not open" in error_of(tmp_path / "loop.jpg").message


def test_undecodable_file_name_prints(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    error = error_of(tmp_path / name)
    error.one_line().encode("utf-8")  # printable, no lone surrogates
    assert "caf\\udce9.png" in error.message


# ----------------------------------------------------------------------------------------------------- images accepted


def test_rgb_jpeg_is_plain(tmp_path):
    loaded = open_image(saved(photo(), tmp_path / "a.jpg", quality=95))
    assert (loaded.rgb.mode, loaded.alpha, loaded.source_mode, loaded.source_format, loaded.frames) == (
        "RGB",
        None,
        "RGB",
        "JPEG",
        1,
    )
    assert loaded.size == (48, 32) and not loaded.is_greyscale and loaded.exif is None


@pytest.mark.parametrize("size", [(1, 1), (1, 37), (37, 1)])
def test_tiny_and_thin_images(tmp_path, size):
    assert open_image(saved(photo(*size), tmp_path / "t.png")).size == size


def test_greyscale(tmp_path):
    grey = photo(mode="L")
    loaded = open_image(saved(grey, tmp_path / "g.png"))
    assert loaded.is_greyscale and loaded.source_mode == "L" and loaded.alpha is None
    r, g, b = loaded.rgb.split()
    assert r.tobytes() == g.tobytes() == b.tobytes() == grey.tobytes()


def test_bilevel(tmp_path):
    loaded = open_image(saved(photo(mode="L").convert("1"), tmp_path / "b.png"))
    assert loaded.source_mode == "1" and loaded.is_greyscale
    assert set(np.unique(np.asarray(loaded.rgb))) <= {0, 255}


def test_palette_with_transparency_gives_alpha(tmp_path):
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    image.info["transparency"] = 1
    loaded = open_image(saved(image, tmp_path / "p.png"))
    assert loaded.source_mode == "P" and not loaded.is_greyscale
    assert list(loaded.alpha.tobytes()) == [255, 0, 255, 0, 0, 0, 255, 255]
    assert loaded.rgb.getpixel((0, 0)) == (255, 0, 0)


def test_palette_without_transparency(tmp_path):
    loaded = open_image(saved(photo().convert("P"), tmp_path / "p.png"))
    assert loaded.alpha is None and loaded.rgb.mode == "RGB"


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    loaded = open_image(saved(cyan, tmp_path / "c.jpg", quality=100))
    assert loaded.source_mode == "CMYK" and loaded.rgb.mode == "RGB" and loaded.icc_profile is None
    assert loaded.rgb.info == {}  # nothing of the CMYK source rides along into an output
    r, g, b = loaded.rgb.getpixel((8, 8))
    assert r < 8 and g > 247 and b > 247


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 128, 257 * 100, 32767, 32768, 65535]], dtype=np.uint16)
    loaded = open_image(saved(Image.fromarray(levels), tmp_path / "deep.png"))
    assert loaded.source_mode == "I;16" and loaded.is_greyscale
    expected = np.rint(levels.astype(np.float64) * 255 / 65535).astype(np.uint8)  # [0, 0, 100, 127, 128, 255]
    assert np.array_equal(np.asarray(loaded.rgb)[..., 0], expected)


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([0.0, 0.5, 1.0], np.float32, [0, 128, 255]),  # "F" in [0, 1]
        ([0.0, 100.0, 255.0], np.float32, [0, 100, 255]),  # "F" holding 8-bit values
        ([-5.0, float("nan"), 1.0], np.float32, [0, 0, 255]),  # negatives and NaN become black
        ([0, 17, 255], np.int32, [0, 17, 255]),  # "I" holding 8-bit values
        ([0, 257 * 17, 65535], np.int32, [0, 17, 255]),  # "I" holding 16-bit values
    ],
)
def test_32_bit_tiff(tmp_path, values, dtype, expected):
    path = saved(Image.fromarray(np.array([values], dtype=dtype)), tmp_path / "deep.tif")
    loaded = open_image(path)
    assert loaded.source_mode in ("F", "I", "I;32") or loaded.source_mode.startswith("I")
    assert list(np.asarray(loaded.rgb)[0, :, 0]) == expected


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_split_off_exactly(tmp_path, mode):
    image = photo(mode=mode)
    loaded = open_image(saved(image, tmp_path / "a.png"))
    assert loaded.source_mode == mode and loaded.alpha.mode == "L"
    assert loaded.alpha.tobytes() == image.getchannel("A").tobytes()
    assert loaded.rgb.tobytes() == image.convert("RGB").tobytes()


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    loaded = open_image(tmp_path / "a.gif")
    assert loaded.frames == 3 and loaded.source_format == "GIF"
    assert loaded.rgb.getpixel((4, 4)) == (255, 0, 0)


def test_multipage_tiff_uses_first_page(tmp_path):
    pages = [Image.new("RGB", (8, 8), (10, 20, 30)), Image.new("RGB", (4, 4), (200, 0, 0))]
    pages[0].save(tmp_path / "a.tif", save_all=True, append_images=pages[1:])
    loaded = open_image(tmp_path / "a.tif")
    assert loaded.frames == 2 and loaded.size == (8, 8) and loaded.rgb.getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera Maker"
    path = saved(photo(40, 20), tmp_path / "r.jpg", exif=exif.tobytes())
    loaded = open_image(path)
    upright = ImageOps.exif_transpose(Image.open(path))
    assert loaded.size == upright.size == ((20, 40) if orientation >= 5 else (40, 20))
    assert loaded.rgb.tobytes() == upright.tobytes()
    carried = Image.Exif()
    carried.load(loaded.exif)
    assert carried[0x0112] == 1 and carried[0x010F] == "Camera Maker"


def test_exif_rotation_turns_alpha_too(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = open_image(saved(photo(40, 20, mode="RGBA"), tmp_path / "r.png", exif=exif.tobytes()))
    assert loaded.size == loaded.alpha.size == (20, 40)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow says so for the broken one; read_exif drops it
def test_read_exif_resets_orientation_and_drops_broken_exif(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    exif[0x010F] = "Camera Maker"
    carried, orientation = read_exif(Image.open(saved(photo(), tmp_path / "r.jpg", exif=exif.tobytes())))
    assert orientation == 8
    written = Image.Exif()
    written.load(carried)
    assert written[0x0112] == 1 and written[0x010F] == "Camera Maker"
    assert read_exif(photo()) == (None, 1)  # no EXIF at all

    broken = photo()
    broken.info["exif"] = b"Exif\x00\x00MM\x00*\xff\xff\xff\xff"  # the first directory's offset points past the end
    assert read_exif(broken) == (None, 1)


def test_sources_other_than_paths(tmp_path):
    data = png_bytes(photo())
    expected = open_image(saved(photo(), tmp_path / "a.png")).rgb.tobytes()

    class Pipe(io.RawIOBase):  # a stream that cannot seek, like stdin
        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    for source in (data, io.BytesIO(data), Pipe(data), Image.open(io.BytesIO(data))):
        loaded = open_image(source)
        assert loaded.rgb.tobytes() == expected and loaded.size == (48, 32)
    assert error_of(b"", name="<stdin>").message == "<stdin> is empty (0 bytes)"


def test_truncated_pillow_image_fails_cleanly():
    data = png_bytes(photo(64, 64))
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))  # opened but not decoded
    assert "truncated" in error_of(lazy).message


# ---------------------------------------------------------------------------------------------------------------- pixels


def test_pixels_of_is_chw_uint8_and_to_float_divides_by_255():
    image = photo(53, 31)
    pixels = pixels_of(image)
    assert pixels.shape == (3, 31, 53) and pixels.dtype == torch.uint8 and pixels.is_contiguous()
    assert np.array_equal(pixels.permute(1, 2, 0).numpy(), np.asarray(image))
    assert pixels.untyped_storage().nbytes() == 3 * 31 * 53  # its own buffer, not a view of a larger one

    every_level = torch.arange(256, dtype=torch.uint8).view(1, 256)
    before = every_level.clone()
    scaled = to_float(every_level)
    assert scaled.dtype == torch.float32 and scaled.shape == (1, 256)
    assert torch.equal(scaled, every_level.to(torch.float32) / 255.0)
    assert scaled[0, 0] == 0.0 and scaled[0, 255] == 1.0
    assert torch.equal(every_level, before)  # the input is not modified


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_pixels_of_refuses_other_modes(mode):
    with pytest.raises(ValueError, match="RGB"):
        pixels_of(photo().convert(mode))
