"""Any painting as the style: --style-image through the one pipeline, blends, strength, save-style, work size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylize.api import Stylizer
from stylize.errors import StylizeError
from stylize.network.modelfile import load_model
from stylize.styles import MAX_CROPS, painting_crops, parse_paintings
from tests.conftest import invoke, make_photo, run_cli

BUNDLED_STYLES = Path(__file__).resolve().parent.parent / "stylize" / "data" / "styles"
WAVE, STARRY = str(BUNDLED_STYLES / "wave.jpg"), str(BUNDLED_STYLES / "starry_night.jpg")


@pytest.fixture(scope="module")
def arbitrary() -> Stylizer:
    return Stylizer.load("arbitrary", device="cpu", precision="fp32", compile="never")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return make_photo(tmp_path_factory.mktemp("photo") / "p.png", (64, 48))


def test_a_painting_gives_a_style_and_another_painting_another(arbitrary, photo):
    wave = np.asarray(arbitrary.apply(photo, style_image=WAVE), dtype=np.int16)
    starry = np.asarray(arbitrary.apply(photo, style_image=STARRY), dtype=np.int16)
    plain = np.asarray(Image.open(photo).convert("RGB"), dtype=np.int16)
    assert wave.shape == starry.shape == plain.shape
    assert np.abs(wave - starry).mean() > 10 and np.abs(wave - plain).mean() > 10


def test_blending_paintings_mixes_their_embeddings(arbitrary, photo):
    wave, starry = arbitrary.painting_embedding(WAVE), arbitrary.painting_embedding(STARRY)
    mixed = arbitrary.painting_embedding({WAVE: 3.0, STARRY: 1.0})  # weights are normalised
    torch.testing.assert_close(mixed, 0.75 * wave + 0.25 * starry)
    assert parse_paintings([f"{WAVE}:3", STARRY]) == {WAVE: 0.75, STARRY: 0.25}
    half = arbitrary.apply(photo, style_image={WAVE: 1, STARRY: 1})
    assert half.size == (64, 48)


def test_strength_moves_the_embedding_toward_the_photos_own_and_pixels_blend_when_asked(arbitrary, photo):
    full = np.asarray(arbitrary.apply(photo, style_image=WAVE), dtype=np.int16)
    none = np.asarray(arbitrary.apply(photo, style_image=WAVE, strength=0.0), dtype=np.int16)
    pixels = np.asarray(arbitrary.apply(photo, style_image=WAVE, strength=0.0, blend="pixels"), dtype=np.int16)
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=np.int16)
    assert np.array_equal(pixels, original)  # a pixel blend at 0 is the photo itself
    assert np.abs(none - original).mean() > 2  # the photo's own style is still a stylization
    assert np.abs(none - full).mean() > 5
    tensor = torch.rand(2, 3, 32, 40)  # tensors take the per-photo code too
    assert arbitrary.apply(tensor, style_image=WAVE, strength=0.5).shape == (2, 3, 32, 40)


def test_styles_and_paintings_do_not_mix_up(arbitrary, photo):
    with pytest.raises(StylizeError, match="takes the style of a painting"):
        arbitrary.apply(photo)
    with pytest.raises(StylizeError, match="not both"):
        arbitrary.apply(photo, style_image=WAVE, style="3")
    fixed = Stylizer.load("multistyle26", device="cpu", compile="never")
    with pytest.raises(StylizeError, match="fixed set of styles"):
        fixed.apply(photo, style_image=WAVE)
    with pytest.raises(StylizeError, match="blend=embedding"):
        fixed.apply(photo, blend="embedding", strength=0.5)


def test_bad_painting_files_are_one_line_errors(arbitrary, photo, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(StylizeError, match="painting .*broken.jpg"):
        arbitrary.apply(photo, style_image=str(broken))
    tiny = make_photo(tmp_path / "tiny.png", (40, 200))
    with pytest.raises(StylizeError, match="too small"):
        arbitrary.apply(photo, style_image=str(tiny))
    with pytest.raises(StylizeError, match="no such file"):
        arbitrary.apply(photo, style_image=str(tmp_path / "missing.jpg"))
    with pytest.raises(StylizeError, match="weight"):
        arbitrary.apply(photo, style_image={WAVE: -1})


def test_wide_paintings_are_seen_as_several_squares():
    assert painting_crops(Image.new("RGB", (300, 300))).shape == (1, 3, 256, 256)
    wide = painting_crops(Image.new("RGB", (1200, 300)))  # 1024 x 256 after scaling: 4 squares
    assert wide.shape == (MAX_CROPS, 3, 256, 256)
    tall = Image.new("RGB", (100, 200))  # 256 x 512 after scaling: 2 squares
    tall.paste((255, 0, 0), (0, 0, 100, 100))  # red on top, black below: the two squares differ
    crops = painting_crops(tall)
    assert crops.shape == (2, 3, 256, 256) and crops[0, 0].mean() > 0.9 and crops[1, 0].mean() < 0.1


def test_save_style_writes_an_ordinary_model_that_gives_the_same_pixels(arbitrary, photo, tmp_path):
    path = arbitrary.save_style(tmp_path / "wave_style.safetensors", WAVE, name="my wave")
    model = load_model(path)
    assert model.styles == ["my wave"] and model.embedding_size == 0 and model.config.num_styles == 1
    assert model.provenance["paintings"][0]["name"] == "wave.jpg" and len(model.provenance["paintings"][0]["sha256"]) == 64
    assert str(tmp_path) not in json.dumps(model.provenance)  # names and hashes, never paths
    saved = Stylizer.load(path, device="cpu", precision="fp32", compile="never")
    assert np.array_equal(np.asarray(saved.apply(photo)), np.asarray(arbitrary.apply(photo, style_image=WAVE)))
    with pytest.raises(StylizeError, match="exists"):
        arbitrary.save_style(path, WAVE)


def test_save_style_by_name_goes_to_the_user_models_folder(tmp_path, photo, monkeypatch):
    monkeypatch.setenv("STYLIZE_HOME", str(tmp_path / "home"))
    result = invoke("save-style", "monet_like", "--style-image", STARRY)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "home" / "models" / "monet_like.safetensors").is_file()
    out = tmp_path / "o.png"
    applied = invoke("apply", str(photo), str(out), "--model", "monet_like", "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["model"] == "monet_like"


def test_work_size_keeps_stroke_size_relative_to_the_image(arbitrary):
    """The same photo at 64 and at 256 px with work size 64: the large result, scaled down, is the small one."""
    torch.manual_seed(3)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(64, 64), mode="bicubic").clamp(0, 1)
    large = torch.nn.functional.interpolate(base, size=(256, 256), mode="bicubic").clamp(0, 1)
    small_out = arbitrary.apply(base, style_image=WAVE, work_size=64)
    large_out = arbitrary.apply(large, style_image=WAVE, work_size=64)
    naive_out = arbitrary.apply(large, style_image=WAVE)
    assert large_out.shape == (1, 3, 256, 256)

    def down(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)

    same = (down(large_out) - small_out).abs().mean().item()
    naive = (down(naive_out) - small_out).abs().mean().item()
    assert same < 0.5 * naive, (same, naive)


def test_cli_style_image_picks_the_arbitrary_model_for_photos_and_folders(tmp_path, photo):
    out = tmp_path / "out.jpg"
    result = invoke("apply", str(photo), str(out), "-p", WAVE, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["model"] == "arbitrary" and record["style"] == "wave"
    folder = tmp_path / "in"
    make_photo(folder / "a.jpg", (40, 32))
    make_photo(folder / "b.png", (48, 40))
    summary = invoke("apply", str(folder), str(tmp_path / "styled"), "-p", f"{WAVE}:0.5", "-p", f"{STARRY}:0.5", "--workers", "0", "--json")
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["done"] == 2 and "wave:0.5" in json.loads(summary.stdout)["style"]
    bad = invoke("apply", str(photo), str(tmp_path / "x.jpg"), "--model", "multistyle26", "-p", WAVE)
    assert bad.returncode == 2 and b"--style" in bad.stderr and b"Traceback" not in bad.stderr


def test_cli_style_image_from_stdin_to_stdout_in_a_real_process(tmp_path, photo):
    """The main path as a user runs it: a fresh process, stdin to stdout."""
    result = run_cli("apply", "-", "-", "--style-image", WAVE, "--format", "png", input=photo.read_bytes())
    assert result.returncode == 0, result.stderr
    from io import BytesIO

    assert Image.open(BytesIO(result.stdout)).size == (64, 48)
