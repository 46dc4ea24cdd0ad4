"""The generator's topology as data: one plan that every executor interprets.

:func:`generator_plan` turns a :class:`~stylize.config.GeneratorConfig` into an ordered tuple of steps:

- :class:`Conv` — a reflection-padded conv (optionally after a nearest x2 upsample, or a stride-2 transposed conv),
  then optionally (conditional) instance norm, then optionally ReLU. ``name`` is the module path of its weights in
  :class:`~stylize.network.generator.Generator` (``"head"``, ``"residual.0.conv1"``, ``"tail"``), which is also the prefix of its
  tensors in model files.
- :class:`SaveSkip` — remember the current map (a residual block starts);
- :class:`AddSkip` — add the remembered map to the current one (the block ends; no ReLU after the sum).

The reference network (:class:`stylize.network.generator.Generator`), the CPU fast path (:mod:`stylize.engine.fastpath`), the tiled
streamer (:mod:`stylize.engine.tiling`) and the ONNX export all walk this plan; none of them restates the layer order.
Around the plan, every executor does the same three things, defined once here: check the size (:func:`check_size`),
reflection-pad the input to a multiple of :data:`SIZE_MULTIPLE` (:func:`pad_input`), and crop the output back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from stylize.config import GeneratorConfig
from stylize.errors import StylizeError

#: The generator halves the resolution twice, so inputs are padded to a multiple of this.
SIZE_MULTIPLE = 4
#: Smallest side the network takes: after padding, the 9x9 convs' reflection padding (4 pixels) needs more than 4.
MIN_SIDE = 8


@dataclass(frozen=True)
class Conv:
    """One conv layer with its norm and activation (see the module docstring)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    upsample: bool = False  # nearest x2 before the conv
    transposed: bool = False  # a 3x3 stride-2 transposed conv (padding 1, output padding 1) instead
    norm: bool = True  # (conditional) instance norm after the conv
    relu: bool = True

    @property
    def pad(self) -> int:
        """Reflection padding on every side (the transposed conv pads inside the op instead)."""
        return 0 if self.transposed else self.kernel // 2

    def out_size(self, size: int) -> int:
        """Output length of this layer for an input map of length ``size``."""
        if self.transposed:
            return 2 * size
        conv_in = 2 * size if self.upsample else size
        return (conv_in - 1) // self.stride + 1


@dataclass(frozen=True)
class SaveSkip:
    """A residual block starts: keep the current map for :class:`AddSkip`."""


@dataclass(frozen=True)
class AddSkip:
    """A residual block ends: add the kept map to the current one."""


Step = Conv | SaveSkip | AddSkip


