"""Exact tiled ("streamed") inference for images of any size within a memory budget.

Instance normalisation needs the statistics of the *whole* activation map, so naive tiles (each normalised by
its own statistics) come out in different tones with visible seams. Here the network runs one layer at a time:

1. **Conv stage** – the layer's conv is computed tile by tile. Each tile reads its receptive-field halo from the
   neighbouring real pixels of the stored input map; only at the true image border is it reflected, by the same
   index arithmetic the whole-image conv's reflection padding uses (and nearest x2 upsampling is index ``// 2``).
   The pre-norm output is written to a whole-image map and its per-channel mean and biased variance are merged
   over tiles (Chan et al.'s parallel update, float64).
2. **Finish pass** – once the statistics are complete the stored map is normalised, scaled/shifted by the
   style's gamma/beta, passed through ReLU and added to the residual skip, in place, strip by strip.

This module holds both halves, the estimates that decide whole or streamed and the streamer itself, because both
walk the same layer geometry (:func:`source_index`, :func:`estimate_stream`); hence its length.

The result equals the whole-image forward pass up to float rounding. The whole-image maps (``(H, C, W)``
row-major so a strip of rows is one contiguous range) live in RAM when the budget allows and otherwise in files
under a :class:`tempfile.TemporaryDirectory` (float16 unless the model works on a 0-255 scale), read and written
with plain file I/O so that they never count towards the process's resident memory. Images are ``(1, 3, H, W)``
float in ``[0, 1]`` in and out, as everywhere in the network code.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from stylize.config import TilingConfig
from stylize.devices import DTYPES
from stylize.network import AddSkip, Conv, Generator, NormStatistics, SaveSkip, check_size, padded_size, to_pixels, topology

# Calibration of the whole-image estimate: bytes live per byte of a layer's output at its peak (conv output,
# instance_norm result, the gamma product and oneDNN's blocked-layout copies), measured as peak RSS on the CPU.
_WHOLE_OUTPUT_FACTOR = 4.0
_WHOLE_INPUT_FACTOR = 2.0
# Rows normalised at once in the finish pass, in bytes of float32.
_FINISH_STRIP_BYTES = 64 * 1024**2
# Target size of a conv stage's input and output strip buffers; wide images get strips less than a tile high.
_STRIP_BYTES = 128 * 1024**2


def mem_available() -> int:
    """Bytes of RAM the kernel says are available (MemAvailable), or 4 GB where there is no /proc (macOS, Windows)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3


# -- the layers' geometry ---------------------------------------------------------------------------------------


