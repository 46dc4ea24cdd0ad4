"""The arbitrary-style pair (Ghiasi et al.): the bundled transformer model and style predictor.

A golden pair written by scripts/import/import_arbitrary.py from the original ONNX graphs with their activation
quantization removed (onnxruntime, float32): a bundled painting -> embedding, and a photo crop plus that embedding ->
stylized output. The predictor matches it to float rounding. The bundled transformer is the import refined against the
marks it painted along the frame (scripts/import/refine_arbitrary.py): inside the frame it keeps the golden output's
colours and texture strength.
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stylize.config import PredictorConfig
from stylize.errors import StylizeError
from stylize.io.resources import BUNDLED_SHA256, bundled_path, verify_file
from stylize.network.modelfile import load_model
from stylize.network.predictor import StylePredictor, load_predictor, prepare_painting, save_predictor, style_code

GOLDEN = Path(__file__).parent / "data" / "arbitrary_golden.safetensors"
MODEL = "models/arbitrary.safetensors"
PREDICTOR = "weights/style_predictor.safetensors"
MAX_EMBEDDING_RELATIVE = 1e-4
#: SHA-256 of models/arbitrary.safetensors as scripts/import/import_arbitrary.py writes it (before refine_arbitrary.py).
IMPORTED_SHA256 = "628600a247d9c259eefa36410a64455a818c3f77495eae42f74d191e6e9bc472"


@pytest.fixture(scope="module")
def model():
    return load_model(bundled_path(MODEL))


@pytest.fixture(scope="module")
def predictor():
    return load_predictor(bundled_path(PREDICTOR))


@pytest.fixture(scope="module")
def golden():
    tensors = load_file(GOLDEN)
    return {
        "painting": tensors["painting"].float() / 255,
        "content": tensors["content"].float() / 255,
        "embedding": tensors["embedding"],
        "output": tensors["output"],
    }


def test_predictor_matches_golden_embedding(predictor, golden):
    with torch.no_grad():
        embedding = predictor(golden["painting"])
    assert embedding.shape == golden["embedding"].shape == (1, 100)
    relative = ((embedding - golden["embedding"]).norm() / golden["embedding"].norm()).item()
    assert relative <= MAX_EMBEDDING_RELATIVE


def interior_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Channel means and standard deviations (1/255) 16 pixels inside the frame, and the mean local contrast there
    (|image - its 7x7 box mean|): the colours and the texture strength of a painted style."""
    inside = images[..., 16:-16, 16:-16]
    local = images - F.avg_pool2d(F.pad(images, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
    return inside.mean((0, 2, 3)) * 255, inside.std((0, 2, 3)) * 255, float(local[..., 16:-16, 16:-16].abs().mean() * 255)


def test_the_bundled_transformer_is_the_import_refined_at_its_borders(model):
    refined = model.provenance["refined"]
    assert refined["imported_sha256"] == IMPORTED_SHA256 and refined["steps"] > 0 and refined["margin"] == 32


@pytest.mark.parametrize("embedding_from", ["golden", "predictor"])
def test_inside_the_frame_the_refined_transformer_paints_the_imported_style(model, predictor, golden, embedding_from):
    """The golden output is the imported network's (the float ONNX graph's): the refinement moved its edges, not the
    style's colours and texture strength inside."""
    embedding = golden["embedding"] if embedding_from == "golden" else predictor(golden["painting"])
    with torch.no_grad():
        output = model.generator(golden["content"], style_code(embedding))
    assert output.shape == golden["output"].shape == (1, 3, 96, 128)
    means, deviations, contrast = interior_statistics(output)
    imported_means, imported_deviations, imported_contrast = interior_statistics(golden["output"])
    assert (means - imported_means).abs().max() <= 10  # levels of 255
    assert ((deviations - imported_deviations).abs() / imported_deviations).max() <= 0.1
    assert abs(contrast - imported_contrast) <= 0.05 * imported_contrast


def test_predictor_output_shape_and_finiteness(predictor):
    paintings = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = predictor(paintings)
        single = predictor(paintings[1:])
    assert batch.shape == (2, 100) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    assert torch.allclose(batch[1:], single, atol=1e-5)


def test_transformer_model_file_describes_an_embedding(model):
    config = model.config
    assert model.embedding_size == 100 and config.num_styles == 101
    assert model.styles[:2] == ["embedding_0", "embedding_1"] and model.styles[-1] == "bias"
    assert model.default_style is None
    assert (config.encoder_channels, config.decoder_channels, config.num_residual_blocks) == ((8, 16, 32), (16, 8), 5)
    assert not config.normalize_encoder and config.normalize_output and config.output_activation == "sigmoid"
    assert "Apache-2.0" in model.provenance["licence"] and len(model.provenance["onnx_sha256"]) == 64
    assert set(model.precision) >= {"cpu"}
    text = json.dumps(model.provenance)
    assert "/tmp" not in text and "/work" not in text and "/home" not in text


def test_style_code_through_generator_equals_explicit_gamma_and_beta(model):
    """[e, 1] @ table is W e + b: the original network's 1x1 convs from the embedding to each norm's scale and shift."""
    generator = model.generator
    embedding = torch.randn(2, 100, generator=torch.Generator().manual_seed(1))
    code = style_code(embedding)
    assert code.shape == (2, 101) and torch.equal(code[:, 100], torch.ones(2)) and torch.equal(code[:, :100], embedding)
    seen = {}
    norm = generator.residual[2].conv2.norm
    hook = norm.register_forward_hook(lambda module, args, out: seen.update(x=args[0], out=out))
    images = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        generator(images, code)
    hook.remove()
    weight, bias = norm.gamma[:100], norm.gamma[100]  # (100, C) = W^T, (C,)
    gamma = embedding @ weight + bias  # (2, C)
    beta = embedding @ norm.beta[:100] + norm.beta[100]
    expected = F.instance_norm(seen["x"], eps=generator.config.norm_eps) * gamma[:, :, None, None] + beta[:, :, None, None]
    assert torch.allclose(seen["out"], expected, atol=1e-4)


def test_saved_predictor_reloads_from_its_metadata_alone(tmp_path):
    config = PredictorConfig(image_size=32, embedding_size=7, stem_channels=8, stages=((1, 8, 1, 1), (2, 12, 2, 2)), head_channels=16)
    original = StylePredictor(config).eval()
    path = save_predictor(original, tmp_path / "small.safetensors", provenance={"source": "test"})
    loaded = load_predictor(path)
    assert loaded.config == config and not loaded.training
    paintings = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(paintings), original(paintings))


def _damaged(tmp_path, change):
    """A copy of the bundled predictor file with ``change(tensors, metadata)`` applied."""
    source = bundled_path(PREDICTOR)
    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(source)
    change(tensors, metadata)
    path = tmp_path / "style_predictor.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def _edit_config(metadata, **changes):
    meta = json.loads(metadata["stylize"])
    meta["predictor"].update(changes)
    metadata["stylize"] = json.dumps(meta)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t, m: t.update({"head.weight": t["head.weight"][:-1]}), "has shape"),
        (lambda t, m: t.pop("bottleneck.bias"), "missing 'bottleneck.bias'"),
        (lambda t, m: t.update({"extra": torch.zeros(1)}), "unexpected 'extra'"),
        (lambda t, m: t["stem.weight"].view(-1).__setitem__(0, float("nan")), "not finite"),
        (lambda t, m: _edit_config(m, embedding_size=64), "has shape"),
        (lambda t, m: _edit_config(m, stages=[[6, 24]]), "invalid predictor config"),
        (lambda t, m: _edit_config(m, image_size="256"), "invalid predictor config"),
        (lambda t, m: m.update(stylize=json.dumps({"format_version": 1, "generator": {}})), "not a style predictor"),
        (lambda t, m: m.pop("stylize"), "not a stylize style predictor"),
    ],
    ids=["shape", "missing", "unexpected", "nan", "config-mismatch", "bad-stage", "bad-type", "model-file", "no-metadata"],
)
def test_damaged_predictor_file_gives_one_line_error(tmp_path, change, message):
    path = _damaged(tmp_path, change)
    with pytest.raises(StylizeError, match=message) as caught:
        load_predictor(path)
    assert "\n" not in str(caught.value)