class NormStatistics(Protocol):
    """What an executor's instance norms normalise with, when not each image's own statistics (video frames).

    Called once per normalised step with that step's ``name`` and the batch's own per-image, per-channel ``mean`` and
    biased ``var`` ``(B, C)`` float32; returns the ``(B, C)`` mean and variance to use instead. Every executor (reference,
    fast path, tiled streamer) calls it at the same points with the same statistics, up to float rounding.
    """

    def __call__(self, name: str, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def generator_plan(config: GeneratorConfig) -> tuple[Step, ...]:
    """The layer sequence of Johnson et al.'s network as ``config`` sizes it.

    9x9 conv, two stride-2 3x3 convs, residual blocks (conv-norm-ReLU-conv-norm plus skip), two x2 upsampling stages
    (nearest then 3x3 conv, or a transposed conv), 9x9 output conv (no ReLU; normalised only with
    ``config.normalize_output``).
    """
    c1, c2, c3 = config.encoder_channels
    d1, d2 = config.decoder_channels
    encoder_norm = config.normalize_encoder
    steps: list[Step] = [
        Conv("head", 3, c1, 9, norm=encoder_norm),
        Conv("down1", c1, c2, 3, stride=2, norm=encoder_norm),
        Conv("down2", c2, c3, 3, stride=2, norm=encoder_norm),
    ]
    for i in range(config.num_residual_blocks):
        steps += [SaveSkip(), Conv(f"residual.{i}.conv1", c3, c3, 3), Conv(f"residual.{i}.conv2", c3, c3, 3, relu=False), AddSkip()]
    nearest = config.upsample == "nearest"
    steps += [
        Conv("up1", c3, d1, 3, upsample=nearest, transposed=not nearest),
        Conv("up2", d1, d2, 3, upsample=nearest, transposed=not nearest),
        Conv("tail", d2, 3, 9, norm=config.normalize_output, relu=False),
    ]
    return tuple(steps)


def conv_steps(plan: tuple[Step, ...]) -> list[Conv]:
    """The plan's :class:`Conv` steps, in order."""
    return [step for step in plan if isinstance(step, Conv)]


def feeds_only_next_conv(plan: tuple[Step, ...], index: int) -> bool:
    """Whether the output of ``plan[index]`` is read by the next step alone, and that step is a conv.

    Such a layer may leave its ReLU to the next conv's padding copy (ReLU commutes with padding). Not a residual
    block's input or output: the skip sum reads those too.
    """
    return index + 1 < len(plan) and isinstance(plan[index + 1], Conv)


def check_size(height: int, width: int, what: str = "image is") -> None:
    """Refuse images the network cannot take (the one minimum-size rule); ``what`` names them in the message."""
    if min(height, width) < MIN_SIDE:
        raise StylizeError(
            f"{what} too small ({width}x{height}); style transfer needs at least {MIN_SIDE} pixels on each side",
            "use a larger image",
        )


def padded_size(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` rounded up to a multiple of :data:`SIZE_MULTIPLE`."""
    return height + (-height % SIZE_MULTIPLE), width + (-width % SIZE_MULTIPLE)


def pad_input(images: torch.Tensor, config: GeneratorConfig, always: bool = False) -> torch.Tensor:
    """Scale ``(B, 3, H, W)`` images in ``[0, 1]`` to the model's pixel range and reflection-pad them at the bottom and
    right to a multiple of :data:`SIZE_MULTIPLE`. ``always`` pads by zero pixels too (a traced graph must not depend on
    the size it was traced with). The result is new memory unless nothing had to change."""
    height, width = images.shape[-2:]
    x = images * config.pixel_scale if config.pixel_scale != 1.0 else images
    pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
    if always or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    return x


def to_pixels(x: torch.Tensor, config: GeneratorConfig, inplace: bool = False) -> torch.Tensor:
    """Map the output conv's values to ``[0, 1]`` pixels as ``config.output_activation`` says."""
    activation = config.output_activation
    if activation == "sigmoid":
        return x.sigmoid_() if inplace else torch.sigmoid(x)
    if activation == "tanh":
        return x.tanh_().add_(1.0).mul_(0.5) if inplace else (torch.tanh(x) + 1.0) * 0.5
    if config.pixel_scale != 1.0:
        x = x.div_(config.pixel_scale) if inplace else x / config.pixel_scale
    return x.clamp_(0.0, 1.0) if inplace else x.clamp(0.0, 1.0)


def style_weights(weights: torch.Tensor | None, num_styles: int, batch: int, device: torch.device) -> torch.Tensor:
    """Normalise a style input to a ``(batch, num_styles)`` float32 tensor on ``device``: ``None`` is style 0, a
    ``(num_styles,)`` vector is shared by the batch, ``(batch, num_styles)`` gives each image its own."""
    if weights is None:
        out = torch.zeros(batch, num_styles, device=device)
        out[:, 0] = 1.0
        return out
    out = weights.to(device=device, dtype=torch.float32)
    if out.dim() == 1:
        out = out.unsqueeze(0).expand(batch, -1)
    if out.shape != (batch, num_styles):
        raise ValueError(f"style weights must have shape ({batch}, {num_styles}), got {tuple(out.shape)}")
    return out
