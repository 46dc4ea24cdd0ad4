"""Tests for stylize.imaging: every image is generated here with Pillow, in tmp_path."""

from __future__ import annotations

import errno
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from stylize import imaging
from stylize.errors import EXIT_BAD_INPUT, EXIT_FAILURE, StylizeError
from stylize.imaging import (
    TEMP_SUFFIX,
    LoadedImage,
    encode_image,
    finish_image,
    image_to_tensor,
    open_image,
    output_format,
    remove_stale_temporaries,
    same_file,
    save_image,
    tensor_to_image,
    write_atomic,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def photo(width: int = 48, height: int = 32, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic noisy picture."""
    channels = len(mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    assert image.mode == mode
    return image


def saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


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


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


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

        monkeypatch.setattr(imaging, "open", refuse, raising=False)
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
    assert "--max-pixels" in error.hint and "120 megapixels" in error.message
    assert error.exit_code == EXIT_BAD_INPUT


def test_max_pixels_is_checked_before_decoding(tmp_path):
    error = error_of(saved(photo(64, 64), tmp_path / "a.png"), max_pixels=4000)
    assert "is 64x64 (0.0 megapixels), more pixels than the limit of 0.004 megapixels" in error.message
    assert open_image(tmp_path / "a.png", max_pixels=4096).size == (64, 64)


def test_our_limit_governs_over_pillows(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 64x64 as a bomb
    assert open_image(saved(photo(64, 64), tmp_path / "a.png")).size == (64, 64)


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


def test_icc_profile_is_kept(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    loaded = open_image(saved(photo(), tmp_path / "icc.png", icc_profile=srgb))
    assert loaded.icc_profile == srgb
    written = Image.open(io.BytesIO(encode_image(loaded.rgb, "JPEG", icc_profile=loaded.icc_profile)))
    assert written.info["icc_profile"] == srgb
    # An RGB profile does not describe a grey picture: it is left out rather than written wrongly.
    grey = Image.open(io.BytesIO(encode_image(loaded.rgb.convert("L"), "PNG", icc_profile=srgb)))
    assert "icc_profile" not in grey.info


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


# --------------------------------------------------------------------------------------------------------------- tensors


def test_tensor_round_trip_is_exact():
    image = photo(53, 31)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 31, 53) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert tensor_to_image(tensor).tobytes() == image.tobytes()
    every_level = Image.fromarray(np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 256, 3))
    assert tensor_to_image(image_to_tensor(every_level)).tobytes() == every_level.tobytes()
    assert image_to_tensor(every_level)[0, 0, 0, 255] == 1.0


def test_tensor_to_image_rounds_clamps_and_accepts_3d():
    values = torch.tensor([0.4 / 255, 0.6 / 255, 127.5001 / 255, -1.0, 2.0, float("nan")]).view(1, 6)
    image = tensor_to_image(values.expand(3, 1, 6).to(torch.float16))
    assert list(np.asarray(image)[0, :, 0]) == [0, 1, 128, 0, 255, 0]
    with pytest.raises(ValueError):
        tensor_to_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        image_to_tensor(photo(mode="L"))


# ---------------------------------------------------------------------------------------------------- formats and output


@pytest.mark.parametrize(
    ("path", "requested", "expected"),
    [
        ("out.jpg", None, "JPEG"),
        ("OUT.JPEG", None, "JPEG"),
        ("a/b.png", None, "PNG"),
        ("x.webp", None, "WEBP"),
        ("x.tif", None, "TIFF"),
        ("x.tiff", None, "TIFF"),
        ("x.bmp", None, "BMP"),
        (None, None, "PNG"),
        ("-", None, "PNG"),
        ("-", "jpg", "JPEG"),
        ("x.png", "webp", "WEBP"),
    ],
)
def test_output_format(path, requested, expected):
    assert output_format(path, requested) == expected


@pytest.mark.parametrize("path", ["out.gif", "out", "out.jpg.txt"])
def test_output_format_unknown_extension(path):
    with pytest.raises(StylizeError) as info:
        output_format(path)
    assert ".jpg, .jpeg, .png, .webp, .tif, .tiff, .bmp" in info.value.hint
    with pytest.raises(StylizeError):
        output_format(None, "gif")


def loaded_with_alpha(tmp_path) -> tuple[Image.Image, LoadedImage]:
    source = photo(mode="RGBA")
    pixels = np.asarray(source).copy()
    pixels[0, 0, 3] = 0  # one fully transparent pixel
    source = Image.fromarray(pixels)
    return source, open_image(saved(source, tmp_path / "a.png"))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_finish_reattaches_alpha(tmp_path, fmt):
    source, loaded = loaded_with_alpha(tmp_path)
    stylized = photo(seed=1)
    out = finish_image(stylized, loaded, fmt)
    assert out.mode == "RGBA"
    assert out.getchannel("A").tobytes() == source.getchannel("A").tobytes()
    assert out.convert("RGB").tobytes() == stylized.tobytes()
    decoded = Image.open(io.BytesIO(encode_image(out, fmt)))
    assert decoded.mode == "RGBA" and decoded.getchannel("A").tobytes() == source.getchannel("A").tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "BMP"])
def test_finish_flattens_onto_white_without_alpha(tmp_path, fmt):
    _, loaded = loaded_with_alpha(tmp_path)
    out = finish_image(photo(seed=1), loaded, fmt)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    assert Image.open(io.BytesIO(encode_image(out, fmt))).mode == "RGB"


def test_finish_greyscale_only_when_asked(tmp_path):
    loaded = open_image(saved(photo(mode="LA"), tmp_path / "g.png"))
    stylized = photo(seed=2)
    assert finish_image(stylized, loaded, "JPEG").mode == "RGB"
    assert finish_image(stylized, loaded, "JPEG", keep_greyscale=True).mode == "L"
    assert finish_image(stylized, loaded, "PNG", keep_greyscale=True).mode == "LA"


def test_finish_resizes_alpha_to_a_smaller_result(tmp_path):
    _, loaded = loaded_with_alpha(tmp_path)
    out = finish_image(photo(24, 16), loaded, "PNG")
    assert out.size == (24, 16) and out.mode == "RGBA"


def test_encode_carries_exif_and_checks_arguments(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Camera Maker"
    for fmt in ("JPEG", "PNG", "WEBP"):
        decoded = Image.open(io.BytesIO(encode_image(photo(), fmt, exif=exif.tobytes())))
        assert decoded.getexif()[0x010F] == "Camera Maker", fmt
    with pytest.raises(StylizeError, match="quality must be between 1 and 100"):
        encode_image(photo(), "JPEG", quality=0)
    with pytest.raises(StylizeError, match="too large for WEBP"):
        encode_image(Image.new("RGB", (16_384, 1)), "WEBP")
    with pytest.raises(StylizeError, match="cannot write GIF"):
        encode_image(photo(), "GIF")


def test_jpeg_quality_is_used():
    small = len(encode_image(photo(), "JPEG", quality=10))
    assert small < len(encode_image(photo(), "JPEG", quality=95))


# -------------------------------------------------------------------------------------------------------- atomic writes


def test_write_atomic_writes_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "out.png"
    assert write_atomic(b"first", target) == target and target.read_bytes() == b"first"
    with pytest.raises(StylizeError) as info:
        write_atomic(b"second", target)
    assert info.value.message.endswith("out.png exists; pass --overwrite to replace it")
    assert target.read_bytes() == b"first"
    write_atomic(b"second", target, overwrite=True)
    assert target.read_bytes() == b"second"
    assert no_temporaries(tmp_path)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_atomic_never_clobbers_a_file_that_appears_meanwhile(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    real_link = os.link

    def racing_link(src, dst):
        Path(dst).write_bytes(b"someone else's")  # another process wins the race after our exists() check
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(StylizeError, match="exists; pass --overwrite"):
        write_atomic(b"ours", target)
    assert target.read_bytes() == b"someone else's" and no_temporaries(tmp_path)


def test_write_atomic_without_hard_links_falls_back_to_rename(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    write_atomic(b"data", tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == b"data" and no_temporaries(tmp_path)


@pytest.mark.parametrize("failure", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_write_atomic_removes_its_temporary_file_on_failure(tmp_path, monkeypatch, failure):
    target = saved(photo(), tmp_path / "out.png")
    before = target.read_bytes()

    def broken_replace(src, dst):
        assert Path(src).name.startswith(".out.png.") and Path(src).exists()
        raise failure

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises((StylizeError, KeyboardInterrupt)) as info:
        write_atomic(b"new", target, overwrite=True)
    if isinstance(failure, OSError):
        assert info.value.message == f"could not write {target}: Input/output error"
        assert info.value.exit_code == EXIT_FAILURE
    assert target.read_bytes() == before and no_temporaries(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_write_atomic_disk_full(tmp_path, monkeypatch, code):
    def full(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StylizeError) as info:
        write_atomic(b"data", tmp_path / "out.png")
    assert info.value.message.startswith("disk full while writing") and info.value.exit_code == EXIT_FAILURE
    assert not (tmp_path / "out.png").exists() and no_temporaries(tmp_path)


def test_write_atomic_file_size_limit_for_real(tmp_path):
    # A real EFBIG from the kernel: a child process whose file-size limit is 1000 bytes writes 100 kB.
    script = (
        "import resource, sys\n"
        "from stylize.imaging import write_atomic\n"
        "from stylize.errors import StylizeError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "try:\n"
        "    write_atomic(b'x' * 100_000, sys.argv[1])\n"
        "except StylizeError as e:\n"
        "    print(e.exit_code, e.message)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "big.png")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.startswith("1 disk full while writing"), result.stderr
    assert os.listdir(tmp_path) == []


def test_save_image_encoder_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, fp, format=None, **params):
        raise OSError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(StylizeError, match="could not encode the image as JPEG"):
        save_image(photo(), tmp_path / "out.jpg")
    assert os.listdir(tmp_path) == []


def test_save_image_png_encoder_failure_leaves_nothing(tmp_path, monkeypatch):
    import stylize.png

    def broken_encode(image, **metadata):
        raise OSError("encoder exploded")

    monkeypatch.setattr(stylize.png, "encode_png", broken_encode)
    with pytest.raises(StylizeError, match="could not encode the image as PNG: encoder exploded"):
        save_image(photo(), tmp_path / "out.png")
    assert os.listdir(tmp_path) == []


def test_save_image_round_trip(tmp_path):
    image = photo()
    path = save_image(image, tmp_path / "out.png")
    assert Image.open(path).tobytes() == image.tobytes()
    with pytest.raises(StylizeError, match="exists"):
        save_image(image, path)
    save_image(photo(seed=3), path, overwrite=True)
    assert Image.open(path).tobytes() == photo(seed=3).tobytes()


def test_write_into_missing_folder_or_through_a_file(tmp_path):
    with pytest.raises(StylizeError, match="does not exist"):
        write_atomic(b"x", tmp_path / "missing" / "out.png")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StylizeError, match="is not a folder"):
        write_atomic(b"x", tmp_path / "file" / "out.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(StylizeError, match="is a folder"):
        write_atomic(b"x", tmp_path / "dir.png", overwrite=True)


def test_write_into_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if IS_ROOT:  # root writes anywhere: inject what a read-only mount answers
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                raise OSError(errno.EROFS, "Read-only file system", path)
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    try:
        with pytest.raises(StylizeError) as info:
            write_atomic(b"x", folder / "out.png")
        assert "is read-only or not yours" in info.value.message
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_very_long_output_name(tmp_path):
    name = "é" * 120 + ".png"  # 244 bytes: fine for the file, too long for a naive temporary name
    assert write_atomic(b"data", tmp_path / name).read_bytes() == b"data"


# ---------------------------------------------------------------------------------------------------------------- paths


def test_same_file(tmp_path):
    a = saved(photo(), tmp_path / "a.png")
    (tmp_path / "link.png").symlink_to(a)
    os.link(a, tmp_path / "hard.png")
    (tmp_path / "sub").mkdir()
    assert same_file(a, tmp_path / "link.png") and same_file(a, tmp_path / "hard.png")
    assert same_file(a, tmp_path / "sub" / ".." / "a.png")
    assert not same_file(a, saved(photo(), tmp_path / "b.png"))
    assert same_file(tmp_path / "new.png", tmp_path / "sub" / ".." / "new.png")  # neither exists yet
    assert not same_file(a, tmp_path / "new.png")
    assert not same_file("-", "-")


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f".out.png.abcd1234{TEMP_SUFFIX}", tmp_path / "sub" / f".x.jpg.00ff00ff{TEMP_SUFFIX}"]
    keep = [tmp_path / "out.png", tmp_path / ".hidden", tmp_path / f"visible{TEMP_SUFFIX}"]
    for path in stale + keep:
        path.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path, recursive=False) == 1
    assert remove_stale_temporaries(tmp_path) == 1
    assert all(path.exists() for path in keep) and not any(path.exists() for path in stale)


def test_write_atomic_removes_what_a_killed_write_of_the_same_file_left(tmp_path):
    from stylize.imaging import write_atomic

    stale = tmp_path / ".out.png.deadbeef.stylize-tmp"  # a kill between write and rename leaves this
    other = tmp_path / ".out.png.x.deadbeef.stylize-tmp"  # belongs to out.png.x: not ours to remove
    unrelated = tmp_path / ".out.png.notahexid.stylize-tmp"
    for path in (stale, other, unrelated):
        path.write_bytes(b"half")
    write_atomic(b"whole", tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == b"whole"
    assert not stale.exists() and other.exists() and unrelated.exists()