def test_truncated_or_missing_predictor_file_gives_one_line_error(tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bundled_path(PREDICTOR).read_bytes()[:5000])
    for path in (truncated, tmp_path / "absent.safetensors"):
        with pytest.raises(StylizeError) as caught:
            load_predictor(path)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("relative", [MODEL, PREDICTOR])
def test_bundled_files_match_their_recorded_sha256(tmp_path, relative):
    assert relative in BUNDLED_SHA256
    path = bundled_path(relative)  # verifies the hash
    damaged = tmp_path / Path(relative).name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(StylizeError, match="SHA-256"):
        verify_file(damaged, relative)


def test_prepare_painting_takes_the_centred_square_onto_white():
    image = Image.new("RGBA", (300, 100), (255, 0, 0, 255))  # red margins
    image.paste((0, 0, 255, 255), (100, 0, 200, 100))  # a blue centred square
    image.paste((0, 0, 0, 0), (140, 40, 160, 60))  # a transparent hole in it
    painting = prepare_painting(image)
    assert painting.shape == (1, 3, 256, 256) and painting.dtype == torch.float32
    assert 0.0 <= painting.min().item() and painting.max().item() <= 1.0
    corner = painting[0, :, 5, 5]
    assert torch.allclose(corner, torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)  # blue: no red margin inside the crop
    assert torch.allclose(painting[0, :, 128, 128], torch.ones(3), atol=1e-6)  # the hole is white
