"""The inference fast path: the generator's plan run with fewer passes over memory, equal to the reference.

:class:`PreparedGenerator` reads a :class:`~stylize.network.generator.Generator`'s weights once and walks the same plan
(:mod:`stylize.network.topology`) as the reference, each conv step prepared as plain tensors (:class:`PreparedLayer`) and
possibly rewritten; every rewrite is a local substitution of one step (or of a pair of adjacent conv steps), exact up
to float rounding, and ``tests/test_fastpath.py`` compares every step's output with the reference step's:

- conditional instance norm's ``gamma``/``beta`` tables are mixed once per style vector and cached (``(B, S) @ (S, C)``);
- norm, affine and ReLU run as in-place passes over the conv's output (:func:`stylize.network.kernels.instance_norm_`);
- conv biases before an instance norm are dropped (the norm subtracts the mean, so they cancel exactly);
- the residual sum, the ReLU and the output activation run in place; a layer whose output feeds only the next conv
  leaves its ReLU to that conv's padding copy;
- conv weights are stored in the compute dtype (fp32, or bf16 where the model file allows it), channels-last for
  layers with :data:`~stylize.network.kernels.WIDE_CHANNELS` or more channels when asked (oneDNN's native CPU layout);
- ``"subpixel"``: nearest x2 upsampling + reflection pad + 3x3 conv runs as one conv at the low resolution (4x the
  output channels, one weight per output phase, replicate padding) and a ``pixel_shuffle``: the upsampled map is
  never built;
- ``"space_to_depth"``: a large-kernel conv with few output channels (the 9x9 output layer) runs on
  ``pixel_unshuffle(input, 2)`` with a (k//2 + 1)-square kernel and 4x the output channels, then ``pixel_shuffle``;
- a ``"subpixel"`` step followed by a ``"space_to_depth"`` step share the four-phase layout: the full-resolution map
  between them is never built (:func:`stylize.network.kernels.phase_reflect_pad`).

Measured on a 2-core CPU in ``docs/benchmarks/``. Image convention as everywhere: ``(B, 3, H, W)`` float in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylize.network import (
    WIDE_CHANNELS,
    AddSkip,
    Conv,
    Generator,
    NormStatistics,
    SaveSkip,
    batch_norm_statistics,
    batch_norm_with_,
    check_size,
    feeds_only_next_conv,
    instance_norm_,
    pad_input,
    phase_reflect_pad,
    phase_unview,
    phase_view,
    reflect_pad,
    style_weights,
    to_pixels,
)


@dataclass
class PreparedLayer:
    """One conv step (+ optional conditional instance norm + ReLU) as plain tensors."""

    step: Conv
    weight: torch.Tensor  # (C_out, C_in, k, k) in the compute dtype, or (C_in, C_out, k, k) when transposed
    bias: torch.Tensor | None  # kept only when no norm follows
    gamma: torch.Tensor | None  # (S, C_out) float32 table, None without a norm
    beta: torch.Tensor | None
    eps: float
    # How the conv runs: "plain"; "subpixel" (upsample folded in: weight (4*C_out, C_in, 3, 3), replicate pad 1,
    # pixel_shuffle); "space_to_depth" (weight (4*C_out, 4*C_in, k//2+1, ...), reflect pad, pixel_unshuffle, conv,
    # pixel_shuffle).
    layout: str = "plain"
    channels_last: bool = False  # the conv runs on, and the norm keeps, channels-last activations
    # Phase layout: a "subpixel" layer leaves its output unshuffled, and the "space_to_depth" layer after it pads that
    # directly instead of pixel_shuffle, reflect pad, pixel_unshuffle.
    phases: bool = False


#: Output channels below which a stride-1 conv with a kernel larger than 3 runs on the space-to-depth image: its
#: output is then cheap to shuffle back (the 26-style network's 32-channel 9x9 head measured slower that way).
SPACE_TO_DEPTH_MAX_CHANNELS = 8
#: For output phase r (0: even row, 1: odd row) of an upsampled 3x3 conv, the row of the replicate-padded
#: low-resolution input that each kernel row (0, 1, 2) reads.
_SUBPIXEL_TAPS = ((0, 1, 1), (1, 1, 2))


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(O, C, 3, 3)`` conv after nearest x2 upsampling -> ``(4*O, C, 3, 3)`` conv at the low resolution.

    Output channel ``4*o + 2*r + s`` is output channel ``o`` at row phase ``r`` and column phase ``s``, the order
    ``pixel_shuffle`` expects. Upsampled row ``2i + r + a - 1`` is low-resolution row ``i + (r + a - 1) // 2``; in a
    map padded by one row that is row ``i + _SUBPIXEL_TAPS[r][a]``. Reflecting the upsampled map at its border reads
    the same pixel as replicating the low-resolution one, so the padding becomes ``replicate``.
    """
    out_channels, in_channels = weight.shape[:2]
    folded = torch.zeros(out_channels, 2, 2, in_channels, 3, 3, dtype=torch.float32)
    source = weight.float()
    for r in (0, 1):
        for s in (0, 1):
            for a in range(3):
                for b in range(3):
                    folded[:, r, s, :, _SUBPIXEL_TAPS[r][a], _SUBPIXEL_TAPS[s][b]] += source[:, :, a, b]
    return folded.reshape(4 * out_channels, in_channels, 3, 3)


