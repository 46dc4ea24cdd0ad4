"""Property-based fuzzing: mutated image and model bytes give a clean StylizeError or a usable result, nothing else.

Bounded for CI (about 400 examples in all) and deterministic (``derandomize=True``, no example database), so a failure
reproduces on every run; hypothesis prints the shrunk input. The functions are called directly, not through the CLI.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylize.api import Stylizer
from stylize.config import GeneratorConfig
from stylize.errors import StylizeError
from stylize.io.decoding import open_image
from stylize.network.modelfile import StyleModel, load_model
from tests.robustness_corpus import TINY_CONFIG, picture, tiny_model

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Mutated headers may claim any size; keep what a mutant may make us decode small so that the run stays fast.
MAX_PIXELS = 250_000
#: Values that make integer fields (widths, lengths, offsets) interesting.
EDGE_INTS = [0, 1, 7, 8, 255, 256, 65_535, 65_536, 50_000, 2**31 - 1, 2**32 - 1]


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = picture(16, 12, "RGBA")
    frames = [picture(16, 12, seed=i).convert("P") for i in range(2)]
    return {
        "png": _encoded(rgba, "PNG"),
        "jpeg": _encoded(picture(16, 12), "JPEG", exif=exif.tobytes(), quality=80),
        "gif": _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
        "webp": _encoded(picture(16, 12), "WEBP", quality=80),
    }


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, header: int = 64) -> bytes:
    """``seed`` with 1-6 mutations: bit flips, byte and 32-bit field overwrites, cuts, insertions, deletions.

    Half of the positions fall in the first ``header`` bytes, where the fields that steer a parser live.
    """
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        end = len(data) - 1
        position = draw(st.one_of(st.integers(0, min(header, end)), st.integers(0, end)))
        operation = draw(st.sampled_from(["flip", "byte", "int32", "cut", "insert", "delete"]))
        if operation == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "byte":
            data[position] = draw(st.integers(0, 255))
        elif operation == "int32":
            value = draw(st.sampled_from(EDGE_INTS))
            order = draw(st.sampled_from(["big", "little"]))
            data[position : position + 4] = value.to_bytes(4, order)
        elif operation == "cut":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[position : position + draw(st.integers(1, 64))]
    return bytes(data)


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_mutated_image_bytes_give_a_clean_error_or_an_image(fmt: str, data: st.DataObject) -> None:
    blob = data.draw(mutated(SEEDS[fmt]), label="bytes")
    try:
        loaded = open_image(blob, max_pixels=MAX_PIXELS)
    except StylizeError as error:
        assert "\n" not in error.one_line() and error.exit_code in (1, 2)
        return
    assert loaded.rgb.mode == "RGB" and loaded.rgb.width * loaded.rgb.height <= MAX_PIXELS
    assert loaded.alpha is None or (loaded.alpha.mode == "L" and loaded.alpha.size == loaded.rgb.size)
    assert loaded.frames >= 1


# ---------------------------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Holds the unmutated tiny model (``seed.safetensors``) and each fuzzed file in turn."""
    folder = tmp_path_factory.mktemp("fuzz-models")
    tiny_model(folder, "seed.safetensors")
    return folder


def _load_and_run(folder: Path, blob: bytes) -> None:
    """Load ``blob`` as a model file and stylize an 8x8 picture with it: StylizeError or success, nothing else."""
    path = folder / "fuzzed.safetensors"
    path.write_bytes(blob)
    try:
        model = load_model(path)
        stylizer = Stylizer.load(path, device="cpu")
        out = stylizer.apply(torch.rand(1, 3, 8, 8))
    except StylizeError as error:
        assert "\n" not in error.one_line()
        return
    assert isinstance(model, StyleModel)
    assert out.shape == (1, 3, 8, 8) and bool(torch.isfinite(out).all())


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_mutated_model_bytes_give_a_clean_error_or_a_model(model_folder: Path, data: st.DataObject) -> None:
    seed = (model_folder / "seed.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(seed[:8], "little")
    _load_and_run(model_folder, data.draw(mutated(seed, header=header_end), label="bytes"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.sampled_from(EDGE_INTS + [-1, 10**12]) | st.integers(-5, 300) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
META_FIELDS = ["format_version", "styles", "default_style", "provenance", "training", "precision", "generator"]
CONFIG_FIELDS = list(TINY_CONFIG.to_dict())


@settings(FUZZ, max_examples=80)
@given(edits=st.lists(st.tuples(st.sampled_from(META_FIELDS + CONFIG_FIELDS), JSON_VALUES), min_size=1, max_size=3))
def test_hostile_metadata_gives_a_clean_error_or_a_model(model_folder: Path, edits: list[tuple[str, object]]) -> None:
    """A well-formed file whose stylize metadata holds arbitrary JSON in its fields (what an edited file can say)."""

    def edit(tensors: dict, meta: dict) -> None:
        for key, value in edits:
            (meta if key in META_FIELDS else meta["generator"])[key] = value
            if not isinstance(meta.get("generator"), dict):
                break

    path = tiny_model(model_folder, "edited.safetensors", edit=lambda t, m: edit(t, m))
    _load_and_run(model_folder, path.read_bytes())


def test_seed_files_are_valid(model_folder: Path) -> None:
    """The unmutated seeds load, so that the fuzzing starts from real files."""
    for blob in SEEDS.values():
        assert open_image(blob).size in ((16, 12), (12, 16))
    assert load_model(model_folder / "seed.safetensors").config == TINY_CONFIG
    assert GeneratorConfig.from_dict(json.loads(json.dumps(TINY_CONFIG.to_dict()))) == TINY_CONFIG
