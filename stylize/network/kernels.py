"""CPU kernels for channels-last maps: instance norm, reflection padding, and the four-phase layout.

oneDNN runs CPU convs natively on channels-last ``(B, C, H, W)`` tensors, but PyTorch's own instance norm and
reflection pad copy or crawl over that layout. These functions keep it, forward and (for training) backward; each
equals its plain PyTorch counterpart (``F.instance_norm``, ``F.pad(mode="reflect")``) within float rounding, and
tests compare them. Under ``torch.compile`` they fall back to PyTorch's ops, which inductor fuses itself.

Used by the reference network's training path (:mod:`stylize.network.generator`) and by the inference fast path
(:mod:`stylize.engine.fastpath`); nothing here knows about the generator's layers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Norms over fewer channels than this are slower channels-last than contiguous on the CPU (batch_norm's
#: channels-last kernel does not parallelise over so few channels: 4 channels at 1024x768, 13 against 2.3 ms).
WIDE_CHANNELS = 16


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
    that map, 0.04/255 in a final image), far inside the precision tolerance (``stylize.engine.precision``). bf16/fp16
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


class ReflectPadChannelsLast(torch.autograd.Function):
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



def instance_norm_cpu_(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> None:
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




def instance_norm_(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """Instance norm of ``x`` ``(B, C, H, W)`` with per-image affine ``gamma``/``beta`` flattened to ``(B*C,)``, by the
    fastest kernel for its layout, dtype and device; may work in place on ``x`` and returns the result.

    Channels-last maps keep their layout (:func:`instance_norm_channels_last`), except narrow ones on the CPU, which
    are faster contiguous; contiguous float32 maps on the CPU are normalised in place (:func:`instance_norm_cpu_`);
    anything else is one ``batch_norm`` over a ``(1, B*C, H, W)`` view, the affine riding along in the same kernel
    (``F.instance_norm`` is that kernel plus two more passes for the affine).
    """
    batch, channels, height, width = x.shape
    if is_channels_last(x) and channels < WIDE_CHANNELS and x.device.type == "cpu":
        x = x.contiguous()
    if is_channels_last(x):
        return instance_norm_channels_last(x, gamma.view(batch, channels), beta.view(batch, channels), eps)
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
        instance_norm_cpu_(x.view(batch * channels, height * width), gamma, beta, eps)
        return x
    y = F.batch_norm(x.reshape(1, batch * channels, height, width), None, None, gamma, beta, True, 0.0, eps)
    return y.reshape(batch, channels, height, width)


def channel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and biased variance ``(B, C)`` float32 of ``x`` ``(B, C, H, W)`` (any layout).

    Reduced along the memory order (a channels-last map as ``(B, H*W, C)``, a contiguous one as ``(B, C, H*W)``), in
    two passes: the mean, then the mean square of the centred values (``torch.var_mean``'s one-pass kernel took twice
    as long on the CPU).
    """
    batch, channels, height, width = x.shape
    if is_channels_last(x):
        flat, dim = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels), 1
    else:
        flat, dim = x.reshape(batch, channels, height * width), 2
    flat = flat.float()
    mean = flat.mean(dim, keepdim=True)
    var = (flat - mean).square_().mean(dim)
    return mean.squeeze(dim), var


def batch_norm_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`channel_statistics` by PyTorch's batch-norm statistics kernel, one image at a time: one pass in the
    map's own layout and dtype instead of two over a float32 copy, as exact as the statistics the fused norm computes
    for itself (:func:`instance_norm_channels_last`). Maps of fewer than :data:`WIDE_CHANNELS` channels take
    :func:`channel_statistics`: the kernel splits its work by channel, and a few channels leave cores idle."""
    # dynamo cannot trace the running buffers
    if torch.compiler.is_compiling() or x.shape[1] < WIDE_CHANNELS:
        return channel_statistics(x)
    batch, channels, height, width = x.shape
    mean = torch.zeros(batch, channels, dtype=torch.float32, device=x.device)
    var = torch.ones_like(mean)
    for i in range(batch):  # momentum 1: the running buffers become this image's mean and unbiased variance
        torch.batch_norm_update_stats(x[i : i + 1], mean[i], var[i], 1.0)
    count = height * width
    return mean, var.mul_((count - 1) / count) if count > 1 else var.zero_()


def batch_norm_with_(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
) -> torch.Tensor:
    """:func:`normalize_with_` by PyTorch's batch-norm kernel in evaluation mode, one image at a time, in place on
    ``x``: one pass instead of two, and no new map (on the CPU a fresh map of that size costs more in page faults
    than the pass itself)."""
    if torch.compiler.is_compiling():  # dynamo cannot trace out= into strided slices
        return normalize_with_(x, mean, var, gamma, beta, eps)
    unused = torch.empty(0, device=x.device)
    mean, var, gamma, beta = (t.float().contiguous() for t in (mean, var, gamma, beta))
    for i in range(x.shape[0]):
        torch.ops.aten.native_batch_norm.out(
            x[i : i + 1], gamma[i], beta[i], mean[i], var[i], False, 0.0, eps, out=x[i : i + 1], save_mean=unused, save_invstd=unused
        )
    return x


def normalize_with_(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with given ``(B, C)`` statistics and affine, in place on ``x``
    (any layout; the per-channel factors broadcast over H and W)."""
    scale = gamma * torch.rsqrt(var + eps)  # (B, C)
    shift = beta - mean * scale
    return x.mul_(scale.to(x.dtype)[:, :, None, None]).add_(shift.to(x.dtype)[:, :, None, None])
