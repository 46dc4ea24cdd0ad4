"""Perceptual losses (Johnson et al., 2016): plain functions for the maths, one class that holds the settings.

All image inputs are ``(B, 3, H, W)`` floats in ``[0, 1]``; feature inputs are ``(B, C, H, W)`` VGG activations.
Loss values are float32. Under bf16 autocast the VGG features are already bfloat16, so Gram products and content
differences are taken in bfloat16 with float32 sums (products of bf16 values are exact, only results are rounded):
3-5x less time than upcasting them, and the generator's gradient moves by 0.2-0.3% (relative L2) against an
all-float32-loss step, a tenth of what autocast itself moves it (2.3-3.8%; docs/benchmarks/training.md, "Gradients under bf16 losses").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stylize.config import LossConfig
from stylize.network import is_channels_last
from stylize.training.vgg import VGG16Features

#: How much wider, on every side, the view is whose output a crop's output must equal (border_loss): past it the
#: frame's effect is the interior's (scripts/bench/bench_borders.py cuts photos by this much).
BORDER_MARGIN = 32


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix ``G[b, i, j] = sum_{h,w} F[b, i, h, w] * F[b, j, h, w] / (C * H * W)``.

    ``features`` ``(B, C, H, W)`` -> ``(B, C, C)`` in float32. Example: a ``(1, 1, 2, 2)`` tensor of ones has
    ``G = 4 / 4 = 1``. The normalisation makes layers of different sizes, and style images of different sizes,
    comparable. bfloat16 features (VGG under bf16 autocast) are multiplied in bfloat16 (see :class:`_Bfloat16Gram`).
    """
    batch, channels, height, width = features.shape
    if is_channels_last(features):
        # (B, H, W, C) in memory: viewed as (B, HW, C) without a copy (reshaping to (B, C, HW) would copy it)
        flat = features.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    else:
        flat = features.reshape(batch, channels, height * width).transpose(1, 2)  # (B, HW, C)
    with torch.autocast(features.device.type, enabled=False):
        if flat.dtype == torch.bfloat16:
            gram = _Bfloat16Gram.apply(flat)
        else:
            flat = flat.float()
            gram = torch.bmm(flat.transpose(1, 2), flat)
        return gram / (channels * height * width)  # (B, C, C)


class _Bfloat16Gram(torch.autograd.Function):
    """``flat^T @ flat`` for bfloat16 ``(B, N, C)`` features, returned as float32 ``(B, C, C)``.

    The features are already bfloat16, so their products are exact and the matmul accumulates them in float32;
    only the result is rounded to bfloat16 (relative error at most 2^-9), where upcasting the features and
    multiplying in float32 costs 3-5x more on CPUs (the upcast copy alone, of a 64 MB relu1_2 map, takes as long as
    the bfloat16 product). The backward, ``flat @ (dG + dG^T)``, is one bfloat16 matmul, the precision autocast gives
    every VGG layer's backward anyway (autograd's bmm backward would do two and add them).
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        return torch.bmm(flat.transpose(1, 2), flat).float()

    @staticmethod
    def backward(ctx, grad_gram: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        return torch.bmm(flat, (grad_gram + grad_gram.transpose(1, 2)).to(flat.dtype))


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature reconstruction loss ``mean((F - F_target)^2)`` over all elements; a float32 scalar."""
    if features.dtype == target.dtype == torch.bfloat16 and features.stride() == target.stride():
        return _Bfloat16MeanSquaredError.apply(features, target)
    return F.mse_loss(features.float(), target.float())


