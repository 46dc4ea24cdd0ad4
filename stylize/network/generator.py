"""The reference generator: Johnson et al.'s residual network with conditional instance normalisation.

:class:`Generator` holds the weights and runs the plan of :mod:`stylize.network.topology` step by step; it is what training
optimises and what every faster executor (:mod:`stylize.engine.fastpath`, :mod:`stylize.engine.tiling`, the ONNX export) is tested
against. Its layers keep their tensors under the plan's step names (``head.conv.weight``, ``residual.0.conv1.norm.gamma``),
the names model files use.

Image convention: images enter and leave :class:`Generator` as ``(B, 3, H, W)`` float tensors in ``[0, 1]``. A model
trained for another pixel range (pytorch/examples uses 0-255) says so in its config's ``pixel_scale``; the
conversion happens in :func:`stylize.network.topology.pad_input` and :func:`stylize.network.topology.to_pixels` alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylize.config import GeneratorConfig
from stylize.network import kernels, topology
from stylize.network.topology import AddSkip, Conv, NormStatistics, SaveSkip, check_size, generator_plan, pad_input, to_pixels


def instance_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """Instance norm of ``x`` ``(B, C, H, W)`` (each image and channel by its own mean and biased variance), then
    ``* gamma + beta`` with per-image ``gamma``/``beta`` ``(B, C)``: the one definition the other kernels must equal.

    Channels-last maps on the CPU (training) take the layout-keeping kernel (:mod:`stylize.network.kernels`).
    """
    if kernels.uses_cpu_channels_last_path(x):
        return kernels.instance_norm_channels_last(x, gamma, beta, eps)
    return F.instance_norm(x, eps=eps) * gamma.to(x.dtype)[:, :, None, None] + beta.to(x.dtype)[:, :, None, None]


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose scale and shift are picked per style (Dumoulin et al., 2017).

    ``gamma`` and ``beta`` are ``[num_styles, channels]`` tables. The style input is a ``(B, num_styles)`` weight
    vector: one-hot selects a style, a convex mix blends styles by mixing the table rows (for an arbitrary-style
    network the rows are an affine map and the vector is the code ``[embedding, 1]``). Statistics are always those of
    the image itself, in training and in evaluation alike: no running statistics.
    """

    def __init__(self, channels: int, num_styles: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(num_styles, channels))
        self.beta = nn.Parameter(torch.zeros(num_styles, channels))

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor, statistics: tuple[str, NormStatistics] | None = None) -> torch.Tensor:
        """``statistics``: a layer name and a hook that gives the statistics to normalise with (see NormStatistics)."""
        # style_weights (B, S) @ table (S, C) -> (B, C), broadcast over H and W.
        gamma = style_weights @ self.gamma.to(style_weights.dtype)
        beta = style_weights @ self.beta.to(style_weights.dtype)
        if statistics is not None:
            name, hook = statistics
            mean, var = hook(name, *kernels.channel_statistics(x))
            return kernels.normalize_with_(x.float().clone(), mean, var, gamma.float(), beta.float(), self.eps).to(x.dtype)
        return instance_norm(x, gamma, beta, self.eps)


class ConvNormAct(nn.Module):
    """One :class:`~stylize.network.topology.Conv` step: reflection-padded conv (after a nearest x2 upsample if the step says
    so) or stride-2 transposed conv, then conditional instance norm, then ReLU, each as the step says."""

    def __init__(self, step: Conv, config: GeneratorConfig) -> None:
        super().__init__()
        self.step = step
        if step.transposed:
            self.conv: nn.Module = nn.ConvTranspose2d(
                step.in_channels, step.out_channels, 3, stride=2, padding=1, output_padding=1, bias=config.conv_bias
            )
        else:
            self.conv = nn.Conv2d(
                step.in_channels,
                step.out_channels,
                step.kernel,
                stride=step.stride,
                padding=step.pad,
                padding_mode="reflect",
                bias=config.conv_bias,
            )
        self.norm = ConditionalInstanceNorm2d(step.out_channels, config.num_styles, config.norm_eps) if step.norm else None

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor, statistics: NormStatistics | None = None) -> torch.Tensor:
        if self.step.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if kernels.uses_cpu_channels_last_path(x) and not self.step.transposed:
            # PyTorch's reflection pad and its backward crawl over channels-last tensors (docs/training.md)
            x = kernels.ReflectPadChannelsLast.apply(x, self.step.pad)
            x = F.conv2d(x, self.conv.weight, self.conv.bias, self.step.stride)
        else:
            x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x, style_weights, None if statistics is None else (self.step.name, statistics))
        return F.relu(x) if self.step.relu else x


class ResidualBlock(nn.Module):
    """The two convs of a residual block; the plan's :class:`~stylize.network.topology.SaveSkip`/``AddSkip`` do the sum."""

    def __init__(self, conv1: ConvNormAct, conv2: ConvNormAct) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2


class Generator(nn.Module):
    """Johnson et al.'s feed-forward style network with ``config.num_styles`` styles.

    ``forward(images, style_weights)`` takes images ``(B, 3, H, W)`` in ``[0, 1]`` of any H and W of at least
    :data:`~stylize.network.topology.MIN_SIDE` (reflection padded to a multiple of 4 and cropped back) and style weights
    ``(B, S)`` or ``(S,)`` (``None`` means style 0), and returns stylized images of exactly the input size in ``[0, 1]``.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.plan = generator_plan(config)
        layers = {step.name: ConvNormAct(step, config) for step in self.plan if isinstance(step, Conv)}
        self.head, self.down1, self.down2 = layers["head"], layers["down1"], layers["down2"]
        self.residual = nn.ModuleList(
            ResidualBlock(layers[f"residual.{i}.conv1"], layers[f"residual.{i}.conv2"]) for i in range(config.num_residual_blocks)
        )
        self.up1, self.up2, self.tail = layers["up1"], layers["up2"], layers["tail"]

    def layer(self, step: Conv) -> ConvNormAct:
        """The module that holds ``step``'s weights."""
        return self.get_submodule(step.name)

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor | None = None, statistics: NormStatistics | None = None) -> torch.Tensor:
        """``statistics`` replaces the images' own instance-norm statistics (see :class:`~stylize.network.topology.NormStatistics`)."""
        batch, _, height, width = images.shape
        check_size(height, width)
        weights = topology.style_weights(style_weights, self.config.num_styles, batch, images.device)
        x = pad_input(images, self.config, always=torch.jit.is_tracing())
        skip = x
        for step in self.plan:
            if isinstance(step, SaveSkip):
                skip = x
            elif isinstance(step, AddSkip):
                x = x + skip
            else:
                x = self.layer(step)(x, weights, statistics)
        return to_pixels(x[:, :, :height, :width], self.config)

