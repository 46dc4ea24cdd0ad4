"""The Python API on tensors and PIL images, with a small random model so the numbers are easy to reason about."""

import pytest
import torch
from PIL import Image

from stylize.api import Stylizer
from stylize.config import GeneratorConfig
from stylize.engine.routing import Engine
from stylize.errors import StylizeError
from stylize.network.generator import Generator
from stylize.network.modelfile import StyleModel
from stylize.pipeline.blending import blend, luminance, preserve_color

CONFIG = GeneratorConfig(encoder_channels=(8, 8, 8), num_residual_blocks=1, decoder_channels=(8, 8), num_styles=3)


@pytest.fixture()
def stylizer():
    generator = Generator(CONFIG)
    with torch.no_grad():
        for module in generator.modules():
            if hasattr(module, "gamma"):
                module.gamma.normal_(1.0, 0.5)
                module.beta.normal_(0.0, 0.5)
    model = StyleModel(generator, ["ink", "oil", "wave"], default_style="oil")
    return Stylizer(model, Engine(generator, torch.device("cpu")), "test")


def test_style_by_name_index_and_default(stylizer):
    assert stylizer.style_weights("wave").tolist() == [0, 0, 1]
    assert stylizer.style_weights(0).tolist() == [1, 0, 0]
    assert stylizer.style_weights().tolist() == [0, 1, 0]


def test_mix_is_normalised(stylizer):
    assert torch.allclose(stylizer.style_weights(mix="ink:1,wave:3"), torch.tensor([0.25, 0.0, 0.75]))
    assert torch.allclose(stylizer.style_weights(mix={"0": 2, "oil": 2}), torch.tensor([0.5, 0.5, 0.0]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"style": "oli"}, "did you mean 'oil'"),
        ({"style": 3}, "out of range"),
        ({"mix": "ink:-1"}, "non-negative"),
        ({"mix": "ink:0,oil:0"}, "add up to zero"),
        ({"mix": "ink"}, "STYLE:WEIGHT"),
        ({"mix": "ink:1", "style": "oil"}, "not both"),
    ],
)
def test_bad_styles_are_clear_errors(stylizer, kwargs, message):
    with pytest.raises(StylizeError, match=message):
        stylizer.style_weights(**kwargs)


def test_tensor_in_tensor_out_with_batch_and_single_image(stylizer):
    images = torch.rand(2, 3, 21, 30)
    out = stylizer.apply(images, style="ink")
    assert isinstance(out, torch.Tensor) and out.shape == images.shape
    single = stylizer.apply(images[1], style="ink")
    assert single.shape == (3, 21, 30) and torch.allclose(single, out[1], atol=1e-5)


def test_strength_and_preserve_color(stylizer):
    photo = torch.rand(1, 3, 16, 16)
    assert torch.equal(stylizer.apply(photo, strength=0.0), photo)
    full = stylizer.apply(photo)
    half = stylizer.apply(photo, strength=0.5)
    assert torch.allclose(half, (full + photo) / 2, atol=1e-6)
    kept = stylizer.apply(photo, preserve_color=True)
    # Luminance comes from the stylized image (up to clamping), chroma from the photo.
    assert torch.allclose(luminance(kept), luminance(full), atol=0.05)


def test_pil_in_pil_out_keeps_alpha(stylizer):
    image = Image.new("RGBA", (24, 20), (200, 100, 50, 128))
    out = stylizer.apply(image)
    assert isinstance(out, Image.Image) and out.mode == "RGBA" and out.size == (24, 20)
    assert out.getchannel("A").getextrema() == (128, 128)


def test_too_small_and_malformed_tensors_are_clear_errors(stylizer):
    with pytest.raises(StylizeError, match="too small"):
        stylizer.apply(torch.rand(1, 3, 4, 40))
    with pytest.raises(StylizeError, match="shape"):
        stylizer.apply(torch.rand(1, 4, 16, 16))
    with pytest.raises(StylizeError, match="strength"):
        stylizer.apply(torch.rand(1, 3, 16, 16), strength=1.5)


def test_blending_functions_do_not_modify_inputs():
    a, b = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    a0, b0 = a.clone(), b.clone()
    blend(a, b, 0.3)
    preserve_color(a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_default_stylizer_loads_the_bundled_model():
    stylizer = Stylizer.load(device="cpu")
    assert stylizer.name == "multistyle26" and len(stylizer.styles) == 26
    assert stylizer.device == "cpu"
