"""Known answers for the loss functions and the PerceptualLoss bookkeeping."""

from __future__ import annotations

import pytest
import torch

from stylize.config import LossConfig
from stylize.training.losses import PerceptualLoss, content_loss, gram_matrix, style_loss, total_variation
from stylize.training.vgg import VGG16Features


def test_gram_matrix_known_answer() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C=2, H=1, W=2
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / (2 * 1 * 2)
    torch.testing.assert_close(gram_matrix(features)[0], expected)
    assert gram_matrix(torch.ones(1, 1, 2, 2)).item() == pytest.approx(1.0)


def test_gram_matrix_is_float32_and_symmetric_under_autocast() -> None:
    features = torch.randn(3, 5, 4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(features.bfloat16())
    assert gram.shape == (3, 5, 5) and gram.dtype == torch.float32
    torch.testing.assert_close(gram, gram.transpose(1, 2))
    # Per-sample: each batch element's Gram matrix ignores the others.
    torch.testing.assert_close(gram_matrix(features[1:2])[0], gram_matrix(features)[1])


def test_total_variation_known_answers() -> None:
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    checkerboard = ((rows + cols) % 2).float().expand(2, 3, 6, 8)
    assert total_variation(checkerboard).item() == pytest.approx(2.0)
    assert total_variation(torch.full((1, 3, 5, 5), 0.7)).item() == 0.0
    ramp = (cols.float() * 0.1).expand(1, 3, 6, 8)  # horizontal steps of 0.1, no vertical change
    assert total_variation(ramp).item() == pytest.approx(0.01)


def test_content_and_style_loss_values() -> None:
    features = torch.randn(2, 4, 5, 5)
    assert content_loss(features, features).item() == 0.0
    assert content_loss(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 3.0)).item() == pytest.approx(9.0)
    assert style_loss(features, gram_matrix(features)).item() == pytest.approx(0.0, abs=1e-12)
    # A (C, C) target broadcasts over the batch.
    assert style_loss(features, gram_matrix(features[:1])[0]).item() > 0.0


def test_perceptual_loss_targets_per_style() -> None:
    torch.manual_seed(0)
    vgg = VGG16Features()  # random weights are enough for the bookkeeping
    style_a, style_b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 40, 24)
    config = LossConfig(content_weight=2.0, style_weight=3.0, tv_weight=0.5)
    loss = PerceptualLoss(vgg, config)
    loss.set_styles([style_a, style_b])
    assert loss.targets["relu1_2"].shape == (2, 64, 64) and loss.targets["relu4_3"].shape == (2, 512, 512)

    terms = loss(style_a, style_a, torch.tensor([0]))
    assert terms.content.item() == 0.0
    assert terms.style.item() == pytest.approx(0.0, abs=1e-6)
    assert terms.tv.item() == pytest.approx(0.5 * total_variation(style_a).item())
    assert loss(style_a, style_a, torch.tensor([1])).style.item() > 0.0
    assert terms.total.item() == pytest.approx(terms.tv.item(), abs=1e-6)


def test_perceptual_loss_needs_styles() -> None:
    loss = PerceptualLoss(VGG16Features(), LossConfig())
    with pytest.raises(RuntimeError, match="set_styles"):
        loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.tensor([0]))


def test_gram_matrix_of_channels_last_features_equals_contiguous():
    features = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    expected = gram_matrix(features)
    got = gram_matrix(features.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_bfloat16_gram_matches_float64_forward_and_backward(layout):
    """bf16 features are multiplied in bf16: only the result's rounding (2^-9 relative) separates it from float64."""
    torch.manual_seed(0)
    features = torch.randn(2, 8, 12, 10).relu().bfloat16().contiguous(memory_format=layout).requires_grad_(True)
    upstream = torch.randn(2, 8, 8)  # an arbitrary loss sum(G * upstream), so the gradient is (U + U^T) F / CHW
    gram = gram_matrix(features)
    assert gram.dtype == torch.float32
    (gram * upstream).sum().backward()
    exact = features.detach().double().requires_grad_(True)
    flat = exact.reshape(2, 8, 120)
    exact_gram = flat @ flat.transpose(1, 2) / (8 * 12 * 10)
    (exact_gram * upstream.double()).sum().backward()
    torch.testing.assert_close(gram.double(), exact_gram.detach(), rtol=2**-8, atol=1e-6)
    assert features.grad.dtype == torch.bfloat16
    torch.testing.assert_close(features.grad.double(), exact.grad, rtol=2**-7, atol=2**-7 * exact.grad.abs().max().item())
    assert (gram.double() - exact_gram.detach()).abs().max() > 0  # rounded to bf16: the bf16 path really ran


def test_bfloat16_content_loss_matches_float64_and_skips_the_target_gradient():
    torch.manual_seed(0)
    layout = torch.channels_last
    features = torch.randn(2, 6, 9, 7).bfloat16().contiguous(memory_format=layout).requires_grad_(True)
    target = torch.randn(2, 6, 9, 7).bfloat16().contiguous(memory_format=layout)
    loss = content_loss(features, target)
    loss.backward()
    difference = features.detach().double() - target.double()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(difference.pow(2).mean().item(), rel=1e-3)
    # the difference and the gradient scale are each rounded to bf16 once
    torch.testing.assert_close(features.grad.double(), 2 * difference / difference.numel(), rtol=2**-6, atol=1e-7)
    # Mixed layouts or dtypes take the float32 path and agree with it.
    mixed = content_loss(features.detach().contiguous(), target)
    assert mixed.item() == pytest.approx(loss.item(), rel=1e-3)
