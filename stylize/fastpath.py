"""An inference-prepared copy of a :class:`~stylize.network.Generator`: same maths, fewer passes over memory.

:class:`PreparedGenerator` reads a generator's layers once and keeps plain tensors:

- conditional instance norm's ``gamma``/``beta`` tables are mixed once per style-weight vector and cached
  (the tables are ``[num_styles, C]``; the mix is ``(B, S) @ (S, C)``), instead of twice per layer per call;
- instance norm, its affine and the ReLU run as one ``batch_norm`` call on a ``(1, B*C, H, W)`` view plus an
  in-place ReLU (``F.instance_norm`` is that same kernel, followed by two more full passes for the affine); on the
  CPU in float32, as in-place passes over the conv's output instead (:func:`_instance_norm_cpu_`, faster there);
- conv biases before an instance norm are dropped (the norm subtracts the mean, so they cancel exactly);
- the residual sum, the ReLU and the output activation run in place; no dtype round-trips between layers;
- conv weights are stored in the compute dtype (fp32, or bf16 where the model file allows it) and, when
  ``channels_last`` is set, in channels-last layout.
- nearest x2 upsampling + reflection pad + 3x3 conv runs as one sub-pixel conv at the low resolution (4x the output
  channels, one weight per output phase, replicate padding) and a ``pixel_shuffle``: the upsampled map is never
  built, and the conv sees 4x the channels on 1/4 of the pixels, which the CPU runs far better;
- a large-kernel conv with few output channels (the 9x9 output layer) runs on the space-to-depth image
  (``pixel_unshuffle``: 4x the input channels, half the side) with a (k//2 + 1)-square kernel and 4x the output
  channels, then ``pixel_shuffle``. With both, eager at 1024x1024 on a 2-core CPU: 26-style fp32 226 -> 197 ms,
  Johnson bf16 641 -> 563 ms (``scripts/bench_rewrites.py``, docs/speed.md).
- when the last upsampling conv runs sub-pixel and the output conv space-to-depth, the full-resolution map between
  them is never built either: the norm, ReLU and reflection pad run on the sub-pixel conv's four output phases, which
  are already the space-to-depth layout (:func:`phase_reflect_pad`).

Image convention as everywhere: ``(B, 3, H, W)`` float in ``[0, 1]`` in and out. The output equals
``Generator.forward`` within float rounding (see ``tests/test_fastpath.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stylize.network import (
    MIN_SIDE,
    SIZE_MULTIPLE,
    ConvNormAct,
    Generator,
    TransposedConvNormAct,
    instance_norm_channels_last,
    is_channels_last,
    padded_interior_copy,
    reflect_pad,
)


@dataclass
class PreparedLayer:
    """One conv (+ optional conditional instance norm + ReLU) as plain tensors."""

    weight: torch.Tensor  # (C_out, C_in, k, k) in the compute dtype, or (C_in, C_out, k, k) when transposed
    bias: torch.Tensor | None  # kept only when no norm follows
    stride: int
    pad: int  # reflection padding on every side (0 for the transposed conv)
    upsample: bool  # nearest x2 before the conv
    transposed: bool
    gamma: torch.Tensor | None  # (S, C_out) float32 table, None without a norm
    beta: torch.Tensor | None
    eps: float
    relu: bool
    # How the conv runs: "plain"; "subpixel" (upsample folded in: weight (4*C_out, C_in, 3, 3), replicate pad 1,
    # pixel_shuffle); "space_to_depth" (weight (4*C_out, 4*C_in, k//2+1, ...), reflect pad, pixel_unshuffle, conv,
    # pixel_shuffle).
    layout: str = "plain"
    channels_last: bool = False  # the conv runs on, and the norm keeps, channels-last activations
    # Phase layout (see :func:`phase_reflect_pad`): a "subpixel" layer leaves its output unshuffled, and the
    # "space_to_depth" layer after it pads that directly instead of pixel_shuffle, reflect pad, pixel_unshuffle.
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


def phase_view(x: torch.Tensor) -> torch.Tensor:
    """``(B, 4*C, H, W)`` phases of a ``(B, C, 2H, 2W)`` map -> a ``(B, C, ., .)`` view holding each channel's 4*H*W
    values, for per-channel statistics. Contiguous tensors order their channels ``(c, r, s)`` (``pixel_shuffle``'s
    order; the view is ``(B, C, 4H, W)``), channels-last ones ``(r, s, c)`` (the view is ``(B, C, H, 4W)``, channels-last)."""
    batch, channels4, height, width = x.shape
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1).reshape(batch, height, 4 * width, channels4 // 4).permute(0, 3, 1, 2)
    return x.reshape(batch, channels4 // 4, 4 * height, width)


def phase_unview(view: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`phase_view`: ``view`` (shaped as ``phase_view(like)`` returns) back to ``like``'s shape and layout."""
    batch, channels4, height, width = like.shape
    if is_channels_last(like):
        view = view.contiguous(memory_format=torch.channels_last)  # a no-op unless the norm went contiguous
        return view.permute(0, 2, 3, 1).reshape(batch, height, width, channels4).permute(0, 3, 1, 2)
    return view.contiguous().reshape(batch, channels4, height, width)


