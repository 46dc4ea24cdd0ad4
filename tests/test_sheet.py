"""Contact sheets (``stylize sheet``, ``Stylizer.sheet``): every style on one photo, each tile exactly what ``apply``
gives for that style, laid out and labelled as asked; with the bundled models on small photos."""

import json

import numpy as np
import pytest
from PIL import Image

from stylize.api import Stylizer
from stylize.config import ApplyOptions
from stylize.errors import StylizeError
from stylize.io.resources import BUNDLED_STYLES_DIR
from stylize.pipeline.sheet import GAP, compose
from tests.conftest import invoke, make_photo

PAINTINGS = [str(BUNDLED_STYLES_DIR / "wave.jpg"), str(BUNDLED_STYLES_DIR / "starry_night.jpg")]


@pytest.fixture(scope="module")
def stylizer():
    return Stylizer.load(device="cpu", compile="never")


@pytest.fixture()
def photo(tmp_path):
    return make_photo(tmp_path / "photo.png", (80, 60))


def crop(image, box):
    left, top, width, height = box
    return np.asarray(image.crop((left, top, left + width, top + height)).convert("RGB"), dtype=np.int16)


def test_every_style_is_a_tile_equal_to_apply(stylizer, photo):
    """26 styles and the photo; each tile is what ``apply`` gives for its style at the tile's size (batched or not)."""
    sheet = stylizer.sheet(photo, size=40)
    assert [tile.label for tile in sheet.tiles] == ["photo"] + [str(i) for i in range(26)]
    assert sheet.tiles[0].style is None and sheet.tiles[8].style == "7"
    assert all(tile.box[2:] == (40, 30) for tile in sheet.tiles)
    assert np.abs(crop(sheet.image, sheet.tiles[0].box) - np.asarray(Image.open(photo).resize((40, 30), Image.Resampling.LANCZOS))).max() <= 1
    for index in (0, 7, 25):
        alone = np.asarray(stylizer.apply(photo, style=str(index), max_size=40).convert("RGB"), dtype=np.int16)
        assert np.abs(crop(sheet.image, sheet.tiles[index + 1].box) - alone).max() <= 1, f"style {index}"
    tiles = [crop(sheet.image, tile.box) for tile in sheet.tiles[1:]]
    assert min(np.abs(a - b).mean() for a, b in zip(tiles, tiles[1:], strict=False)) > 3, "neighbouring styles should differ"


def test_layout_columns_boxes_and_labels():
    pictures = [Image.new("RGB", (30, 20), (i * 40, 0, 0)) for i in range(5)]
    sheet, boxes = compose(pictures, ["a", "b", "c", "d", "a very long label that cannot fit"], columns=2)
    assert len(boxes) == 5 and boxes[1][0] == GAP + 30 + GAP and boxes[2][1] > boxes[0][1] + 20
    assert sheet.width == GAP + 2 * (30 + GAP) and sheet.height > 3 * (20 + GAP)
    assert sheet.getpixel((boxes[3][0] + 5, boxes[3][1] + 5)) == (120, 0, 0)
    label_band = np.asarray(sheet.crop((boxes[0][0], boxes[0][1] + 20, boxes[0][0] + 30, boxes[2][1] - GAP)))
    assert label_band.min() < 128, "the label is drawn under its tile"
    plain, _ = compose(pictures, list("abcde"), columns=None, show_labels=False)
    assert plain.size == (GAP + 3 * 38, GAP + 2 * 28)  # about square: 3 columns for 5 tiles


def test_cli_sheet_with_styles_columns_and_json(tmp_path, photo):
    out = tmp_path / "sheet.png"
    result = invoke("sheet", str(photo), str(out), "--styles", "3,19", "--size", "48", "--columns", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [t["label"] for t in report["tiles"]] == ["photo", "3", "19"] and report["model"] == "multistyle26"
    image = Image.open(out)
    assert image.format == "PNG" and list(image.size) == report["size"] and image.size[0] == GAP + 3 * (48 + GAP)
    again = invoke("sheet", str(photo), str(out))
    assert again.returncode == 2 and "pass --overwrite" in again.stderr.decode()


def test_cli_sheet_of_paintings(tmp_path, photo):
    out = tmp_path / "paintings.jpg"
    result = invoke("sheet", str(photo), str(out), "-p", PAINTINGS[0], "-p", PAINTINGS[1], "--size", "64", "--no-original", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "arbitrary" and [t["label"] for t in report["tiles"]] == ["wave", "starry_night"]
    image = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    wave, starry = (crop(Image.fromarray(image.astype(np.uint8)), t["box"]) for t in report["tiles"])
    assert np.abs(wave - starry).mean() > 5, "each painting gives its own style"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--styles", "30"), "style index 30 is out of range"),
        (("--model", "multistyle26", "-p", PAINTINGS[0]), "cannot take a painting's"),
        (("--model", "arbitrary"), "pass --paintings"),
        (("--size", "8"), "--size of a tile must be between 16 and 4096"),
    ],
)
def test_cli_sheet_errors_are_one_line(tmp_path, photo, args, fragment):
    result = invoke("sheet", str(photo), str(tmp_path / "out.jpg"), *args)
    assert result.returncode == 2 and fragment in result.stderr.decode(), result.stderr
    assert result.stderr.decode().count("\n") == 1 and not (tmp_path / "out.jpg").exists()


def test_api_refuses_an_output_that_is_the_input(stylizer, photo):
    with pytest.raises(StylizeError, match="is the input file"):
        stylizer.sheet_file(photo, photo, apply=ApplyOptions(overwrite=True))
