"""The generator: a Johnson-style residual network with conditional instance normalisation.

Image convention: images enter and leave :class:`Generator` as ``(B, 3, H, W)`` float tensors in ``[0, 1]``.
A model trained for another pixel range (pytorch/examples uses 0-255) says so in its config's ``pixel_scale``,
and the conversion happens in :meth:`Generator.forward` alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylize.config import GeneratorConfig

#: The generator halves the resolution twice, so padded sizes are multiples of this.
SIZE_MULTIPLE = 4
#: Smallest side the network can take: reflection padding of the 9x9 convs needs at least 5 pixels after padding.
MIN_SIDE = 8


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` (B, C, H, W) is laid out channels-last and not also contiguous (as 1-channel maps are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def reflect_pad(x: torch.Tensor, pad: int, relu: bool = False) -> torch.Tensor:
    """``F.pad(x, (pad,) * 4, mode="reflect")`` for ``(B, C, H, W)``, also fast for channels-last ``x``; with
    ``relu``, of ``relu(x)`` (for channels-last ``x`` in the same pass; ``x`` itself may be changed).

    PyTorch's reflection pad walks a channels-last tensor element by element: 24 ms for a 32-channel 1024x768 map on
    the CPU, against 5 ms for this copy of the interior plus the border strips (and 57 ms converting to contiguous).
    Contiguous tensors take PyTorch's own kernel, which is as fast for them, as does code under ``torch.compile``,
    which fuses the two itself.
    """
    if not pad or x.is_contiguous() or torch.compiler.is_compiling():  # dynamo cannot trace out= into a strided view
        if relu:
            x = F.relu_(x)
        return F.pad(x, (pad,) * 4, mode="reflect") if pad else x
    height, width = x.shape[2:]
    out = padded_interior_copy(x, pad, relu, torch.channels_last)
    interior = out[:, :, pad : pad + height, pad : pad + width]
    for i in range(1, pad + 1):  # columns beside the image first, then whole rows: the corners reflect both ways
        out[:, :, pad : pad + height, pad - i] = interior[:, :, :, i]
        out[:, :, pad : pad + height, pad + width - 1 + i] = interior[:, :, :, width - 1 - i]
    for i in range(1, pad + 1):
        out[:, :, pad - i, :] = out[:, :, pad + i, :]
        out[:, :, pad + height - 1 + i, :] = out[:, :, pad + height - 1 - i, :]
    return out


def padded_interior_copy(x: torch.Tensor, pad: int, relu: bool, memory_format: torch.memory_format) -> torch.Tensor:
    """A ``(B, C, H+2*pad, W+2*pad)`` tensor in ``memory_format`` whose interior holds ``x`` (or ``relu(x)``, in the
    same pass) and whose ``pad``-wide border is left for the caller to fill."""
    batch, channels, height, width = x.shape
    if pad >= min(height, width):
        raise ValueError(f"reflection padding {pad} needs more than {pad} pixels per side, got {height}x{width}")
    out = torch.empty(
        (batch, channels, height + 2 * pad, width + 2 * pad), dtype=x.dtype, device=x.device, memory_format=memory_format
    )
    interior = out[:, :, pad : pad + height, pad : pad + width]
    if torch.compiler.is_compiling():  # dynamo cannot trace out= into a strided view
        interior.copy_(F.relu(x) if relu else x)
    elif relu:
        torch.clamp_min(x, 0.0, out=interior)
    else:
        interior.copy_(x)
    return out


def uses_cpu_channels_last_path(x: torch.Tensor) -> bool:
    """Whether training's layers take their channels-last CPU versions for ``x``. CUDA keeps the path measured there
    (docs/gpu.md), and torch.compile fuses PyTorch's own instance norm and pad better."""
    return is_channels_last(x) and x.device.type == "cpu" and not torch.compiler.is_compiling()


