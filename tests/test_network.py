import pytest
import torch
import torch.nn.functional as F

from stylize.config import ARCHITECTURES, GeneratorConfig
from stylize.network import ConditionalInstanceNorm2d, Generator

SMALL = GeneratorConfig(encoder_channels=(8, 16, 16), num_residual_blocks=2, decoder_channels=(8, 8), num_styles=3)


@pytest.mark.parametrize("height,width", [(8, 8), (17, 29), (32, 33), (45, 64)])
def test_output_has_exactly_the_input_size_and_range(height, width):
    generator = Generator(SMALL).eval()
    out = generator(torch.rand(2, 3, height, width), torch.tensor([1.0, 0.0, 0.0]))
    assert out.shape == (2, 3, height, width)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_named_architectures_build_and_run(name):
    generator = Generator(ARCHITECTURES[name])
    assert generator(torch.rand(1, 3, 20, 24)).shape == (1, 3, 20, 24)


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="at least"):
        Generator(SMALL)(torch.rand(1, 3, 5, 40))


def test_instance_norm_is_the_same_in_train_and_eval_mode():
    generator = Generator(SMALL)
    x, w = torch.rand(2, 3, 24, 28), torch.tensor([0.0, 1.0, 0.0])
    generator.train()
    train_out = generator(x, w)
    generator.eval()
    eval_out = generator(x, w)
    assert torch.equal(train_out, eval_out)
    # Per-image statistics: an image's result does not depend on what else is in the batch.
    assert torch.allclose(generator(x[:1], w), eval_out[:1], atol=1e-6)
    assert not any("running" in name for name, _ in generator.named_buffers())


def test_conditional_norm_one_hot_equals_that_style_and_mix_equals_mean_rows():
    norm = ConditionalInstanceNorm2d(4, num_styles=3)
    with torch.no_grad():
        norm.gamma.copy_(torch.randn(3, 4))
        norm.beta.copy_(torch.randn(3, 4))
    x = torch.randn(2, 4, 6, 7)
    normalized = F.instance_norm(x, eps=norm.eps)
    one_hot = torch.tensor([[0.0, 0.0, 1.0]] * 2)
    expected = normalized * norm.gamma[2][None, :, None, None] + norm.beta[2][None, :, None, None]
    assert torch.allclose(norm(x, one_hot), expected, atol=1e-6)
    mix = torch.tensor([[0.5, 0.5, 0.0]] * 2)
    gamma, beta = norm.gamma[:2].mean(0), norm.beta[:2].mean(0)
    expected_mix = normalized * gamma[None, :, None, None] + beta[None, :, None, None]
    assert torch.allclose(norm(x, mix), expected_mix, atol=1e-6)


def test_generator_mix_of_identical_rows_equals_single_style():
    generator = Generator(SMALL).eval()
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(generator(x, torch.tensor([0.5, 0.5, 0.0])), generator(x, torch.tensor([1.0, 0.0, 0.0])), atol=1e-6)


def test_every_parameter_receives_a_gradient():
    generator = Generator(SMALL).train()
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, ConditionalInstanceNorm2d):
                module.gamma.normal_(1.0, 0.1)
    out = generator(torch.rand(2, 3, 20, 20), torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.5, 0.3]]))
    out.mean().backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_transposed_upsampling_variant_keeps_size():
    config = GeneratorConfig(encoder_channels=(8, 8, 8), num_residual_blocks=1, decoder_channels=(8, 8), upsample="transposed")
    assert Generator(config)(torch.rand(1, 3, 18, 22)).shape == (1, 3, 18, 22)


def test_style_weights_shape_is_checked():
    with pytest.raises(ValueError, match="style weights"):
        Generator(SMALL)(torch.rand(1, 3, 16, 16), torch.ones(4))
