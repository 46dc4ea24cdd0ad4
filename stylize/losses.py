"""Perceptual losses (Johnson et al., 2016): plain functions for the maths, one class that holds the settings.

All image inputs are ``(B, 3, H, W)`` floats in ``[0, 1]``; feature inputs are ``(B, C, H, W)`` VGG activations.
Losses are computed in float32 even under autocast: Gram matrices sum ``H * W`` products, and the differences
between a Gram matrix and its target late in training are far below bfloat16's 3 significant digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stylize.config import LossConfig
from stylize.network import is_channels_last
from stylize.vgg import VGG16Features


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix ``G[b, i, j] = sum_{h,w} F[b, i, h, w] * F[b, j, h, w] / (C * H * W)``.

    ``features`` ``(B, C, H, W)`` -> ``(B, C, C)`` in float32. Example: a ``(1, 1, 2, 2)`` tensor of ones has
    ``G = 4 / 4 = 1``. The normalisation makes layers of different sizes, and style images of different sizes,
    comparable.
    """
    batch, channels, height, width = features.shape
    with torch.autocast(features.device.type, enabled=False):
        if is_channels_last(features):
            # (B, H, W, C) in memory: viewed as (B, HW, C) without a copy (reshaping to (B, C, HW) would copy it)
            flat = features.permute(0, 2, 3, 1).reshape(batch, height * width, channels).float()
            return torch.bmm(flat.transpose(1, 2), flat) / (channels * height * width)  # (B, C, C)
        flat = features.float().reshape(batch, channels, height * width)  # (B, C, HW)
        return torch.bmm(flat, flat.transpose(1, 2)) / (channels * height * width)  # (B, C, C)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature reconstruction loss ``mean((F - F_target)^2)`` over all elements; a scalar."""
    return F.mse_loss(features.float(), target.float())


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


@dataclass
class LossTerms:
    """The weighted terms of one loss evaluation (scalars) and their sum, which is what gets minimised."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.content + self.style + self.tv


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
