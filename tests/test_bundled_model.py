"""The bundled 26-style model: parity with onnxruntime's output of the original ONNX file (golden pair)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stylize.errors import StylizeError
from stylize.io.catalog import DEFAULT_MODEL, find_model
from stylize.io.resources import BUNDLED_SHA256, bundled_path, verify_file
from stylize.network.modelfile import load_model

GOLDEN = Path(__file__).parent / "data" / "multistyle26_golden.safetensors"


@pytest.fixture(scope="module")
def bundled():
    return load_model(find_model(DEFAULT_MODEL))


def test_bundled_model_is_found_verified_and_described(bundled):
    assert bundled.config.num_styles == 26 and len(bundled.styles) == 26
    assert bundled.default_style == "19"
    assert "Apache-2.0" in bundled.provenance["licence"]
    assert bundled_path("models/multistyle26.safetensors").is_file()


@pytest.mark.parametrize("case", ["one_hot", "mix"])
def test_parity_with_onnxruntime_golden_output(bundled, case):
    golden = load_file(GOLDEN)
    assert golden["input"].shape[-1] % 4 != 0 or golden["input"].shape[-2] % 4 != 0, "golden input should be an odd size"
    with torch.no_grad():
        ours = bundled.generator(golden["input"], golden[f"weights_{case}"])
    reference = golden[f"output_{case}"]
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= 5e-4
    assert (ours * 255).round().sub((reference * 255).round()).abs().max().item() <= 1


@pytest.mark.parametrize("relative", sorted(BUNDLED_SHA256))
def test_every_bundled_file_matches_its_recorded_sha256(relative):
    assert bundled_path(relative).is_file()  # bundled_path verifies the SHA-256 and raises otherwise


def test_tampered_bundled_file_is_refused(tmp_path):
    copy = tmp_path / "multistyle26.safetensors"
    data = bytearray(bundled_path("models/multistyle26.safetensors").read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert "models/multistyle26.safetensors" in BUNDLED_SHA256
    with pytest.raises(StylizeError, match="SHA-256"):
        verify_file(copy, "models/multistyle26.safetensors")
