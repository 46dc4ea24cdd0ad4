"""``stylize export``: a round trip through onnxruntime on odd sizes, for one- and N-style models."""

import pytest
import torch

from stylize.config import GeneratorConfig
from stylize.engine.export import MAX_ABS_ERROR, export_onnx
from stylize.network.modelfile import StyleModel, save_model
from tests.conftest import randomized_generator, run_cli

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TINY = GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1, decoder_channels=(8, 4), num_styles=3)


def _model(config: GeneratorConfig) -> StyleModel:
    return StyleModel(randomized_generator(config), styles=[f"s{i}" for i in range(config.num_styles)])


@pytest.mark.parametrize("num_styles", [1, 3])
def test_export_round_trip(tmp_path, num_styles):
    model = _model(TINY.with_styles(num_styles))
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report.max_abs_error is not None and report.max_abs_error <= MAX_ABS_ERROR
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == (["image", "style_weights"] if num_styles > 1 else ["image"])
    image = torch.rand(1, 3, 29, 42)  # a size the export never saw
    weights = torch.tensor([0.25, 0.25, 0.5]) if num_styles > 1 else torch.ones(1)
    feeds = {"image": image.numpy()}
    if num_styles > 1:
        feeds["style_weights"] = weights.numpy()
    got = torch.from_numpy(session.run(None, feeds)[0])
    with torch.no_grad():
        expected = model.generator(image, weights)
    assert got.shape == (1, 3, 29, 42)
    assert (got - expected).abs().max().item() <= MAX_ABS_ERROR


def test_export_cli(tmp_path):
    model_path = save_model(_model(TINY), tmp_path / "tiny.safetensors")
    out = tmp_path / "tiny.onnx"
    result = run_cli("export", str(model_path), str(out))
    assert result.returncode == 0, result.stderr.decode()
    assert out.is_file() and b"max abs error" in result.stdout
    again = run_cli("export", str(model_path), str(out))
    assert again.returncode != 0 and b"already exists" in again.stderr