def instance_norm_channels_last(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """Instance norm of a channels-last ``(B, C, H, W)`` with per-image affine ``gamma``/``beta`` ``(B, C)``.

    One ``batch_norm`` per image on its ``(1, C, H, W)`` slice, which PyTorch runs channels-last natively and keeps
    channels-last: on the CPU 10 ms for a 32-channel 1024x768 map, against 60 ms for plain passes over the strided
    channel axis and 20 ms for converting to contiguous and back (``F.instance_norm`` views x as ``(1, B*C, H, W)``,
    which copies it, forward and backward). Its statistics are less exact than two-pass ones (about 5e-4 of a unit on
    that map, 0.04/255 in a final image), far inside the precision tolerance (``stylize.precision``). bf16/fp16
    activations keep float32 scale and shift (batch_norm takes that mix); other dtypes use x's. Eager on the CPU, each
    image is normalised straight into its slice of one output (:class:`_InstanceNormChannelsLast`).
    """
    dtype = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
    gamma, beta = gamma.to(dtype), beta.to(dtype)
    if x.device.type == "cpu" and not torch.compiler.is_compiling():  # dynamo cannot trace out= into strided slices
        return _InstanceNormChannelsLast.apply(x, gamma, beta, eps)
    parts = [F.batch_norm(x[i : i + 1], None, None, gamma[i], beta[i], True, 0.0, eps) for i in range(x.shape[0])]
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # cat keeps the channels-last layout


class _InstanceNormChannelsLast(torch.autograd.Function):
    """Per-image ``batch_norm`` forward and backward that write into slices of one preallocated tensor.

    Autograd through ``torch.cat`` of per-image ``F.batch_norm`` results gives each image's gradient slice a zeroed
    full-batch buffer and then sums the B buffers; with the concatenation itself that made a training step's norms
    4-6x slower (a bf16 4x32x256x256 map, forward + backward: 33 -> 5.5 ms on the 2-core CPU). Same kernels, same
    results to the bit.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
        batch, channels = x.shape[:2]
        out = torch.empty_like(x, memory_format=torch.channels_last)
        mean = torch.empty(batch, channels, dtype=gamma.dtype, device=x.device)
        invstd = torch.empty_like(mean)
        for i in range(batch):
            torch.ops.aten.native_batch_norm.out(
                x[i : i + 1], gamma[i], beta[i], None, None, True, 0.0, eps, out=out[i : i + 1], save_mean=mean[i], save_invstd=invstd[i]
            )
        ctx.save_for_backward(x, gamma, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        x, gamma, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty_like(x, memory_format=torch.channels_last)
        grad_gamma, grad_beta = torch.empty_like(gamma), torch.empty_like(gamma)
        for i in range(x.shape[0]):
            torch.ops.aten.native_batch_norm_backward.out(
                grad[i : i + 1], x[i : i + 1], gamma[i], None, None, mean[i], invstd[i], True, ctx.eps, [True, True, True],
                out0=grad_x[i : i + 1], out1=grad_gamma[i], out2=grad_beta[i],
            )  # fmt: skip
        return grad_x, grad_gamma, grad_beta, None


class _ReflectPadChannelsLast(torch.autograd.Function):
    """:func:`reflect_pad` with a backward pass that folds the border gradients back in a few strips.

    Autograd's own derivative of the slice copies in :func:`reflect_pad` touches the whole padded gradient once per
    strip (17 full passes for a 4-pixel pad); this one copies the interior once and adds the folded strips to it.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, pad: int) -> torch.Tensor:
        ctx.pad = pad
        return reflect_pad(x, pad)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        pad = ctx.pad
        height, width = grad.shape[2] - 2 * pad, grad.shape[3] - 2 * pad
        rows, cols = slice(pad, pad + height), slice(pad, pad + width)
        folded = grad[:, :, rows, cols].clone(memory_format=torch.channels_last)  # the one full-size copy
        # The forward pass in reverse. It filled whole border rows last, from rows that include the border columns:
        # fold the rows of the two border-column strips (corners included) within the strips first.
        left = grad[:, :, :, :pad].clone(memory_format=torch.channels_last)
        right = grad[:, :, :, pad + width :].clone(memory_format=torch.channels_last)
        for strip in (left, right):
            for i in range(pad, 0, -1):
                strip[:, :, pad + i] += strip[:, :, pad - i]
                strip[:, :, pad + height - 1 - i] += strip[:, :, pad + height - 1 + i]
        for i in range(pad, 0, -1):
            folded[:, :, i, :] += grad[:, :, pad - i, cols]
            folded[:, :, height - 1 - i, :] += grad[:, :, pad + height - 1 + i, cols]
        for i in range(1, pad + 1):
            folded[:, :, :, i] += left[:, :, rows, pad - i]
            folded[:, :, :, width - 1 - i] += right[:, :, rows, i - 1]
        return folded, None


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
        gamma = style_weights @ self.gamma.to(style_weights.dtype)
        beta = style_weights @ self.beta.to(style_weights.dtype)
        if uses_cpu_channels_last_path(x):  # channels-last training on the CPU keeps its layout (docs/training.md)
            return instance_norm_channels_last(x, gamma, beta, self.eps)
        return F.instance_norm(x, eps=self.eps) * gamma.to(x.dtype)[:, :, None, None] + beta.to(x.dtype)[:, :, None, None]


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
        if uses_cpu_channels_last_path(x):  # PyTorch's reflection pad and its backward crawl over channels-last tensors
            x = _ReflectPadChannelsLast.apply(x, self.conv.padding[0])
            x = F.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride)
        else:
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
        self.head = ConvNormAct(3, c1, 9, config, normalize=config.normalize_encoder)
        self.down1 = ConvNormAct(c1, c2, 3, config, stride=2, normalize=config.normalize_encoder)
        self.down2 = ConvNormAct(c2, c3, 3, config, stride=2, normalize=config.normalize_encoder)
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