def phase_reflect_pad(x: torch.Tensor, pad: int, relu: bool = False) -> torch.Tensor:
    """``pixel_unshuffle(F.pad(y, (2*pad,) * 4, mode="reflect"), 2)`` computed from the phases ``x`` of ``y``.

    ``x`` is ``(B, 4*C, H, W)`` in :func:`phase_view`'s channel order; so is the result, ``(B, 4*C, H+2p, W+2p)``
    (the output conv's weights are stored in that order). Reflecting ``y`` by an even ``2p`` pixels reflects its
    even phase by ``p`` at the leading edge and mirrors it with the edge repeated (``symmetric``) at the trailing edge,
    and the odd phase the other way round. With ``relu``, of ``relu(y)``. Exact: a copy plus border strips.
    """
    batch, channels4, height, width = x.shape
    channels_last = is_channels_last(x)
    out = padded_interior_copy(x, pad, relu, torch.channels_last if channels_last else torch.contiguous_format)
    c = channels4 // 4
    if channels_last:  # (B, H', W', r, s, C) in memory
        phases = out.permute(0, 2, 3, 1).view(batch, height + 2 * pad, width + 2 * pad, 2, 2, c).permute(0, 5, 3, 4, 1, 2)
    else:  # (B, C, r, s, H', W')
        phases = out.view(batch, c, 2, 2, height + 2 * pad, width + 2 * pad)
    # phases[b, c, r, s, row, col]; columns beside the image first (phase s), then whole rows (phase r).
    rows = slice(pad, pad + height)
    for i in range(1, pad + 1):
        phases[:, :, :, 0, rows, pad - i] = phases[:, :, :, 0, rows, pad + i]  # even: reflect
        phases[:, :, :, 1, rows, pad - i] = phases[:, :, :, 1, rows, pad + i - 1]  # odd: symmetric
        phases[:, :, :, 0, rows, pad + width - 1 + i] = phases[:, :, :, 0, rows, pad + width - i]  # even: symmetric
        phases[:, :, :, 1, rows, pad + width - 1 + i] = phases[:, :, :, 1, rows, pad + width - 1 - i]  # odd: reflect
    for i in range(1, pad + 1):
        phases[:, :, 0, :, pad - i, :] = phases[:, :, 0, :, pad + i, :]
        phases[:, :, 1, :, pad - i, :] = phases[:, :, 1, :, pad + i - 1, :]
        phases[:, :, 0, :, pad + height - 1 + i, :] = phases[:, :, 0, :, pad + height - i, :]
        phases[:, :, 1, :, pad + height - 1 + i, :] = phases[:, :, 1, :, pad + height - 1 - i, :]
    return out