def space_to_depth_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(O, C, k, k)`` stride-1 conv -> ``(4*O, 4*C, k//2+1, k//2+1)`` conv on ``pixel_unshuffle(input, 2)``.

    Output ``(o, r, s)`` at ``(i, j)`` is output ``o`` at ``(2i + r, 2j + s)``; input channel ``(c, p, q)`` at ``(m, n)``
    is input ``c`` at ``(2m + p, 2n + q)``; so kernel tap ``(t, u)`` holds the original tap ``(2t + p - r, 2u + q - s)``
    where that lies inside the kernel, and zero elsewhere.
    """
    out_channels, in_channels, kernel, _ = weight.shape
    size = kernel // 2 + 1
    folded = torch.zeros(out_channels, 2, 2, in_channels, 2, 2, size, size, dtype=torch.float32)
    source = weight.float()
    for r in (0, 1):
        for s in (0, 1):
            for p in (0, 1):
                for q in (0, 1):
                    for t in range(size):
                        for u in range(size):
                            a, b = 2 * t + p - r, 2 * u + q - s
                            if 0 <= a < kernel and 0 <= b < kernel:
                                folded[:, r, s, :, p, q, t, u] = source[:, :, a, b]
    return folded.reshape(4 * out_channels, 4 * in_channels, size, size)


def _phase_order_last(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder ``weight``'s ``dim`` (output 0 or input 1) from ``(c, r, s)`` to ``(r, s, c)``: channels-last phases."""
    shape = weight.shape
    split = (*shape[:dim], shape[dim] // 4, 4, *shape[dim + 1 :])
    return weight.reshape(split).movedim(dim + 1, dim).reshape(shape)



def _stored(weight: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    weight = weight.to(dtype)
    return weight.contiguous(memory_format=torch.channels_last) if channels_last else weight.contiguous()


def prepare_layer(step: Conv, generator: Generator, dtype: torch.dtype, channels_last: bool, rewrite: bool = True) -> PreparedLayer:
    """``step``'s weights from ``generator`` as a :class:`PreparedLayer` (rewritten when ``rewrite`` and it applies)."""
    module = generator.layer(step)
    conv, norm = module.conv, module.norm
    weight = conv.weight.detach()
    bias = None if (norm is not None or conv.bias is None) else conv.bias.detach()
    layout = "plain"
    if rewrite and step.upsample and step.kernel == 3 and step.stride == 1:
        layout, weight = "subpixel", subpixel_weight(weight)
    elif rewrite and not (step.upsample or step.transposed) and step.stride == 1 and step.kernel > 3:
        if step.out_channels < SPACE_TO_DEPTH_MAX_CHANNELS:
            layout, weight = "space_to_depth", space_to_depth_weight(weight)
    if bias is not None and layout != "plain":
        bias = bias.repeat_interleave(4)
    return PreparedLayer(
        step=step,
        weight=_stored(weight, dtype, channels_last),
        bias=None if bias is None else bias.to(dtype),
        gamma=None if norm is None else norm.gamma.detach().float(),
        beta=None if norm is None else norm.beta.detach().float(),
        eps=1e-5 if norm is None else norm.eps,
        layout=layout,
        channels_last=channels_last,
    )


def _share_phases(first: PreparedLayer, second: PreparedLayer, dtype: torch.dtype) -> None:
    """Let ``first`` (sub-pixel) hand its four output phases straight to ``second`` (space-to-depth), where that is exact."""
    if not (first.layout == "subpixel" and second.layout == "space_to_depth" and second.step.pad % 2 == 0):
        return
    if first.channels_last != second.channels_last:
        return
    first.phases = second.phases = True
    if first.channels_last:  # channels-last phases are stored (r, s, c): reorder the weights once
        first.weight = _stored(_phase_order_last(first.weight, 0), dtype, True)
        first.bias = None if first.bias is None else _phase_order_last(first.bias, 0)
        second.weight = _stored(_phase_order_last(second.weight, 1), dtype, True)


class PreparedGenerator:
    """``generator`` prepared for inference in ``dtype`` (float32 or bfloat16); call it like the generator.

    Longer than a screen because :meth:`run_step` holds every rewrite of a conv step in one place, next to the loop
    over the plan that calls it.
    """

    def __init__(
        self,
        generator: Generator,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        rewrite: bool = True,
        wide_channels_last: bool = False,
    ) -> None:
        """``rewrite``: run upsampling convs sub-pixel and few-channel large-kernel convs space-to-depth (see above).

        ``channels_last``: every layer channels-last. ``wide_channels_last``: the layers with at least
        :data:`~stylize.network.kernels.WIDE_CHANNELS` input or output channels channels-last, the narrower ones contiguous
        (the CPU's choice: a channels-last norm over 3 to 8 channels is slower than the contiguous one).
        """
        self.config = generator.config
        self.plan = generator.plan
        self.dtype = dtype
        self.rewrite = rewrite
        self._by_index: dict[int, PreparedLayer] = {}  # plan index -> prepared conv step
        for index, step in enumerate(self.plan):
            if isinstance(step, Conv):
                wide = max(step.in_channels, step.out_channels) >= WIDE_CHANNELS
                self._by_index[index] = prepare_layer(step, generator, dtype, channels_last or (wide_channels_last and wide), rewrite)
        indices = sorted(self._by_index)
        for a, b in zip(indices, indices[1:], strict=False):
            if b == a + 1:
                _share_phases(self._by_index[a], self._by_index[b], dtype)
        #: The prepared conv steps in plan order.
        self.layers = [self._by_index[index] for index in indices]
        self._style_key: tuple[tuple[int, ...], bytes] | None = None
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}

    def layer(self, name: str) -> PreparedLayer:
        """The prepared conv step called ``name`` in the plan (``"head"``, ``"residual.0.conv1"``, ``"tail"``)."""
        return next(layer for layer in self.layers if layer.step.name == name)

    def to(self, device: torch.device) -> PreparedGenerator:
        """Move every tensor to ``device`` (in place; returns self)."""
        for layer in self.layers:
            for name in ("weight", "bias", "gamma", "beta"):
                value = getattr(layer, name)
                if value is not None:
                    setattr(layer, name, value.to(device))
        self._style_key = None
        return self

    def mixed_affine(self, weights: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor] | None]:
        """Per conv step (by name), ``gamma`` and ``beta`` flattened to ``(B*C,)`` for ``weights`` ``(B, S)``; cached
        for the last vector."""
        key = (tuple(weights.shape), weights.detach().float().cpu().numpy().tobytes())
        if key != self._style_key:
            affine: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
            for layer in self.layers:
                if layer.gamma is None:
                    affine[layer.step.name] = None
                    continue
                # (B, S) @ (S, C) -> (B, C) -> (B*C,), the channel order of a (1, B*C, H, W) view. Float32 even for
                # bf16 activations: batch_norm takes mixed types, and cuDNN wants fp32 here.
                gamma = (weights.float() @ layer.gamma.to(weights.device)).reshape(-1)
                beta = (weights.float() @ layer.beta.to(weights.device)).reshape(-1)
                affine[layer.step.name] = (gamma, beta)
            self._style_key, self._affine = key, affine
        return self._affine

    def __call__(self, images: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, height, width = images.shape
        check_size(height, width)
        affine = self.mixed_affine(style_weights(weights, self.config.num_styles, batch, images.device))
        return self.core(images, affine, height, width)

    def core(self, images: torch.Tensor, affine: dict, height: int, width: int, statistics: NormStatistics | None = None) -> torch.Tensor:
        """The network proper on prepared inputs: a pure tensor function, the part :func:`torch.compile` sees.
        ``statistics`` replaces the images' own instance-norm statistics (see :class:`~stylize.network.topology.NormStatistics`)."""
        x = pad_input(images.to(self.dtype), self.config)
        skip = x
        relu_pending = False  # x still needs the previous layer's ReLU
        for index, step in enumerate(self.plan):
            if isinstance(step, SaveSkip):
                skip = x
            elif isinstance(step, AddSkip):
                x = x.add_(skip)
            else:
                defer = step.relu and feeds_only_next_conv(self.plan, index)
                x = self.run_step(self._by_index[index], affine[step.name], x, relu_pending, defer, statistics)
                relu_pending = defer
        x = x[:, :, :height, :width].float()
        return to_pixels(x, self.config, inplace=True)

    @staticmethod
    def run_step(
        layer: PreparedLayer,
        affine: tuple[torch.Tensor, torch.Tensor] | None,
        x: torch.Tensor,
        relu_input: bool = False,
        defer_relu: bool = False,
        statistics: NormStatistics | None = None,
    ) -> torch.Tensor:
        """One conv step, the substitute of the reference's ``generator.layer(layer.step)``. ``affine`` is this step's
        entry of :meth:`mixed_affine`; ``relu_input``: ``x`` still needs the previous layer's ReLU; ``defer_relu``:
        return this layer's output without its ReLU (the next call gets ``relu_input``). A step in the phase layout
        takes or gives the four phases instead of the full-resolution map."""
        step = layer.step
        if x.dtype != layer.weight.dtype:  # mixed precision: layers may differ in dtype
            x = x.to(layer.weight.dtype)
        x = x.contiguous(memory_format=torch.channels_last if layer.channels_last else torch.contiguous_format)
        padded_copy = step.pad and not step.upsample and layer.layout != "subpixel"
        if relu_input and not (padded_copy and (layer.channels_last or layer.phases)):
            x = F.relu_(x)
            relu_input = False
        if step.transposed:
            x = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1, output_padding=1)
        elif layer.layout == "subpixel":
            x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), layer.weight, layer.bias)
            if not layer.phases:
                x = F.pixel_shuffle(x, 2)
        elif layer.layout == "space_to_depth":
            if layer.phases:
                x = phase_reflect_pad(x, step.pad // 2, relu=relu_input)
            else:
                x = F.pixel_unshuffle(reflect_pad(x, step.pad, relu=relu_input), 2)
            x = F.pixel_shuffle(F.conv2d(x, layer.weight, layer.bias), 2)
        else:
            if step.upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            if step.pad:
                x = reflect_pad(x, step.pad, relu=relu_input)
            x = F.conv2d(x, layer.weight, layer.bias, stride=step.stride)
        if affine is not None:
            phases = layer.phases and layer.layout == "subpixel"
            view = phase_view(x) if phases else x
            if statistics is None:
                view = instance_norm_(view, affine[0], affine[1], layer.eps)
            else:
                batch, channels = view.shape[:2]
                mean, var = statistics(step.name, *batch_norm_statistics(view))
                gamma, beta = affine[0].view(batch, channels), affine[1].view(batch, channels)
                view = batch_norm_with_(view, mean, var, gamma, beta, layer.eps)
            x = phase_unview(view, x) if phases else view
        return F.relu_(x) if step.relu and not defer_relu else x
