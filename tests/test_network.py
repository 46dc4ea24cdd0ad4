import pytest
import torch
import torch.nn.functional as F

from stylize.config import ARCHITECTURES, GeneratorConfig
from stylize.errors import StylizeError
from stylize.network.generator import ConditionalInstanceNorm2d, Generator
from stylize.network.topology import Conv
from tests.conftest import randomized_generator

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
    with pytest.raises(StylizeError, match="at least 8 pixels"):
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


def test_every_parameter_receives_a_gradient_and_biases_before_a_norm_none():
    """Conv biases that feed straight into instance norm cancel in it: their true gradient is zero (which is why
    training freezes them). So is that of a residual block's last shift (beta without a ReLU after it): a constant
    added to the residual stream reaches only convs whose instance norm removes it again. Every other parameter gets a
    non-zero gradient."""
    generator = Generator(SMALL).double().train()
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, ConditionalInstanceNorm2d):
                module.gamma.normal_(1.0, 0.1)
    out = generator(torch.rand(2, 3, 20, 20, dtype=torch.float64), torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.5, 0.3]], dtype=torch.float64))
    (out * torch.rand_like(out)).sum().backward()
    before_norm = {f"{step.name}.conv.bias" for step in generator.plan if isinstance(step, Conv) and step.norm}
    before_norm |= {f"residual.{i}.conv2.norm.beta" for i in range(SMALL.num_residual_blocks)}
    assert before_norm and all(name in dict(generator.named_parameters()) for name in before_norm)
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None, name
        if name in before_norm:
            assert parameter.grad.abs().max() < 1e-10, name
        else:
            assert parameter.grad.abs().max() > 1e-6, name


def test_transposed_upsampling_variant_keeps_size():
    config = GeneratorConfig(encoder_channels=(8, 8, 8), num_residual_blocks=1, decoder_channels=(8, 8), upsample="transposed")
    assert Generator(config)(torch.rand(1, 3, 18, 22)).shape == (1, 3, 18, 22)


def test_style_weights_shape_is_checked():
    with pytest.raises(ValueError, match="style weights"):
        Generator(SMALL)(torch.rand(1, 3, 16, 16), torch.ones(4))


@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_channels_last_training_path_equals_the_contiguous_one(upsample):
    """Channels-last tensors take per-image batch_norm and a custom reflection pad (forward and backward): same maths."""
    config = GeneratorConfig(encoder_channels=(8, 16, 16), num_residual_blocks=1, decoder_channels=(8, 8), num_styles=3, upsample=upsample)
    torch.manual_seed(0)
    generator = randomized_generator(config).double()
    images = torch.rand(2, 3, 20, 28, dtype=torch.float64)
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    probe = torch.rand(2, 3, 20, 28, dtype=torch.float64)  # a loss that weighs every output pixel differently

    def run(layout: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        generator.zero_grad()
        model = generator.to(memory_format=layout)
        x = images.clone().contiguous(memory_format=layout).requires_grad_(True)
        out = model(x, weights)
        (out * probe).sum().backward()
        return out.detach(), x.grad, {name: p.grad.clone() for name, p in model.named_parameters()}

    out_plain, grad_plain, params_plain = run(torch.contiguous_format)
    out_cl, grad_cl, params_cl = run(torch.channels_last)
    torch.testing.assert_close(out_cl, out_plain, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_cl, grad_plain, rtol=0, atol=1e-10)
    for name in params_plain:
        torch.testing.assert_close(params_cl[name], params_plain[name], rtol=1e-8, atol=1e-10, msg=name)


def test_reflect_pad_channels_last_gradient_equals_pytorch():
    from stylize.network.kernels import ReflectPadChannelsLast

    for shape, pad in [((2, 4, 9, 11), 1), ((1, 3, 12, 10), 4), ((2, 8, 6, 7), 2)]:
        x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        upstream = torch.randn(shape[0], shape[1], shape[2] + 2 * pad, shape[3] + 2 * pad, dtype=torch.float64)
        (ReflectPadChannelsLast.apply(x, pad) * upstream).sum().backward()
        ours = x.grad.clone()
        x.grad = None
        (F.pad(x, (pad,) * 4, mode="reflect") * upstream).sum().backward()
        torch.testing.assert_close(ours, x.grad, rtol=0, atol=1e-12)
        assert ours.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_instance_norm_gradients_are_exact():
    """The per-image norm writes into slices of one tensor in both passes: checked against numerical derivatives."""
    from stylize.network.kernels import instance_norm_channels_last

    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    gamma = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: instance_norm_channels_last(*a, 1e-5), (x, gamma, beta))
    out = instance_norm_channels_last(x, gamma, beta, 1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    expected = F.instance_norm(x.contiguous(), eps=1e-5) * gamma[:, :, None, None] + beta[:, :, None, None]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
