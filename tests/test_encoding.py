"""Tests for stylize.io.encoding: the network's result back into the photo's form, and a format's bytes."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from stylize.api import Stylizer
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.io import encoding
from stylize.io.decoding import open_image, pixels_of, to_float
from stylize.io.encoding import OUTPUT_EXTENSIONS, encode_image, finish_image, output_format, quantize, tensor_to_image
from stylize.io.files import write_atomic
from tests.conftest import noisy_picture as photo
from tests.conftest import saved
from tests.robustness_corpus import tiny_model

# --------------------------------------------------------------------------------------------------------------- tensors


def test_tensor_round_trip_is_exact():
    image = photo(53, 31)
    tensor = to_float(pixels_of(image))
    assert tensor.shape == (3, 31, 53) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert tensor_to_image(tensor).tobytes() == image.tobytes()
    assert tensor_to_image(tensor.unsqueeze(0)).tobytes() == image.tobytes()
    every_level = Image.fromarray(np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 256, 3))
    assert tensor_to_image(to_float(pixels_of(every_level))).tobytes() == every_level.tobytes()


def test_tensor_to_image_rounds_clamps_and_accepts_3d():
    values = torch.tensor([0.4 / 255, 0.6 / 255, 127.5001 / 255, -1.0, 2.0, float("nan")]).view(1, 6)
    image = tensor_to_image(values.expand(3, 1, 6).to(torch.float16))
    assert list(np.asarray(image)[0, :, 0]) == [0, 1, 128, 0, 255, 0]
    with pytest.raises(ValueError):
        tensor_to_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        tensor_to_image(torch.zeros(1, 4, 4))


def test_quantize_is_hwc_uint8_on_the_cpu_and_leaves_its_input_alone():
    values = torch.tensor([0.0, 0.25, 1.0, 1.5]).view(1, 1, 4).expand(3, 2, 4).contiguous()
    before = values.clone()
    pixels = quantize(values)
    assert pixels.shape == (2, 4, 3) and pixels.dtype == torch.uint8 and pixels.device.type == "cpu"
    assert pixels[1, :, 2].tolist() == [0, 64, 255, 255]
    assert torch.equal(values, before)


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
        ("x.png", ".TIF", "TIFF"),
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


def test_every_output_extension_is_written_and_read_back_as_its_format(tmp_path):
    for extension, fmt in OUTPUT_EXTENSIONS.items():
        data = encode_image(photo(), output_format(f"out{extension}"))
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.format == fmt and decoded.size == (48, 32), extension


def with_alpha() -> Image.Image:
    source = photo(mode="RGBA")
    pixels = np.asarray(source).copy()
    pixels[0, 0, 3] = 0  # one fully transparent pixel
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_finish_reattaches_alpha(fmt):
    source = with_alpha()
    stylized = photo(seed=1)
    out = finish_image(stylized, source.getchannel("A"), fmt)
    assert out.mode == "RGBA"
    assert out.getchannel("A").tobytes() == source.getchannel("A").tobytes()
    assert out.convert("RGB").tobytes() == stylized.tobytes()
    decoded = Image.open(io.BytesIO(encode_image(out, fmt)))
    assert decoded.mode == "RGBA" and decoded.getchannel("A").tobytes() == source.getchannel("A").tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "BMP"])
def test_finish_flattens_onto_white_without_alpha(fmt):
    out = finish_image(photo(seed=1), with_alpha().getchannel("A"), fmt)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    assert Image.open(io.BytesIO(encode_image(out, fmt))).mode == "RGB"


def test_finish_without_alpha_is_the_picture():
    stylized = photo(seed=1)
    out = finish_image(stylized, None, "PNG")
    assert out.mode == "RGB" and out.tobytes() == stylized.tobytes()


def test_finish_greyscale_only_when_asked(tmp_path):
    loaded = open_image(saved(photo(mode="LA"), tmp_path / "g.png"))
    stylized = photo(seed=2)
    assert finish_image(stylized, loaded.alpha, "JPEG").mode == "RGB"
    assert finish_image(stylized, loaded.alpha, "JPEG", keep_greyscale=True).mode == "L"
    assert finish_image(stylized, loaded.alpha, "PNG", keep_greyscale=True).mode == "LA"
    assert finish_image(stylized, None, "PNG", keep_greyscale=True).mode == "L"


def test_finish_resizes_alpha_to_a_smaller_result():
    out = finish_image(photo(24, 16), with_alpha().getchannel("A"), "PNG")
    assert out.size == (24, 16) and out.mode == "RGBA"


def test_encode_flattens_alpha_for_formats_without_it():
    source = Image.new("RGBA", (48, 32), (10, 20, 30, 255))
    source.paste((10, 20, 30, 0), (0, 0, 16, 16))  # a transparent corner of whole JPEG blocks
    for fmt in ("JPEG", "BMP"):
        decoded = Image.open(io.BytesIO(encode_image(source, fmt)))
        assert decoded.mode == "RGB", fmt
        corner, rest = np.asarray(decoded, dtype=np.int16)[:16, :16], np.asarray(decoded, dtype=np.int16)[16:, 16:]
        tolerance = 0 if fmt == "BMP" else 6  # JPEG: its rounding and chroma subsampling only
        assert np.abs(corner - 255).max() <= tolerance and np.abs(rest - (10, 20, 30)).max() <= tolerance, fmt


def test_icc_profile_is_carried_where_it_matches(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    loaded = open_image(saved(photo(), tmp_path / "icc.png", icc_profile=srgb))
    assert loaded.icc_profile == srgb
    for fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        written = Image.open(io.BytesIO(encode_image(loaded.rgb, fmt, icc_profile=loaded.icc_profile)))
        assert written.info["icc_profile"] == srgb, fmt
    # An RGB profile does not describe a grey picture: it is left out rather than written wrongly.
    grey = Image.open(io.BytesIO(encode_image(loaded.rgb.convert("L"), "PNG", icc_profile=srgb)))
    assert "icc_profile" not in grey.info


def test_only_the_arguments_decide_the_metadata():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = photo()
    image.info["icc_profile"] = srgb  # what a decoded source would carry along
    for fmt in ("JPEG", "PNG"):
        assert "icc_profile" not in Image.open(io.BytesIO(encode_image(image, fmt))).info, fmt
    assert image.info["icc_profile"] == srgb  # the caller's image is not modified


def test_encode_carries_exif_and_checks_arguments():
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


def test_exif_too_large_for_jpeg_is_dropped_not_fatal():
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription: JPEG's APP1 segment holds at most 64 kB
    decoded = Image.open(io.BytesIO(encode_image(photo(), "JPEG", exif=exif.tobytes())))
    assert decoded.size == (48, 32) and 0x010E not in decoded.getexif()


def test_jpeg_quality_is_used():
    small = len(encode_image(photo(), "JPEG", quality=10))
    assert small < len(encode_image(photo(), "JPEG", quality=95))


def test_encode_then_write_atomic_round_trip(tmp_path):
    image = photo()
    path = write_atomic(encode_image(image, "PNG"), tmp_path / "out.png")
    assert Image.open(path).tobytes() == image.tobytes()
    with pytest.raises(StylizeError, match="exists"):
        write_atomic(encode_image(image, "PNG"), path)
    write_atomic(encode_image(photo(seed=3), "PNG"), path, overwrite=True)
    assert Image.open(path).tobytes() == photo(seed=3).tobytes()


# ------------------------------------------------------------------------------------------------------ encoder failure


@pytest.fixture(scope="module")
def tiny_stylizer(tmp_path_factory) -> Stylizer:
    return Stylizer.load(tiny_model(tmp_path_factory.mktemp("model")), device="cpu", compile="never")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_encoder_failure_is_a_clean_error_and_writes_nothing(tmp_path, monkeypatch, tiny_stylizer, fmt):
    source = saved(photo(), tmp_path / "in.bmp")

    def broken(*args, **kwargs):
        raise OSError("encoder exploded")

    if fmt == "PNG":  # every PNG goes through stylize.io.png
        monkeypatch.setattr(encoding, "encode_png", broken)
    else:
        monkeypatch.setattr(Image.Image, "save", broken)
    target = tmp_path / f"out.{fmt.lower()}"
    with pytest.raises(StylizeError, match=f"could not encode the image as {fmt}: encoder exploded") as info:
        tiny_stylizer.apply_file(source, target)
    assert info.value.exit_code == EXIT_FAILURE
    assert os.listdir(tmp_path) == ["in.bmp"]