class _Bfloat16MeanSquaredError(torch.autograd.Function):
    """``mean((a - b)^2)`` of two bfloat16 tensors of one layout, summed in float32, gradient in bfloat16.

    Upcasting both to float32 for ``F.mse_loss`` and casting its gradient back made the content loss of a
    training step (a 4x128x128x128 relu2_2 map) cost 38-50 ms; this is three passes over bfloat16 data (about 3 ms).
    The difference is rounded to bfloat16 once (relative 2^-9, unbiased), the precision of every other gradient
    under bf16 autocast.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        difference = a - b
        ctx.save_for_backward(difference)
        return torch.linalg.vector_norm(difference, dtype=torch.float32).square() / difference.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        (difference,) = ctx.saved_tensors
        grad_a = difference * (grad * (2.0 / difference.numel())).to(difference.dtype)
        return grad_a, -grad_a if ctx.needs_input_grad[1] else None


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Style reconstruction loss ``mean((G(F) - G_target)^2)``; ``target_gram`` is ``(B, C, C)`` or ``(C, C)``."""
    gram = gram_matrix(features)
    return F.mse_loss(gram, target_gram.float().expand_as(gram))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Squared total variation ``mean((x[..., i, j+1] - x[..., i, j])^2) + mean((x[..., i+1, j] - x[..., i, j])^2)``.

    Each mean runs over all ``B * C * H * (W - 1)`` (resp. ``(H - 1) * W``) neighbour differences, so a 0/1
    checkerboard of any size scores exactly 2.0 and a constant image 0.0.
    """
    images = images.float()
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).pow(2).mean()
    vertical = (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean()
    return horizontal + vertical


def border_loss(output: torch.Tensor, wider_output: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between a crop's output and the output of a larger view of the same photo cut to the
    crop (both ``(B, 3, H, W)`` in ``[0, 1]``): zero when the network paints the crop's edges as it paints the same
    place inside the larger photo, i.e. when nothing in its output is bound to the frame."""
    return F.mse_loss(output.float(), wider_output.float())


@dataclass
class LossTerms:
    """The weighted terms of one loss evaluation (scalars) and their sum, which is what gets minimised. ``border`` is
    a training term only (see :func:`border_loss`), not part of a picture's perceptual loss."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    border: torch.Tensor | float = 0.0

    @property
    def total(self) -> torch.Tensor:
        return self.content + self.style + self.tv + self.border


class PerceptualLoss(nn.Module):
    """Content + style + total-variation loss for a batch whose images each have their own target style.

    ``set_styles(style_images)`` computes each style's Gram targets once (``[S, C, C]`` per layer);
    ``forward(generated, content, style_index)`` with images ``(B, 3, H, W)`` in ``[0, 1]`` and style indices
    ``(B,)`` returns the weighted :class:`LossTerms`.
    """

    def __init__(self, vgg: VGG16Features, config: LossConfig) -> None:
        super().__init__()
        self.vgg = vgg
        self.config = config
        self.style_layers = tuple(config.style_layers)
        self.layer_weights = dict(zip(config.style_layers, config.style_layer_weights, strict=True))
        self.targets: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def set_styles(self, style_images: Sequence[torch.Tensor]) -> None:
        """Compute Gram targets from ``(1, 3, H, W)`` style images in ``[0, 1]`` (sizes may differ)."""
        per_style = [self.vgg(image, self.style_layers) for image in style_images]
        self.targets = {
            layer: torch.cat([gram_matrix(features[layer]) for features in per_style]) for layer in self.style_layers
        }  # layer -> (S, C, C)

    def forward(self, generated: torch.Tensor, content: torch.Tensor, style_index: torch.Tensor) -> LossTerms:
        if not self.targets:
            raise RuntimeError("call set_styles() before computing the loss")
        layers = tuple(dict.fromkeys((*self.style_layers, self.config.content_layer)))
        features = self.vgg(generated, layers)
        with torch.no_grad():
            target = self.vgg(content, (self.config.content_layer,))[self.config.content_layer]
        content_term = content_loss(features[self.config.content_layer], target) * self.config.content_weight
        style_term = sum(
            style_loss(features[layer], self.targets[layer][style_index]) * self.layer_weights[layer]
            for layer in self.style_layers
        )
        return LossTerms(
            content=content_term,
            style=style_term * self.config.style_weight,
            tv=total_variation(generated) * self.config.tv_weight,
        )
