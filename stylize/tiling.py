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

The result equals the whole-image forward pass up to float rounding. The whole-image maps (``(H, C, W)``
row-major so a strip of rows is one contiguous range) live in RAM when the budget allows and otherwise in files
under a :class:`tempfile.TemporaryDirectory` (float16 unless the model works on a 0-255 scale), read and written
with plain file I/O so that they never count towards the process's resident memory. Images are ``(1, 3, H, W)``
float in ``[0, 1]`` in and out, as everywhere in the network code.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from stylize.config import TilingConfig
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.network import SIZE_MULTIPLE, ConvNormAct, Generator, TransposedConvNormAct

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_UNITS.update({f"{u}ib": v for u, v in list(_UNITS.items()) if u not in ("", "b")})
_UNITS.update({"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4})

# Calibration of the whole-image estimate: bytes live per byte of a layer's output at its peak (conv output,
# instance_norm result, the gamma product and oneDNN's blocked-layout copies), measured as peak RSS on the CPU.
_WHOLE_OUTPUT_FACTOR = 4.0
_WHOLE_INPUT_FACTOR = 2.0
# Rows normalised at once in the finish pass, in bytes of float32.
_FINISH_STRIP_BYTES = 64 * 1024**2
# Target size of a conv stage's input and output strip buffers; wide images get strips less than a tile high.
_STRIP_BYTES = 128 * 1024**2


# -- user input ---------------------------------------------------------------------------------------------


def parse_memory_size(text: str | int | None) -> int | None:
    """``"2GB"`` -> 2e9, ``"512MiB"`` or ``"512M"`` -> 512 * 2**20, ``"1.5G"``, ``"1000000"`` (bytes); ``None`` stays ``None``.

    Units: B, KB/MB/GB/TB (powers of 1000), K/M/G/T and KiB/MiB/GiB/TiB (powers of 1024); case-insensitive.
    """
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise StylizeError(f"bad memory size '{text}'", "write a number with a unit, e.g. 2GB, 512MiB or 1.5G")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size < 64 * 1024**2:
        raise StylizeError(f"memory limit {text} is too small", "give at least 64MB, e.g. --memory-limit 1GB")
    return size


def parse_tile(tile: str | int) -> str | int:
    """``"auto"``, ``"off"`` or a tile side in pixels (at least 16) from a CLI string or a Python value."""
    text = str(tile).strip().lower()
    if text in ("auto", "off"):
        return text
    if not text.isdigit():
        raise StylizeError(f"bad tile setting '{tile}'", "use --tile auto, --tile off or a tile side in pixels, e.g. --tile 512")
    pixels = int(text)
    if pixels < 16:
        raise StylizeError(f"tile side must be at least 16 pixels, got {pixels}", "e.g. --tile 256")
    return pixels


def available_memory(device: torch.device, config: TilingConfig = TilingConfig()) -> int:
    """The default budget: a share of free GPU memory on CUDA, a share of MemAvailable on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * config.gpu_share)
    return int(_mem_available() * config.ram_share)


def _mem_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3  # no /proc (macOS, Windows): assume a modest machine


# -- the layer plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One conv of the generator with what the streamer needs to know about it."""

    name: str
    module: ConvNormAct | TransposedConvNormAct
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    upsample: bool  # nearest x2 before the conv
    transposed: bool
    relu: bool

    @property
    def norm(self):
        return self.module.norm

    def out_size(self, size: int) -> int:
        """Output length of this layer for an input map of length ``size``."""
        if self.transposed:
            return 2 * size
        conv_in = 2 * size if self.upsample else size
        return (conv_in - 1) // self.stride + 1  # reflection padding of kernel // 2 on both sides

    def source_index(self, start: int, stop: int, size: int) -> tuple[torch.Tensor, int]:
        """Conv-input positions (after the x2 upsample, if any) that output positions ``[start, stop)`` read.

        ``size`` is the stored input map's length. Returns the index tensor and how many leading conv outputs to
        drop (non-zero for transposed convs only). The whole-image conv pads by reflection; reflecting the indices
        reproduces it exactly at true borders, and inside the image the halo is the real neighbouring pixels.
        """
        if self.transposed:  # stride 2, kernel 3, padding 1, output_padding 1: output o gets inputs (o - 1 + {0,1,2}) / 2
            first = max(0, math.ceil((start - 1) / 2))
            last = min(size, stop // 2 + 1)
            return torch.arange(first, last), start - 2 * first + 1
        pad = self.kernel // 2
        conv_in = 2 * size if self.upsample else size
        return _reflect(torch.arange(start * self.stride - pad, (stop - 1) * self.stride - pad + self.kernel), conv_in), 0


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


def _plan(generator: Generator) -> list[_Layer]:
    def layer(name: str, module) -> _Layer:
        conv = module.conv
        if isinstance(module, TransposedConvNormAct):
            if conv.kernel_size != (3, 3) or conv.stride != (2, 2) or conv.padding != (1, 1) or conv.output_padding != (1, 1):
                raise StylizeError("tiled inference supports only 3x3 stride-2 transposed convs", "use --tile off")
            return _Layer(name, module, conv.in_channels, conv.out_channels, 3, 2, False, True, True)
        if conv.padding_mode != "reflect" or conv.dilation != (1, 1) or conv.groups != 1:
            raise StylizeError(f"tiled inference cannot stream layer {name}", "use --tile off")
        return _Layer(
            name, module, conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], module.upsample, False, module.relu
        )

    layers = [layer("head", generator.head), layer("down1", generator.down1), layer("down2", generator.down2)]
    for i, block in enumerate(generator.residual):
        layers += [layer(f"residual{i}.conv1", block.conv1), layer(f"residual{i}.conv2", block.conv2)]
    layers += [layer("up1", generator.up1), layer("up2", generator.up2), layer("tail", generator.tail)]
    return layers


# -- memory estimates ------------------------------------------------------------------------------------------


def _padded(height: int, width: int) -> tuple[int, int]:
    return height + (-height % SIZE_MULTIPLE), width + (-width % SIZE_MULTIPLE)


def estimate_whole_bytes(generator: Generator, height: int, width: int, batch: int = 1, precision: str = "fp32") -> int:
    """Estimated peak memory of a whole-image forward pass (the input and output tensors included).

    The largest layer dominates: its input (and upsampled input), its conv output and the temporaries of
    instance norm and ReLU, scaled by factors measured as peak RSS on the CPU (see docs/tiling.md). Under bf16 or
    fp16 autocast the convs and norms produce half-size maps; the (float32) input copy is counted in full.
    """
    element = 2 if precision in ("bf16", "fp16") else 4
    h, w = _padded(height, width)
    peak = 0
    skip = 0
    for layer in _plan(generator):
        if layer.name.endswith("conv1"):
            skip = layer.in_channels * h * w * 4
        elif not layer.name.startswith("residual"):
            skip = 0
        oh, ow = layer.out_size(h), layer.out_size(w)
        inputs = layer.in_channels * h * w * (5 if layer.upsample else 1)
        here = skip + _WHOLE_INPUT_FACTOR * inputs * 4 + _WHOLE_OUTPUT_FACTOR * layer.out_channels * oh * ow * element
        peak = max(peak, here)
        h, w = oh, ow
    return int(batch * (peak + 2 * 3 * height * width * 4))


def largest_whole_tensor(generator: Generator, height: int, width: int, batch: int = 1) -> int:
    """Elements in the largest tensor of a whole-image pass: a layer's padded (or upsampled) input, or its output."""
    h, w = _padded(height, width)
    largest = 0
    for layer in _plan(generator):
        conv_h, conv_w = (2 * h, 2 * w) if layer.upsample else (h, w)
        pad = 0 if layer.transposed else layer.kernel // 2
        oh, ow = layer.out_size(h), layer.out_size(w)
        largest = max(largest, layer.in_channels * (conv_h + 2 * pad) * (conv_w + 2 * pad), layer.out_channels * oh * ow)
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
    h, w = _padded(height, width)
    peak_maps, working, previous, block_input = 0, 0, 0, 0
    for layer in _plan(generator):
        oh, ow = layer.out_size(h), layer.out_size(w)
        out_bytes = layer.out_channels * oh * ow * element
        # Alive during a layer: its input map, its output map and, in a residual block's second conv, the block input.
        peak_maps = max(peak_maps, previous + out_bytes + (block_input if layer.name.endswith("conv2") else 0))
        if layer.name.endswith("conv1"):
            block_input = previous
        previous = out_bytes
        tile_h = _tile_height(layer, tile, layer.in_channels * w * element, layer.out_channels * ow * element)
        rows_in = tile_h * layer.stride // (2 if layer.upsample or layer.transposed else 1) + layer.kernel
        strip_in = 2 * rows_in * layer.in_channels * w * element  # the strip read and a gathered copy at borders
        tile_in = 3 * layer.in_channels * (tile * layer.stride + layer.kernel) ** 2 * 4
        tile_out = 3 * layer.out_channels * tile * tile * 4
        strip_out = tile_h * layer.out_channels * ow * element
        finish = 4 * min(_FINISH_STRIP_BYTES, tile * layer.out_channels * ow * 4)
        working = max(working, strip_in + tile_in + tile_out + strip_out, finish)
        h, w = oh, ow
    return StreamEstimate(peak_maps, working + 2 * 3 * height * width * 4, dtype)


def _tile_height(layer: _Layer, tile: int, in_row_bytes: int, out_row_bytes: int) -> int:
    """Rows of output per strip: ``tile``, fewer for very wide images so that a strip's buffers stay near 128 MB."""
    in_rows_per_out_row = layer.stride / (2 if layer.upsample or layer.transposed else 1)
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
    fixed_tile: bool = False,
    precision: str = "fp32",
    ram_budget: int | None = None,
    max_elements: int | None = None,
    config: TilingConfig = TilingConfig(),
) -> Decision:
    """Whole when the estimated whole-image peak fits ``budget``; otherwise stream, with the maps in RAM if they fit.

    Unless ``fixed_tile``, the tile is halved (down to ``config.min_tile``) until the streamed estimate fits.
    ``ram_budget`` bounds where the maps live (host RAM); it defaults to ``budget``, the CPU case.
    ``max_elements`` (CUDA's 32-bit indexing) also streams a pass whose largest tensor would be bigger.
    """
    tile = tile or config.tile
    host = budget if ram_budget is None else ram_budget
    whole = estimate_whole_bytes(generator, height, width, batch, precision)
    indexable = max_elements is None or largest_whole_tensor(generator, height, width, batch) <= max_elements
    if whole <= budget and indexable and not fixed_tile:
        return Decision("whole", "ram", tile, budget, whole, estimate_stream(generator, height, width, tile))
    tiles = [tile] if fixed_tile else [t for t in (tile >> i for i in range(8)) if t >= config.min_tile] or [tile]
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
    memory_limit: str | int | None = None,
    storage: str = "auto",
    precision: str = "fp32",
    device: torch.device | str | None = None,
    temp_dir: str | os.PathLike | None = None,
    per_tile_stats: bool = False,
) -> torch.Tensor:
    """Stylize one image ``(1, 3, H, W)`` in ``[0, 1]`` layer by layer in tiles; returns ``(1, 3, H, W)`` float32 on the CPU.

    ``storage`` is ``"ram"``, ``"disk"`` (temporary files under ``temp_dir``, removed even on errors) or ``"auto"``:
    RAM when the estimate fits ``memory_limit`` (default: a share of available RAM), disk otherwise.
    ``precision`` runs the convs under autocast as the engine does. ``per_tile_stats=True`` gives the naive,
    wrong result (each tile normalised by its own statistics), for comparisons only.
    """
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"stream_forward takes one image (1, 3, H, W), got {tuple(image.shape)}")
    if storage not in ("ram", "disk", "auto"):
        raise ValueError(f"storage must be 'ram', 'disk' or 'auto', got {storage!r}")
    height, width = image.shape[-2:]
    if storage == "auto":
        budget = parse_memory_size(memory_limit) or int(_mem_available() * TilingConfig.ram_share)
        storage = "ram" if estimate_stream(generator, height, width, tile).ram_bytes <= budget else "disk"
    if min(height, width) < 8:
        raise ValueError(f"images need at least 8 pixels on each side, got {height}x{width}")
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    weights = generator.style_weights(style_weights, 1, device)
    context = tempfile.TemporaryDirectory(prefix="stylize-tiles-", dir=temp_dir) if storage == "disk" else nullcontext(None)
    with context as folder, torch.inference_mode():
        streamer = _Streamer(generator, weights, tile, device, precision, folder, _storage_dtype(generator, storage), per_tile_stats)
        try:
            return streamer.run(image.detach().float().cpu())
        finally:
            streamer.close()


