import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stylize.config import GeneratorConfig
from stylize.errors import StylizeError
from stylize.network.generator import Generator
from stylize.network.modelfile import StyleModel, load_model, map_pytorch_examples_keys, save_model
from tests.pytorch_examples_net import TransformerNet, random_checkpoint

CONFIG = GeneratorConfig(encoder_channels=(8, 8, 16), num_residual_blocks=1, decoder_channels=(8, 4), num_styles=2)


def small_model() -> StyleModel:
    generator = Generator(CONFIG)
    with torch.no_grad():
        for p in generator.parameters():
            p.normal_(0, 0.2)
    return StyleModel(generator=generator.eval(), styles=["a", "b"], provenance={"licence": "test"}, default_style="b")


def test_round_trip_rebuilds_the_network_from_the_file_alone(tmp_path):
    model = small_model()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.config == CONFIG
    assert loaded.styles == ["a", "b"] and loaded.default_style == "b"
    assert loaded.provenance == {"licence": "test"}
    x = torch.rand(1, 3, 20, 24)
    w = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        assert torch.equal(model.generator(x, w), loaded.generator(x, w))
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_metadata_is_plain_json(tmp_path):
    path = save_model(small_model(), tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        meta = json.loads(handle.metadata()["stylize"])
    assert meta["format_version"] == 1
    assert meta["generator"]["encoder_channels"] == [8, 8, 16]


def _edit(path: Path, tensors=None, meta_update=None) -> None:
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    data = load_file(path)
    if tensors:
        data.update(tensors)
    if meta_update:
        meta = json.loads(metadata["stylize"])
        meta.update(meta_update)
        metadata["stylize"] = json.dumps(meta)
    save_file(data, path, metadata=metadata)


def test_tensor_shape_mismatch_is_a_clear_error(tmp_path):
    path = save_model(small_model(), tmp_path / "m.safetensors")
    _edit(path, tensors={"head.conv.weight": torch.zeros(8, 3, 3, 3)})
    with pytest.raises(StylizeError, match="head.conv.weight.*shape"):
        load_model(path)


def test_config_that_does_not_match_tensors_is_a_clear_error(tmp_path):
    path = save_model(small_model(), tmp_path / "m.safetensors")
    _edit(path, meta_update={"generator": {**CONFIG.to_dict(), "num_residual_blocks": 3}})
    with pytest.raises(StylizeError, match="do not match its generator config"):
        load_model(path)


def test_nan_weights_are_refused(tmp_path):
    path = save_model(small_model(), tmp_path / "m.safetensors")
    _edit(path, tensors={"tail.conv.bias": torch.tensor([float("nan"), 0.0, 0.0])})
    with pytest.raises(StylizeError, match="NaN"):
        load_model(path)


def test_newer_format_version_is_refused(tmp_path):
    path = save_model(small_model(), tmp_path / "m.safetensors")
    _edit(path, meta_update={"format_version": 99})
    with pytest.raises(StylizeError, match="format version 99"):
        load_model(path)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = save_model(small_model(), tmp_path / "m.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StylizeError, match="truncated"):
        load_model(truncated)
    text = tmp_path / "x.safetensors"
    text.write_text("hello, this is not a model at all")
    with pytest.raises(StylizeError, match="not a valid safetensors"):
        load_model(text)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(StylizeError, match="not a stylize model"):
        load_model(plain)
    with pytest.raises(StylizeError, match="unknown model file type"):
        load_model(_touch(tmp_path / "m.onnx"))


def _touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_huge_header_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(StylizeError, match="header claims"):
        load_model(path)


class _Evil:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(MARKER),))


MARKER = ""


def test_pickle_that_would_run_code_is_refused_and_code_does_not_run(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump({"conv1.conv2d.weight": _Evil()}, handle)
    torch.save({"x": _Evil()}, tmp_path / "evil2.pth")
    for candidate in (path, tmp_path / "evil2.pth"):
        with pytest.raises(StylizeError):
            load_model(candidate)
    assert not Path(MARKER).exists()


def test_pytorch_examples_keys_map_onto_generator_names():
    mapped = map_pytorch_examples_keys(random_checkpoint())
    expected = Generator(load_model.__globals__["PYTORCH_EXAMPLES_CONFIG"]).state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


@pytest.mark.parametrize("extension", [".pth", ".model"])
def test_pytorch_examples_checkpoint_gives_the_same_image_as_its_own_network(tmp_path, extension):
    state = random_checkpoint(seed=1)
    path = tmp_path / f"mosaic{extension}"
    torch.save(state, path)
    model = load_model(path)
    reference = TransformerNet().eval()
    reference.load_state_dict({k: v for k, v in state.items() if "running_" not in k})
    photo = torch.rand(1, 3, 36, 44)  # pytorch/examples needs sizes divisible by 4 to keep the size
    with torch.no_grad():
        theirs = reference(photo * 255).clamp(0, 255)  # their eval: ToTensor().mul(255), then clamp(0, 255)
        ours = model.generator(photo) * 255
    assert (ours - theirs).abs().max() < 2e-3
    # Their save_image truncates (astype uint8); we round: the 8-bit images differ by at most one level.
    assert (ours.round() - theirs.floor()).abs().max() <= 1
    assert model.styles == ["mosaic"] and model.config.pixel_scale == 255.0


def test_foreign_checkpoint_of_unknown_layout_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(StylizeError, match="not a checkpoint format"):
        load_model(path)