def _phase_order_last(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder ``weight``'s ``dim`` (output 0 or input 1) from ``(c, r, s)`` to ``(r, s, c)``: channels-last phases."""
    shape = weight.shape
    split = (*shape[:dim], shape[dim] // 4, 4, *shape[dim + 1 :])
    return weight.reshape(split).movedim(dim + 1, dim).reshape(shape)


def _prepare_layer(module: nn.Module, dtype: torch.dtype, channels_last: bool, rewrite: bool = True) -> PreparedLayer:
    conv = module.conv
    norm = module.norm
    weight = conv.weight.detach()
    bias = None if (norm is not None or conv.bias is None) else conv.bias.detach()
    if isinstance(module, TransposedConvNormAct):
        weight = _stored(weight, dtype, channels_last)
        bias = None if bias is None else bias.to(dtype)
        gamma, beta = norm.gamma.detach().float(), norm.beta.detach().float()
        return PreparedLayer(weight, bias, 2, 0, False, True, gamma, beta, norm.eps, True, channels_last=channels_last)
    if not isinstance(module, ConvNormAct):
        raise TypeError(f"cannot prepare a {type(module).__name__}")
    kernel, stride, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    layout = "plain"
    if rewrite and module.upsample and kernel == 3 and stride == 1 and pad == 1:
        layout = "subpixel"
        weight = subpixel_weight(weight)
        bias = None if bias is None else bias.repeat_interleave(4)
    elif rewrite and not module.upsample and stride == 1 and kernel > 3 and pad == kernel // 2 and conv.out_channels < SPACE_TO_DEPTH_MAX_CHANNELS:
        layout = "space_to_depth"
        weight = space_to_depth_weight(weight)
        bias = None if bias is None else bias.repeat_interleave(4)
    return PreparedLayer(
        weight=_stored(weight, dtype, channels_last),
        bias=None if bias is None else bias.to(dtype),
        stride=stride,
        pad=pad,
        upsample=module.upsample,
        transposed=False,
        gamma=None if norm is None else norm.gamma.detach().float(),
        beta=None if norm is None else norm.beta.detach().float(),
        eps=1e-5 if norm is None else norm.eps,
        relu=module.relu,
        layout=layout,
        channels_last=channels_last,
    )


#: With ``wide_channels_last``, layers with at least this many input or output channels run channels-last. oneDNN's
#: CPU convs run channels-last natively and reorder contiguous tensors to blocked layouts and back around every call (a
#: 3x3 stride-2 conv on a 32-channel 1024x768 map: 21 ms contiguous, 11 ms channels-last; the 9x9 3->32 head 31 -> 24
#: ms); but a channels-last norm over 3 to 8 channels is slower than the contiguous one (4 channels at 1024x768: 13
#: against 2.3 ms). Eager at 1024x768 on the 2-core AMD CPU, contiguous -> wide channels-last: 26-style fp32 154 -> 129
#: ms, Johnson fp32 755 -> 645 ms, bf16 418 -> 341 ms (every layer channels-last: 157, 642 and 341 ms).
WIDE_CHANNELS = 16


def _stored(weight: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    weight = weight.to(dtype)
    return weight.contiguous(memory_format=torch.channels_last) if channels_last else weight.contiguous()


def _instance_norm_cpu_(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> None:
    """Instance-normalise the rows of ``x`` ``(B*C, H*W)`` float32 in place, then scale by ``gamma`` and shift by ``beta``.

    On the CPU, ``batch_norm``'s training kernel takes about twice as long as these plain passes over memory (mean,
    subtract, norm, scale, shift; measured 0.50 -> 0.43 CPU-s for the 26-style network on a 1024x768 photo) and also
    allocates its output. The variance is taken of the centred values, as ``batch_norm`` does, so that a large mean
    cannot cancel it away.
    """
    mean = x.mean(dim=1, keepdim=True)
    x.sub_(mean)
    var = torch.linalg.vector_norm(x, dim=1, keepdim=True).square_().div_(x.shape[1])
    x.mul_(var.add_(eps).rsqrt_().mul_(gamma[:, None])).add_(beta[:, None])


class PreparedGenerator:
    """``generator`` prepared for inference in ``dtype`` (float32 or bfloat16); call it like the generator."""

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
        :data:`WIDE_CHANNELS` input or output channels channels-last, the narrower ones contiguous (the CPU's choice).
        """
        self.config = generator.config
        self.dtype = dtype
        self.rewrite = rewrite

        def prepare(module: nn.Module) -> PreparedLayer:
            wide = max(module.conv.in_channels, module.conv.out_channels) >= WIDE_CHANNELS
            return _prepare_layer(module, dtype, channels_last or (wide_channels_last and wide), rewrite)

        self.head = prepare(generator.head)
        self.down1 = prepare(generator.down1)
        self.down2 = prepare(generator.down2)
        self.residual = [(prepare(b.conv1), prepare(b.conv2)) for b in generator.residual]
        self.up1 = prepare(generator.up1)
        self.up2 = prepare(generator.up2)
        self.tail = prepare(generator.tail)
        if (
            self.up2.layout == "subpixel"
            and self.tail.layout == "space_to_depth"
            and self.tail.pad % 2 == 0
            and self.up2.channels_last == self.tail.channels_last
        ):
            self.up2.phases = self.tail.phases = True
            if self.up2.channels_last:
                self.up2.weight = _stored(_phase_order_last(self.up2.weight, 0), dtype, True)
                self.up2.bias = None if self.up2.bias is None else _phase_order_last(self.up2.bias, 0)
                self.tail.weight = _stored(_phase_order_last(self.tail.weight, 1), dtype, True)
        self.layers = [self.head, self.down1, self.down2, *[c for pair in self.residual for c in pair], self.up1, self.up2, self.tail]
        self._style_key: tuple[tuple[int, ...], bytes] | None = None
        self._affine: list[tuple[torch.Tensor, torch.Tensor] | None] = []

    def to(self, device: torch.device) -> PreparedGenerator:
        """Move every tensor to ``device`` (in place; returns self)."""
        for layer in self.layers:
            for name in ("weight", "bias", "gamma", "beta"):
                value = getattr(layer, name)
                if value is not None:
                    setattr(layer, name, value.to(device))
        self._style_key = None
        return self

    def style_weights(self, style_weights: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Normalise a style input to ``(batch, num_styles)`` float32, exactly as :meth:`Generator.style_weights`."""
        return Generator.style_weights(self, style_weights, batch, device)  # type: ignore[arg-type]  # reads only .config

    # -- conditional instance norm, mixed once per style vector -----------------------------------------------

    def mixed_affine(self, weights: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per layer, ``gamma`` and ``beta`` flattened to ``(B*C,)`` for ``weights`` ``(B, S)``; cached for the last vector."""
        key = (tuple(weights.shape), weights.detach().float().cpu().numpy().tobytes())
        if key != self._style_key:
            affine: list[tuple[torch.Tensor, torch.Tensor] | None] = []
            for layer in self.layers:
                if layer.gamma is None:
                    affine.append(None)
                    continue
                # (B, S) @ (S, C) -> (B, C) -> (B*C,), the channel order of a (1, B*C, H, W) view.
                # Kept in float32 even for bf16 activations: batch_norm takes mixed types, and cuDNN wants fp32 here.
                gamma = (weights.float() @ layer.gamma.to(weights.device)).reshape(-1)
                beta = (weights.float() @ layer.beta.to(weights.device)).reshape(-1)
                affine.append((gamma, beta))
            self._style_key, self._affine = key, affine
        return self._affine

    # -- forward ------------------------------------------------------------------------------------------------

    def __call__(self, images: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, height, width = images.shape
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"images need at least {MIN_SIDE} pixels on each side, got {height}x{width}")
        weights = self.style_weights(style_weights, batch, images.device)
        affine = self.mixed_affine(weights)
        return self.core(images, affine, height, width)

    def core(self, images: torch.Tensor, affine: list, height: int, width: int) -> torch.Tensor:
        """The network proper on prepared inputs: a pure tensor function, the part :func:`torch.compile` sees."""
        x = images.to(self.dtype)
        if self.config.pixel_scale != 1.0:
            x = x * self.config.pixel_scale
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        # A layer whose output feeds only the next layer leaves its ReLU to that layer's padding copy (ReLU commutes
        # with padding): one pass less over its output. Not down2's or a residual block's: the skip sum reads those.
        x = self._run(self.head, affine[0], x, defer_relu=True)
        x = self._run(self.down1, affine[1], x, relu_input=self.head.relu, defer_relu=True)
        x = self._run(self.down2, affine[2], x, relu_input=self.down1.relu)
        index = 3
        for conv1, conv2 in self.residual:
            y = self._run(conv1, affine[index], x, defer_relu=True)
            y = self._run(conv2, affine[index + 1], y, relu_input=conv1.relu)
            x = y.add_(x)
            index += 2
        x = self._run(self.up1, affine[index], x, defer_relu=True)
        x = self._run(self.up2, affine[index + 1], x, relu_input=self.up1.relu, defer_relu=True)
        x = self._run(self.tail, affine[index + 2], x, relu_input=self.up2.relu)
        x = x[:, :, :height, :width].float()
        return self._to_pixels(x)

    @staticmethod
    def _run(
        layer: PreparedLayer,
        affine: tuple[torch.Tensor, torch.Tensor] | None,
        x: torch.Tensor,
        relu_input: bool = False,
        defer_relu: bool = False,
    ) -> torch.Tensor:
        """One layer. ``relu_input``: ``x`` still needs the previous layer's ReLU; ``defer_relu``: return this layer's
        output without its ReLU (the next call gets ``relu_input``)."""
        if x.dtype != layer.weight.dtype:  # mixed precision: layers may differ in dtype
            x = x.to(layer.weight.dtype)
        x = x.contiguous(memory_format=torch.channels_last if layer.channels_last else torch.contiguous_format)
        padded_copy = layer.pad and not layer.transposed and not layer.upsample and layer.layout != "subpixel"
        if relu_input and not (padded_copy and (layer.channels_last or layer.phases)):
            x = F.relu_(x)
            relu_input = False
        if layer.transposed:
            x = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1, output_padding=1)
        elif layer.layout == "subpixel":
            x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), layer.weight, layer.bias)
            if not layer.phases:
                x = F.pixel_shuffle(x, 2)
        elif layer.layout == "space_to_depth":
            if layer.phases:
                x = phase_reflect_pad(x, layer.pad // 2, relu=relu_input)
            else:
                x = F.pixel_unshuffle(reflect_pad(x, layer.pad, relu=relu_input), 2)
            x = F.pixel_shuffle(F.conv2d(x, layer.weight, layer.bias), 2)
        else:
            if layer.upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            if layer.pad:
                x = reflect_pad(x, layer.pad, relu=relu_input)
            x = F.conv2d(x, layer.weight, layer.bias, stride=layer.stride)
        if affine is not None and layer.phases and layer.layout == "subpixel":
            phases = x
            x = PreparedGenerator._normalize(layer, affine, phase_view(x))
            x = phase_unview(x, phases)
        elif affine is not None:
            x = PreparedGenerator._normalize(layer, affine, x)
        return F.relu_(x) if layer.relu and not defer_relu else x

    @staticmethod
    def _normalize(layer: PreparedLayer, affine: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Conditional instance norm of ``x`` ``(B, C, H, W)`` with the mixed ``affine`` ``(B*C,)`` pair."""
        batch, channels, h, w = x.shape
        if layer.channels_last and channels < WIDE_CHANNELS and x.device.type == "cpu":
            # A wide-input layer with a narrow output (the 26-style network's 32 -> 8 upsampling): batch_norm's
            # channels-last kernel does not parallelise over so few channels (8 at 384x512: 3.2 ms on two threads,
            # 1.6 on one), and the narrow layers after it run contiguous anyway.
            x = x.contiguous()
        if is_channels_last(x):
            x = instance_norm_channels_last(x, affine[0].view(batch, channels), affine[1].view(batch, channels), layer.eps)
        elif x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
            _instance_norm_cpu_(x.view(batch * channels, h * w), affine[0], affine[1], layer.eps)
        else:
            # Instance norm = batch norm over a (1, B*C, H, W) view; the affine rides along in the same kernel.
            x = F.batch_norm(x.reshape(1, batch * channels, h, w), None, None, affine[0], affine[1], True, 0.0, layer.eps)
            x = x.reshape(batch, channels, h, w)
        return x

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        activation = self.config.output_activation
        if activation == "sigmoid":
            return x.sigmoid_()
        if activation == "tanh":
            return x.tanh_().add_(1.0).mul_(0.5)
        if self.config.pixel_scale != 1.0:
            x = x.div_(self.config.pixel_scale)
        return x.clamp_(0.0, 1.0)