class _Streamer:
    def __init__(self, generator, weights, tile, device, precision, folder, dtype, per_tile_stats) -> None:
        self.generator, self.weights, self.tile, self.device = generator, weights, tile, device
        self.autocast = None if precision == "fp32" else _DTYPES[precision]
        self.folder = Path(folder) if folder else None
        self.dtype = dtype
        self.per_tile_stats = per_tile_stats
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
        output = torch.empty((1, 3, height, width))
        # The input "map" is the image itself; padding to a multiple of 4 happens in the head's indices.
        x = _RamMap(image[0].permute(1, 0, 2))
        layers = _plan(self.generator)
        block_input = None
        for layer in layers:
            last = layer.name == "tail"
            skip = block_input if layer.name.endswith("conv2") else None
            if last and layer.norm is None:
                y = self.conv_stage(layer, x, None, output, first=False, size=(height, width))[0]
            else:
                dtype = torch.float32 if last else None  # the 3-channel pre-norm output is small: keep it exact
                y, stats = self.conv_stage(layer, x, dtype, None, first=layer.name == "head", size=(height, width))
                self.finish(layer, y, stats, skip, output if last else None, (height, width))
            if layer.name.endswith("conv1"):
                block_input = x  # kept for the skip after conv2
            else:
                self.release(x)
            if skip is not None:
                self.release(skip)
                block_input = None
            x = y
        self.release(x)
        return output

    def conv_stage(self, layer: _Layer, src, dtype, output, first: bool, size: tuple[int, int]):
        """Run ``layer``'s conv over ``src`` in tiles; return the pre-norm map and its statistics.

        Without a norm (the output conv of most models) the tiles go straight through ``to_pixels`` into ``output``.
        """
        height, width = size
        src_h, src_w = (_padded(height, width) if first else (src.height, src.width))
        out_h, out_w = layer.out_size(src_h), layer.out_size(src_w)
        dst = None if output is not None else self.new_map(layer.name, out_h, layer.out_channels, out_w, dtype)
        stats = _Stats(layer.out_channels, self.per_tile_stats)
        conv = layer.module.conv
        weight = conv.weight
        scale = self.generator.config.pixel_scale
        in_row = src.channels * src.width * src.dtype.itemsize
        out_row = layer.out_channels * out_w * (dst.dtype.itemsize if dst is not None else 4)
        # Only file-backed maps need strip buffers (a RAM map's strip is a view): cap the strip height for those alone.
        buffered = isinstance(src, _FileMap) or isinstance(dst, _FileMap)
        tile_h = _tile_height(layer, self.tile, in_row, out_row) if buffered and not self.per_tile_stats else self.tile
        for top in range(0, out_h, tile_h):
            bottom = min(top + tile_h, out_h)
            rows, row_crop = layer.source_index(top, bottom, src_h)  # conv-input coordinates
            src_rows = rows // 2 if layer.upsample else rows
            if first:
                src_rows = _reflect(src_rows, height)  # the reflection pad to a multiple of 4, done once by the whole pass
            r0 = int(src_rows.min())
            strip = src.read_rows(r0, int(src_rows.max()) + 1)  # (h, C, W)
            strip_rows = strip if layer.upsample else _take(strip, 0, src_rows - r0)
            out_strip = None if dst is None else dst.rows_view(top, bottom)
            for left in range(0, out_w, self.tile):
                right = min(left + self.tile, out_w)
                cols, col_crop = layer.source_index(left, right, src_w)
                if layer.upsample:  # nearest x2 of the source block, then the conv-input positions inside it
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
                    if layer.transposed:
                        y = F.conv_transpose2d(tile, weight, conv.bias, stride=2)
                    else:
                        y = F.conv2d(tile, weight, conv.bias, stride=layer.stride)
                y = y.float()[:, :, row_crop : row_crop + bottom - top, col_crop : col_crop + right - left]
                if output is not None:  # final layer without a norm
                    h_end, w_end = min(bottom, height), min(right, width)
                    if top < h_end and left < w_end:
                        output[:, :, top:h_end, left:w_end] = self.generator.to_pixels(y[:, :, : h_end - top, : w_end - left]).cpu()
                    continue
                stats.add(y[0], (top, left))
                out_strip[:, :, left:right] = y[0].permute(1, 0, 2).to("cpu", out_strip.dtype)
            if dst is not None:
                dst.write_rows(top, out_strip)
        return dst, stats

    def finish(self, layer: _Layer, stored, stats: _Stats, skip, output, size: tuple[int, int]) -> None:
        """Normalise ``stored`` with the whole-image statistics, then ReLU and skip, in place (or into ``output``)."""
        norm = layer.norm
        gamma = (self.weights @ norm.gamma.to(self.weights.dtype))[0].double().cpu()
        beta = (self.weights @ norm.beta.to(self.weights.dtype))[0].double().cpu()
        # Strips of at most ~64 MB in float32 (pointwise work needs no halo); naive per-tile statistics need tile rows.
        step = self.tile if self.per_tile_stats else max(1, min(self.tile, _FINISH_STRIP_BYTES // (stored.channels * stored.width * 4)))
        for top in range(0, stored.height, step):
            bottom = min(top + step, stored.height)
            x = stored.read_rows(top, bottom).float()  # (h, C, W); in RAM a view of the map, changed in place
            mean, factor = stats.normaliser(top, gamma, norm.eps, x.shape[-1], self.tile)
            x.sub_(mean).mul_(factor).add_(beta.float()[None, :, None])
            if layer.relu:
                x.relu_()
            if skip is not None:
                x.add_(skip.read_rows(top, bottom))
            if output is not None:
                height, width = size
                if top < height:
                    output[0, :, top : min(bottom, height)] = self.generator.to_pixels(x.permute(1, 0, 2)[:, : height - top, :width])
            else:
                stored.write_rows(top, x)


class _Stats:
    """Per-channel mean and biased variance merged over tiles (Chan et al.), in float64."""

    def __init__(self, channels: int, per_tile: bool = False) -> None:
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)
        self.per_tile = per_tile
        self.tiles: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, tile: torch.Tensor, origin: tuple[int, int]) -> None:
        """Merge the statistics of one tile ``(C, h, w)``."""
        flat = tile.flatten(1)  # (C, h * w)
        mean = flat.mean(1)
        var = (flat - mean[:, None]).square_().mean(1)  # biased, as instance norm's
        var, mean = var.double().cpu(), mean.double().cpu()
        count = tile.shape[1] * tile.shape[2]
        if self.per_tile:
            self.tiles[origin] = (mean, var)
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += var * count + delta**2 * self.count * count / total
        self.count = total

    def normaliser(self, top: int, gamma: torch.Tensor, eps: float, width: int, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``gamma / sqrt(var + eps)`` to apply to rows from ``top``: ``(1, C, 1)``, or ``(1, C, W)`` per tile."""
        if not self.per_tile:
            factor = gamma / torch.sqrt(self.m2 / self.count + eps)
            return self.mean.float()[None, :, None], factor.float()[None, :, None]
        # Naive tiling for comparison: each column tile of this strip gets its own statistics.
        lefts = range(0, width, tile)
        means = torch.stack([self.tiles[(top, left)][0] for left in lefts], 1)  # (C, tiles)
        factors = torch.stack([gamma / torch.sqrt(self.tiles[(top, left)][1] + eps) for left in lefts], 1)
        expand = torch.tensor([min(tile, width - left) for left in lefts])

        def spread(values: torch.Tensor) -> torch.Tensor:
            return values.float().repeat_interleave(expand, dim=1)[None]  # (1, C, W)

        return spread(means), spread(factors)


# -- routing used by the API ----------------------------------------------------------------------------------------


def forward(
    engine,
    images: torch.Tensor,
    style_weights: torch.Tensor,
    tile: str | int = "auto",
    memory_limit: str | int | None = None,
    config: TilingConfig = TilingConfig(),
) -> torch.Tensor:
    """Stylize ``images`` (B, 3, H, W) with ``engine``: whole, or streamed when ``tile`` says so or memory is short.

    ``tile="off"`` is the plain whole-image pass; ``"auto"`` runs whole when the estimate fits the budget
    (``memory_limit``, else a share of free GPU memory or of available RAM) and streams otherwise; a number always
    streams with tiles of that side. CUDA out-of-memory in the whole pass falls back to streaming, and in
    streaming halves the tile down to ``config.min_tile``. Returns float32 on the CPU, like ``Engine.forward``.
    """
    mode = parse_tile(tile)
    limit = parse_memory_size(memory_limit)
    if mode == "off":
        return engine.forward(images, style_weights)
    generator, device = engine.generator, engine.device
    batch, _, height, width = images.shape
    budget = limit if limit is not None else available_memory(device, config)
    # On CUDA the budget is GPU memory; the streamed maps live in host RAM, which has its own share.
    ram_budget = budget if device.type != "cuda" else int(_mem_available() * config.ram_share)
    options = {"tile": config.tile if mode == "auto" else mode, "fixed_tile": mode != "auto", "precision": engine.precision,
               "ram_budget": ram_budget, "config": config, "max_elements": CUDA_MAX_ELEMENTS if device.type == "cuda" else None}
    if decide(generator, height, width, budget, batch=batch, **options).mode == "whole":
        try:
            return _whole(engine, images, style_weights)
        except _DEVICE_LIMITS:
            torch.cuda.empty_cache()
            if batch == 1:
                return _stream_with_retry(engine, images, style_weights, decide(generator, height, width, 0, **options), config)
    outputs = []
    for index in range(batch):  # the batch does not fit: one image at a time, whole where it fits
        image = images[index : index + 1]
        weights = style_weights[index] if style_weights.dim() == 2 else style_weights
        one = decide(generator, height, width, budget, **options)
        if one.mode == "whole":
            try:
                outputs.append(_whole(engine, image, weights))
                continue
            except _DEVICE_LIMITS:
                torch.cuda.empty_cache()
                one = decide(generator, height, width, 0, **options)  # a zero budget always streams
        outputs.append(_stream_with_retry(engine, image, weights, one, config))
    return torch.cat(outputs)


class _IndexLimitError(RuntimeError):
    """A CUDA kernel refused a tensor too large for 32-bit indexing: streaming in tiles gets round it."""


_DEVICE_LIMITS = (torch.OutOfMemoryError, _IndexLimitError)


def _whole(engine, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
    """The engine's whole-image pass, but letting CUDA's memory and indexing limits through so that the caller can stream."""
    try:
        return engine.run(images, style_weights)
    except RuntimeError as exc:
        if "32-bit index" in str(exc):  # max_elements should prevent this; an op we did not foresee may still hit it
            raise _IndexLimitError(str(exc)) from exc
        raise


def _stream_with_retry(engine, image: torch.Tensor, style_weights: torch.Tensor, decision: Decision, config: TilingConfig) -> torch.Tensor:
    tile = decision.tile
    while True:
        try:
            return stream_forward(engine.generator, image, style_weights, tile=tile, storage=decision.storage,
                                  precision=engine.precision, device=engine.device, temp_dir=config.temp_dir)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if tile // 2 < config.min_tile:
                raise StylizeError(
                    f"out of memory on {engine.device} even with {tile}-pixel tiles",
                    "use --device cpu, or free GPU memory",
                    exit_code=EXIT_FAILURE,
                ) from None
            tile //= 2