def source_index(step: Conv, start: int, stop: int, size: int) -> tuple[torch.Tensor, int]:
    """Conv-input positions (after the x2 upsample, if any) that output positions ``[start, stop)`` of ``step`` read.

    ``size`` is the stored input map's length. Returns the index tensor and how many leading conv outputs to drop
    (non-zero for transposed convs only). The whole-image conv pads by reflection; reflecting the indices reproduces it
    exactly at true borders, and inside the image the halo is the real neighbouring pixels.
    """
    if step.transposed:  # stride 2, kernel 3, padding 1, output_padding 1: output o gets inputs (o - 1 + {0,1,2}) / 2
        first = max(0, math.ceil((start - 1) / 2))
        last = min(size, stop // 2 + 1)
        return torch.arange(first, last), start - 2 * first + 1
    conv_in = 2 * size if step.upsample else size
    rows = torch.arange(start * step.stride - step.pad, (stop - 1) * step.stride - step.pad + step.kernel)
    return _reflect(rows, conv_in), 0


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflection padding as index arithmetic: -1 -> 1, size -> size - 2 (pad < size)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def _take(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(dim, index)`` built from slices of the contiguous runs of ``index`` (far faster on the CPU)."""
    values = index.tolist()
    runs, begin = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[i - 1] + 1:
            runs.append(x.narrow(dim, values[begin], i - begin))
            begin = i
    return runs[0] if len(runs) == 1 else torch.cat(runs, dim)


# -- memory estimates ------------------------------------------------------------------------------------------


def estimate_whole_bytes(generator: Generator, height: int, width: int, batch: int = 1, precision: str = "fp32") -> int:
    """Estimated peak memory of a whole-image forward pass (the input and output tensors included).

    The largest layer dominates: its input (and upsampled input), its conv output and the temporaries of
    instance norm and ReLU, scaled by factors measured as peak RSS on the CPU (see docs/tiling.md). Under bf16 or
    fp16 the convs and norms produce half-size maps; the (float32) input copy is counted in full.
    """
    element = 2 if precision in ("bf16", "fp16") else 4
    h, w = padded_size(height, width)
    channels, peak, skip = 3, 0, 0
    for step in generator.plan:
        if isinstance(step, SaveSkip):
            skip = channels * h * w * 4
        elif isinstance(step, AddSkip):
            skip = 0
        else:
            oh, ow = step.out_size(h), step.out_size(w)
            inputs = step.in_channels * h * w * (5 if step.upsample else 1)
            peak = max(peak, skip + _WHOLE_INPUT_FACTOR * inputs * 4 + _WHOLE_OUTPUT_FACTOR * step.out_channels * oh * ow * element)
            channels, h, w = step.out_channels, oh, ow
    return int(batch * (peak + 2 * 3 * height * width * 4))


def largest_whole_tensor(generator: Generator, height: int, width: int, batch: int = 1) -> int:
    """Elements in the largest tensor of a whole-image pass: a layer's padded (or upsampled) input, or its output."""
    h, w = padded_size(height, width)
    largest = 0
    for step in topology.conv_steps(generator.plan):
        conv_h, conv_w = (2 * h, 2 * w) if step.upsample else (h, w)
        oh, ow = step.out_size(h), step.out_size(w)
        largest = max(largest, step.in_channels * (conv_h + 2 * step.pad) * (conv_w + 2 * step.pad), step.out_channels * oh * ow)
        h, w = oh, ow
    return batch * largest


#: CUDA kernels of several ops (reflection pad, nearest upsampling) index with 32-bit integers and refuse larger
#: tensors ("input tensor must fit into 32-bit index math"); seen at 8192x8192 on an H200 (docs/gpu.md).
CUDA_MAX_ELEMENTS = 2**31 - 1


@dataclass(frozen=True)
class StreamEstimate:
    """Peak memory of a streamed pass: the whole-image maps (RAM or disk) and the per-tile working set."""

    maps_bytes: int  # the largest set of whole-image maps alive at once, in the storage dtype
    working_bytes: int  # strip buffers and tile tensors of the most demanding layer, plus input and output
    storage_dtype: torch.dtype

    @property
    def ram_bytes(self) -> int:
        """Peak memory with the maps kept in RAM."""
        return self.maps_bytes + self.working_bytes

    @property
    def disk_bytes(self) -> int:
        """Peak memory with the maps in temporary files (their size is ``maps_bytes``)."""
        return self.working_bytes


def estimate_stream(generator: Generator, height: int, width: int, tile: int, storage_dtype: torch.dtype | None = None) -> StreamEstimate:
    """Estimate a streamed pass of one ``height`` x ``width`` image with ``tile``-pixel tiles."""
    dtype = storage_dtype or _storage_dtype(generator, "ram")
    element = torch.empty((), dtype=dtype).element_size()
    h, w = padded_size(height, width)
    peak_maps, working, previous, block_input = 0, 0, 0, 0
    plan = generator.plan
    for index, step in enumerate(plan):
        if isinstance(step, SaveSkip):
            block_input = previous
            continue
        if isinstance(step, AddSkip):
            continue
        oh, ow = step.out_size(h), step.out_size(w)
        out_bytes = step.out_channels * oh * ow * element
        # Alive during a layer: its input map, its output map and, before a skip sum, the block's input.
        adds_skip = index + 1 < len(plan) and isinstance(plan[index + 1], AddSkip)
        peak_maps = max(peak_maps, previous + out_bytes + (block_input if adds_skip else 0))
        previous = out_bytes
        tile_h = _tile_height(step, tile, step.in_channels * w * element, step.out_channels * ow * element)
        rows_in = tile_h * step.stride // (2 if step.upsample or step.transposed else 1) + step.kernel
        strip_in = 2 * rows_in * step.in_channels * w * element  # the strip read and a gathered copy at borders
        tile_in = 3 * step.in_channels * (tile * step.stride + step.kernel) ** 2 * 4
        tile_out = 3 * step.out_channels * tile * tile * 4
        strip_out = tile_h * step.out_channels * ow * element
        finish = 4 * min(_FINISH_STRIP_BYTES, tile * step.out_channels * ow * 4)
        working = max(working, strip_in + tile_in + tile_out + strip_out, finish)
        h, w = oh, ow
    return StreamEstimate(peak_maps, working + 2 * 3 * height * width * 4, dtype)


def _tile_height(step: Conv, tile: int, in_row_bytes: int, out_row_bytes: int) -> int:
    """Rows of output per strip: ``tile``, fewer for very wide images so that a strip's buffers stay near 128 MB."""
    in_rows_per_out_row = step.stride / (2 if step.upsample or step.transposed else 1)
    per_row = in_row_bytes * in_rows_per_out_row + out_row_bytes
    return int(max(16, min(tile, _STRIP_BYTES // per_row)))


def _storage_dtype(generator: Generator, storage: str) -> torch.dtype:
    # float16 halves the files; models on a 0-255 scale can exceed its range (65504) before normalisation.
    if storage == "disk" and generator.config.pixel_scale == 1.0:
        return torch.float16
    return torch.float32


@dataclass(frozen=True)
class Decision:
    """What ``auto`` chose and why (the estimates in bytes)."""

    mode: str  # "whole" or "stream"
    storage: str  # "ram" or "disk" (for "stream")
    tile: int
    budget: int
    whole_bytes: int
    stream: StreamEstimate


def decide(
    generator: Generator,
    height: int,
    width: int,
    budget: int,
    *,
    batch: int = 1,
    tile: int | None = None,
    stream_only: bool = False,
    shrink: bool = True,
    precision: str = "fp32",
    ram_budget: int | None = None,
    max_elements: int | None = None,
    config: TilingConfig = TilingConfig(),
) -> Decision:
    """Whole when the estimated whole-image peak fits ``budget``; otherwise stream, with the maps in RAM if they fit.

    ``stream_only`` never chooses the whole pass; ``shrink`` lets the tile be halved (down to ``config.min_tile``) until
    the streamed estimate fits, else ``tile`` is used as it is.
    ``ram_budget`` bounds where the maps live (host RAM); it defaults to ``budget``, the CPU case.
    ``max_elements`` (CUDA's 32-bit indexing) also streams a pass whose largest tensor would be bigger.
    """
    tile = tile or config.tile
    host = budget if ram_budget is None else ram_budget
    whole = estimate_whole_bytes(generator, height, width, batch, precision)
    indexable = max_elements is None or largest_whole_tensor(generator, height, width, batch) <= max_elements
    if whole <= budget and indexable and not stream_only:
        return Decision("whole", "ram", tile, budget, whole, estimate_stream(generator, height, width, tile))
    tiles = ([t for t in (tile >> i for i in range(8)) if t >= config.min_tile] or [tile]) if shrink else [tile]
    for storage in ("ram", "disk"):
        dtype = _storage_dtype(generator, storage)
        for size in tiles:
            stream = estimate_stream(generator, height, width, size, dtype)
            if (stream.ram_bytes if storage == "ram" else stream.disk_bytes) <= host:
                return Decision("stream", storage, size, budget, whole, stream)
    # Nothing fits the estimate: try the smallest tile on disk anyway (the estimate errs on the safe side).
    return Decision("stream", "disk", tiles[-1], budget, whole, estimate_stream(generator, height, width, tiles[-1], dtype))


# -- stored whole-image maps -------------------------------------------------------------------------------------


class _RamMap:
    """A whole-image activation map ``(H, C, W)`` in RAM."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.height, self.channels, self.width = data.shape
        self.dtype = data.dtype

    def read_rows(self, start: int, stop: int) -> torch.Tensor:
        return self.data[start:stop]

    def rows_view(self, start: int, stop: int) -> torch.Tensor:
        """Where to put rows ``[start, stop)`` before :meth:`write_rows`: the map itself."""
        return self.data[start:stop]

    def write_rows(self, start: int, rows: torch.Tensor) -> None:
        target = self.data[start : start + rows.shape[0]]
        if target.data_ptr() != rows.data_ptr() or target.dtype != rows.dtype:  # rows from rows_view are already there
            target.copy_(rows)

    def close(self) -> None:
        self.data = None


class _FileMap:
    """A whole-image activation map ``(H, C, W)`` in a file; rows are read and written with plain I/O.

    Unlike a memory map, file I/O leaves the pages in the kernel's cache, not in this process's resident set.
    """

    def __init__(self, path: Path, height: int, channels: int, width: int, dtype: torch.dtype) -> None:
        self.path, self.height, self.channels, self.width, self.dtype = path, height, channels, width, dtype
        self.row_bytes = channels * width * torch.empty((), dtype=dtype).element_size()
        self.file = open(path, "w+b")  # noqa: SIM115 - closed in close(), the folder is removed by the caller
        self.file.truncate(self.row_bytes * height)

    def read_rows(self, start: int, stop: int) -> torch.Tensor:
        rows = torch.empty((stop - start, self.channels, self.width), dtype=self.dtype)
        view = memoryview(rows.numpy()).cast("B")
        self.file.seek(start * self.row_bytes)
        done = 0
        while done < len(view):
            count = self.file.readinto(view[done:])
            if not count:
                raise OSError(f"short read from {self.path}")
            done += count
        return rows

    def rows_view(self, start: int, stop: int) -> torch.Tensor:
        return torch.empty((stop - start, self.channels, self.width), dtype=self.dtype)

    def write_rows(self, start: int, rows: torch.Tensor) -> None:
        self.file.seek(start * self.row_bytes)
        self.file.write(memoryview(rows.to(self.dtype).contiguous().numpy()).cast("B"))

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            self.path.unlink(missing_ok=True)


# -- the streamed forward pass -------------------------------------------------------------------------------------


def stream_forward(
    generator: Generator,
    image: torch.Tensor,
    style_weights: torch.Tensor | None = None,
    *,
    tile: int = TilingConfig.tile,
    storage: str = "ram",
    precision: str = "fp32",
    device: torch.device | str | None = None,
    temp_dir: str | os.PathLike | None = None,
    statistics: NormStatistics | None = None,
) -> torch.Tensor:
    """Stylize one image ``(1, 3, H, W)`` in ``[0, 1]`` layer by layer in tiles; returns ``(1, 3, H, W)`` float32 on the CPU.

    ``storage`` is ``"ram"`` or ``"disk"`` (temporary files under ``temp_dir``, removed even on errors);
    :func:`decide` chooses it. ``precision`` runs the convs under autocast as the engine does. ``statistics`` gets each
    layer's exact whole-image statistics and gives those to normalise with (see
    :class:`~stylize.network.topology.NormStatistics`).
    """
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"stream_forward takes one image (1, 3, H, W), got {tuple(image.shape)}")
    if storage not in ("ram", "disk"):
        raise ValueError(f"storage must be 'ram' or 'disk', got {storage!r}")
    check_size(*image.shape[-2:])
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    weights = topology.style_weights(style_weights, generator.config.num_styles, 1, device)
    context = tempfile.TemporaryDirectory(prefix="stylize-tiles-", dir=temp_dir) if storage == "disk" else nullcontext(None)
    with context as folder, torch.inference_mode():
        streamer = _Streamer(generator, weights, tile, device, precision, folder, _storage_dtype(generator, storage), statistics)
        try:
            return streamer.run(image.detach().float().cpu())
        finally:
            streamer.close()


class _Streamer:
    """One streamed pass: walks the generator's plan, keeping each layer's whole-image map in RAM or a file.

    Longer than a screen: the conv stage (tiles with their halos) and the finish pass (normalise, activate, skip) of
    one layer share the maps it owns and releases.
    """

    def __init__(
        self, generator: Generator, weights: torch.Tensor, tile: int, device: torch.device, precision: str, folder, dtype, statistics=None
    ) -> None:
        self.generator, self.weights, self.tile, self.device = generator, weights, tile, device
        self.statistics = statistics
        self.autocast = None if precision == "fp32" else DTYPES[precision]
        self.folder = Path(folder) if folder else None
        self.dtype = dtype
        self.maps: list = []

    def close(self) -> None:
        for stored in self.maps:
            stored.close()

    def new_map(self, name: str, height: int, channels: int, width: int, dtype: torch.dtype | None = None):
        dtype = dtype or self.dtype
        if self.folder is None:
            stored = _RamMap(torch.empty((height, channels, width), dtype=dtype))
        else:
            stored = _FileMap(self.folder / f"{name}.bin", height, channels, width, dtype)
        self.maps.append(stored)
        return stored

    def release(self, stored) -> None:
        """Close a map this streamer made (the input image and ``None`` are left alone)."""
        if any(stored is m for m in self.maps):
            stored.close()
            self.maps = [m for m in self.maps if m is not stored]

    def run(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        size = (height, width)
        output = torch.empty((1, 3, height, width))
        # The input "map" is the image itself; padding to a multiple of 4 happens in the first layer's indices.
        x = _RamMap(image[0].permute(1, 0, 2))
        plan = self.generator.plan
        skip = None
        for index, step in enumerate(plan):
            if isinstance(step, SaveSkip):
                skip = x
                continue
            if isinstance(step, AddSkip):  # folded into the finish pass of the conv before it
                self.release(skip)
                skip = None
                continue
            first, last = index == 0, index == len(plan) - 1
            adds_skip = index + 1 < len(plan) and isinstance(plan[index + 1], AddSkip)
            if not step.norm:
                if adds_skip:
                    raise ValueError(f"streaming a skip sum after a conv without a norm ({step.name}) is not supported")
                y = self.conv_stage(step, x, None, output if last else None, first, size)[0]
            else:
                dtype = torch.float32 if last else None  # the 3-channel pre-norm output is small: keep it exact
                y, stats = self.conv_stage(step, x, dtype, None, first, size)
                self.finish(step, y, stats, skip if adds_skip else None, output if last else None, size)
            if x is not skip:
                self.release(x)
            x = y
        self.release(x)
        return output

    def conv_stage(self, step: Conv, src, dtype, output, first: bool, size: tuple[int, int]):
        """Run ``step``'s conv over ``src`` in tiles; return the stored map and its statistics (None without a norm).

        Without a norm the tiles get their activation at once: ReLU into the stored map, or (the output layer)
        ``to_pixels`` straight into ``output``.
        """
        height, width = size
        src_h, src_w = padded_size(height, width) if first else (src.height, src.width)
        out_h, out_w = step.out_size(src_h), step.out_size(src_w)
        dst = None if output is not None else self.new_map(step.name, out_h, step.out_channels, out_w, dtype)
        stats = _Stats(step.out_channels) if step.norm else None
        conv = self.generator.layer(step).conv
        scale = self.generator.config.pixel_scale
        in_row = src.channels * src.width * src.dtype.itemsize
        out_row = step.out_channels * out_w * (dst.dtype.itemsize if dst is not None else 4)
        # Only file-backed maps need strip buffers (a RAM map's strip is a view): cap the strip height for those alone.
        buffered = isinstance(src, _FileMap) or isinstance(dst, _FileMap)
        tile_h = _tile_height(step, self.tile, in_row, out_row) if buffered else self.tile
        for top in range(0, out_h, tile_h):
            bottom = min(top + tile_h, out_h)
            rows, row_crop = source_index(step, top, bottom, src_h)  # conv-input coordinates
            src_rows = rows // 2 if step.upsample else rows
            if first:
                src_rows = _reflect(src_rows, height)  # the reflection pad to a multiple of 4, done once by the whole pass
            r0 = int(src_rows.min())
            strip = src.read_rows(r0, int(src_rows.max()) + 1)  # (h, C, W)
            strip_rows = strip if step.upsample else _take(strip, 0, src_rows - r0)
            out_strip = None if dst is None else dst.rows_view(top, bottom)
            for left in range(0, out_w, self.tile):
                right = min(left + self.tile, out_w)
                cols, col_crop = source_index(step, left, right, src_w)
                if step.upsample:  # nearest x2 of the source block, then the conv-input positions inside it
                    c0 = int(cols.min()) // 2
                    block = strip[:, :, c0 : int(cols.max()) // 2 + 1].permute(1, 0, 2).unsqueeze(0).to(self.device, torch.float32)
                    block = F.interpolate(block, scale_factor=2, mode="nearest")
                    tile = _take(_take(block, 2, rows - 2 * r0), 3, cols - 2 * c0)
                else:
                    if first:
                        cols = _reflect(cols, width)
                    tile = _take(strip_rows, 2, cols).permute(1, 0, 2).unsqueeze(0).to(self.device, torch.float32)
                if first and scale != 1.0:
                    tile = tile * scale
                with torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else nullcontext():
                    if step.transposed:
                        y = F.conv_transpose2d(tile, conv.weight, conv.bias, stride=2)
                    else:
                        y = F.conv2d(tile, conv.weight, conv.bias, stride=step.stride)
                y = y.float()[:, :, row_crop : row_crop + bottom - top, col_crop : col_crop + right - left]
                if output is not None:  # the output layer without a norm
                    h_end, w_end = min(bottom, height), min(right, width)
                    if top < h_end and left < w_end:
                        pixels = to_pixels(y[:, :, : h_end - top, : w_end - left], self.generator.config)
                        output[:, :, top:h_end, left:w_end] = pixels.cpu()
                    continue
                if stats is not None:
                    stats.add(y[0])
                elif step.relu:
                    y = y.relu_()
                out_strip[:, :, left:right] = y[0].permute(1, 0, 2).to("cpu", out_strip.dtype)
            if dst is not None:
                dst.write_rows(top, out_strip)
        return dst, stats

    def finish(self, step: Conv, stored, stats: _Stats, skip, output, size: tuple[int, int]) -> None:
        """Normalise ``stored`` with the whole-image statistics, then ReLU and skip, in place (or into ``output``)."""
        norm = self.generator.layer(step).norm
        gamma = (self.weights @ norm.gamma.to(self.weights.dtype))[0].double().cpu()
        beta = (self.weights @ norm.beta.to(self.weights.dtype))[0].double().cpu()
        mean, var = stats.mean, stats.m2 / stats.count  # (C,) float64, the whole image's
        if self.statistics is not None:
            given = self.statistics(step.name, mean.float()[None], var.float()[None])
            mean, var = given[0][0].double(), given[1][0].double()
        factor = (gamma / torch.sqrt(var + norm.eps)).float()[None, :, None]
        mean = mean.float()[None, :, None]
        shift = beta.float()[None, :, None]
        # Strips of at most ~64 MB in float32: pointwise work needs no halo.
        rows = max(1, min(self.tile, _FINISH_STRIP_BYTES // (stored.channels * stored.width * 4)))
        for top in range(0, stored.height, rows):
            bottom = min(top + rows, stored.height)
            x = stored.read_rows(top, bottom).float()  # (h, C, W); in RAM a view of the map, changed in place
            x.sub_(mean).mul_(factor).add_(shift)
            if step.relu:
                x.relu_()
            if skip is not None:
                x.add_(skip.read_rows(top, bottom))
            if output is not None:
                height, width = size
                if top < height:
                    pixels = to_pixels(x.permute(1, 0, 2)[:, : height - top, :width], self.generator.config)
                    output[0, :, top : min(bottom, height)] = pixels
            else:
                stored.write_rows(top, x)


class _Stats:
    """Per-channel mean and biased variance merged over tiles (Chan et al.), in float64."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def add(self, tile: torch.Tensor) -> None:
        """Merge the statistics of one tile ``(C, h, w)``."""
        flat = tile.flatten(1)  # (C, h * w)
        mean = flat.mean(1)
        var = (flat - mean[:, None]).square_().mean(1)  # biased, as instance norm's
        var, mean = var.double().cpu(), mean.double().cpu()
        count = tile.shape[1] * tile.shape[2]
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += var * count + delta**2 * self.count * count / total
        self.count = total
