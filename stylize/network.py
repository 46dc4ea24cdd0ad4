"""The generator: a Johnson-style residual network with conditional instance normalisation.

Image convention: images enter and leave :class:`Generator` as ``(B, 3, H, W)`` float tensors in ``[0, 1]``.
A model trained for another pixel range (pytorch/examples uses 0-255) says so in its config's ``pixel_scale``,
and the conversion happens in :meth:`Generator.forward` alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylize.config import GeneratorConfig

#: The generator halves the resolution twice, so padded sizes are multiples of this.
SIZE_MULTIPLE = 4
#: Smallest side the network can take: reflection padding of the 9x9 convs needs at least 5 pixels after padding.
MIN_SIDE = 8


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose scale and shift are picked per style (Dumoulin et al., 2017).

    ``gamma`` and ``beta`` are ``[num_styles, channels]`` tables. The style input is a ``(B, num_styles)``
    weight vector: one-hot selects a style, a convex mix blends styles by mixing the table rows. Statistics are
    always those of the image itself (biased variance), in training and in evaluation alike: no running stats.
    """

    def __init__(self, channels: int, num_styles: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(num_styles, channels))
        self.beta = nn.Parameter(torch.zeros(num_styles, channels))

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        # style_weights (B, S) @ table (S, C) -> (B, C), broadcast over H and W.
        gamma = (style_weights @ self.gamma.to(style_weights.dtype)).to(x.dtype)[:, :, None, None]
        beta = (style_weights @ self.beta.to(style_weights.dtype)).to(x.dtype)[:, :, None, None]
        return F.instance_norm(x, eps=self.eps) * gamma + beta


class ConvNormAct(nn.Module):
    """Reflection-padded conv (optionally after a nearest x2 upsample), conditional instance norm, ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        config: GeneratorConfig,
        stride: int = 1,
        upsample: bool = False,
        normalize: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.relu = relu
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            padding_mode="reflect",
            bias=config.conv_bias,
        )
        self.norm = ConditionalInstanceNorm2d(out_channels, config.num_styles, config.norm_eps) if normalize else None

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x, style_weights)
        return F.relu(x) if self.relu else x


class TransposedConvNormAct(nn.Module):
    """Stride-2 transposed conv, norm, ReLU: the original Johnson upsampling (prone to checkerboard artefacts)."""

    def __init__(self, in_channels: int, out_channels: int, config: GeneratorConfig) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=config.conv_bias
        )
        self.norm = ConditionalInstanceNorm2d(out_channels, config.num_styles, config.norm_eps)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x), style_weights))


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-conv-norm, added to the input (no ReLU after the sum, as in pytorch/examples)."""

    def __init__(self, channels: int, config: GeneratorConfig) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, config)
        self.conv2 = ConvNormAct(channels, channels, 3, config, relu=False)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x, style_weights), style_weights)


class Generator(nn.Module):
    """Johnson et al.'s feed-forward style network with ``config.num_styles`` styles.

    Layers: 9x9 conv, two stride-2 3x3 convs, residual blocks, two x2 upsampling stages, 9x9 output conv.
    ``forward(images, style_weights)`` takes images ``(B, 3, H, W)`` in ``[0, 1]`` of any H and W (reflection
    padded to a multiple of 4 and cropped back) and style weights ``(B, S)`` or ``(S,)`` (``None`` means style 0),
    and returns stylized images of exactly the input size in ``[0, 1]``.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.encoder_channels
        d1, d2 = config.decoder_channels
        self.head = ConvNormAct(3, c1, 9, config)
        self.down1 = ConvNormAct(c1, c2, 3, config, stride=2)
        self.down2 = ConvNormAct(c2, c3, 3, config, stride=2)
        self.residual = nn.ModuleList(ResidualBlock(c3, config) for _ in range(config.num_residual_blocks))
        if config.upsample == "nearest":
            self.up1: nn.Module = ConvNormAct(c3, d1, 3, config, upsample=True)
            self.up2: nn.Module = ConvNormAct(d1, d2, 3, config, upsample=True)
        else:
            self.up1 = TransposedConvNormAct(c3, d1, config)
            self.up2 = TransposedConvNormAct(d1, d2, config)
        self.tail = ConvNormAct(d2, 3, 9, config, normalize=config.normalize_output, relu=False)

    def style_weights(self, style_weights: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Normalise a style input to a ``(batch, num_styles)`` float32 tensor on ``device``."""
        num_styles = self.config.num_styles
        if style_weights is None:
            weights = torch.zeros(batch, num_styles, device=device)
            weights[:, 0] = 1.0
            return weights
        weights = style_weights.to(device=device, dtype=torch.float32)
        if weights.dim() == 1:
            weights = weights.unsqueeze(0).expand(batch, -1)
        if weights.shape != (batch, num_styles):
            raise ValueError(f"style weights must have shape ({batch}, {num_styles}), got {tuple(weights.shape)}")
        return weights

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, height, width = images.shape
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"images need at least {MIN_SIDE} pixels on each side, got {height}x{width}")
        weights = self.style_weights(style_weights, batch, images.device)
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        x = images * self.config.pixel_scale if self.config.pixel_scale != 1.0 else images
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        x = self.head(x, weights)
        x = self.down1(x, weights)
        x = self.down2(x, weights)
        for block in self.residual:
            x = block(x, weights)
        x = self.up1(x, weights)
        x = self.up2(x, weights)
        x = self.tail(x, weights)
        x = x[:, :, :height, :width]
        return self.to_pixels(x)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Map the output conv's values to ``[0, 1]`` pixels according to the config."""
        activation = self.config.output_activation
        if activation == "sigmoid":
            return torch.sigmoid(x)
        if activation == "tanh":
            return (torch.tanh(x) + 1.0) * 0.5
        if self.config.pixel_scale != 1.0:
            x = x / self.config.pixel_scale
        return x.clamp(0.0, 1.0)
