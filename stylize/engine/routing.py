"""How a generator runs: prepared once for a device and precision, then whole, streamed in tiles, or compiled.

Everything here works on tensors: ``(B, 3, H, W)`` float in ``[0, 1]`` in and out. Files and PIL images are the
business of :mod:`stylize.pipeline.stages`. :meth:`Engine.forward` routes each call:

- ``tile="off"``: the whole-image pass; ``tile=N``: streamed with N-pixel tiles (:mod:`stylize.engine.tiling`, exact
  instance-norm statistics; smaller ones if a given ``memory_limit`` needs them); ``tile="auto"``: whole when its
  estimated peak fits the memory budget
  (``memory_limit``, else a share of available RAM or free GPU memory) and streamed otherwise, one image at a time
  when the batch does not fit;
- on CUDA a pass whose largest tensor exceeds 32-bit indexing streams, and out-of-memory in the whole pass falls back
  to streaming, then to ever smaller tiles;
- the whole pass runs the inference fast path (:mod:`stylize.engine.fastpath`), eager or compiled per input shape as
  :class:`~stylize.engine.compilation.CompilePolicy` decides; ``optimize=False`` runs the reference :class:`Generator`
  instead (under autocast for bf16/fp16), which the fast path is tested against.
"""

from __future__ import annotations

import contextlib
import time

import torch

from stylize.config import TileSetting, TilingConfig
from stylize.devices import DTYPES
from stylize.engine import tiling
from stylize.engine.compilation import CompilePolicy, compile_function
from stylize.engine.fastpath import PreparedGenerator
from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.network import Generator, NormStatistics, check_size, style_weights

#: CUDA kernels of several ops (reflection pad, nearest upsampling) index with 32-bit integers and refuse larger
#: tensors ("input tensor must fit into 32-bit index math"); seen at 8192x8192 on an H200 (docs/gpu.md).
CUDA_MAX_ELEMENTS = 2**31 - 1


class Engine:
    """A generator prepared once for one device and precision (see the module docstring).

    Longer than a screen: it owns both halves of running a network, the routing (whole, streamed, the fallbacks) and
    the whole-image pass (fast path or reference, eager or compiled), which share its device, precision and policy.
    """

    def __init__(
        self,
        generator: Generator,
        device: torch.device,
        precision: str = "fp32",
        compile: str = "auto",
        optimize: bool = True,
        tiling_config: TilingConfig = TilingConfig(),
    ) -> None:
        self.generator = generator.to(device).eval().requires_grad_(False)
        self.device = device
        self.precision = precision
        self.optimize = optimize
        self.tiling_config = tiling_config
        self.compile_policy = CompilePolicy(compile, self._compile)
        self._prepared: PreparedGenerator | None = None

    @property
    def compile(self) -> str:
        return self.compile_policy.mode

    @property
    def prepared(self) -> PreparedGenerator:
        """The inference-prepared network, built on first use and kept for the life of the engine."""
        if self._prepared is None:
            # On the CPU: the sub-pixel/space-to-depth rewrites, and the wide layers channels-last (oneDNN's native
            # layout). On CUDA contiguous, as measured there: on an H200 (cuDNN 9.19) channels_last fp16 ran slower, 10.6
            # against 8.1 ms for the Johnson network at 1024x1024 (docs/gpu.md).
            on_cpu = self.device.type == "cpu"
            dtype = DTYPES[self.precision]
            self._prepared = PreparedGenerator(self.generator, dtype, rewrite=on_cpu, wide_channels_last=on_cpu).to(self.device)
        return self._prepared

    def expect_calls(self, remaining: int | None) -> None:
        """At most ``remaining`` forward calls are still to come: ``compile="auto"`` skips a compile they cannot repay."""
        self.compile_policy.expect_calls(remaining)

    # -- routing ------------------------------------------------------------------------------------------------

    def forward(
        self,
        images: torch.Tensor,
        weights: torch.Tensor | None,
        tile: TileSetting = "auto",
        memory_limit: int | None = None,
        statistics: NormStatistics | None = None,
    ) -> torch.Tensor:
        """Stylize ``images`` (B, 3, H, W) in [0, 1] with style ``weights`` (S,) or (B, S); float32 result on the CPU.

        ``statistics`` replaces each image's own instance-norm statistics (video frames; see
        :class:`~stylize.network.topology.NormStatistics`); such calls run eagerly, and a batch that has to be streamed goes
        one image at a time in order.
        """
        batch, _, height, width = images.shape
        check_size(height, width)
        if tile == "off":
            try:
                return self.run_whole(images, weights, statistics)
            except torch.OutOfMemoryError:
                raise self._out_of_memory(width, height) from None
        budget = memory_limit if memory_limit is not None else self.available_memory()
        # On CUDA the budget is GPU memory; the streamed maps live in host RAM, which has its own share.
        ram_budget = budget if self.device.type != "cuda" else int(tiling.mem_available() * self.tiling_config.ram_share)
        settings = {
            "tile": self.tiling_config.tile if tile == "auto" else tile,
            "stream_only": tile != "auto",
            # A tile side given with a memory limit is the largest tile: the limit holds for the whole process.
            "shrink": tile == "auto" or memory_limit is not None,
            "precision": self.precision,
            "ram_budget": ram_budget,
            "config": self.tiling_config,
            "max_elements": CUDA_MAX_ELEMENTS if self.device.type == "cuda" else None,
        }
        generator = self.generator
        if tiling.decide(generator, height, width, budget, batch=batch, **settings).mode == "whole":
            try:
                return self._whole_within_limits(images, weights, statistics)
            except _DEVICE_LIMITS:
                torch.cuda.empty_cache()
        outputs = []
        for index in range(batch):  # the batch does not fit: one image at a time, whole where it fits
            image = images[index : index + 1]
            one_weights = weights[index] if weights is not None and weights.dim() == 2 else weights
            decision = tiling.decide(generator, height, width, budget, **settings)
            if decision.mode == "whole" and batch > 1:
                try:
                    outputs.append(self._whole_within_limits(image, one_weights, statistics))
                    continue
                except _DEVICE_LIMITS:
                    torch.cuda.empty_cache()
            if decision.mode == "whole":
                decision = tiling.decide(generator, height, width, 0, **settings)  # a zero budget always streams
            outputs.append(self._stream(image, one_weights, decision, statistics))
        return torch.cat(outputs)

    def available_memory(self) -> int:
        """The default budget: a share of free GPU memory on CUDA, a share of MemAvailable on the CPU."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * self.tiling_config.gpu_share)
        return int(tiling.mem_available() * self.tiling_config.ram_share)

    def _out_of_memory(self, width: int, height: int, detail: str = "") -> StylizeError:
        return StylizeError(
            f"out of memory on {self.device} for a {width}x{height} image{detail}",
            'use `max_size` to downscale, `tile=auto`, or `device=cpu`',
            exit_code=EXIT_FAILURE
        )

    def _whole_within_limits(self, images: torch.Tensor, weights: torch.Tensor | None, statistics: NormStatistics | None) -> torch.Tensor:
        """The whole pass, turning CUDA's 32-bit index refusal into :class:`_IndexLimitError` for the caller to stream."""
        try:
            return self.run_whole(images, weights, statistics)
        except RuntimeError as exc:
            if "32-bit index" in str(exc):  # max_elements should prevent this; an op we did not foresee may still hit it
                raise _IndexLimitError(str(exc)) from exc
            raise

    def _stream(
        self, image: torch.Tensor, weights: torch.Tensor | None, decision: tiling.Decision, statistics: NormStatistics | None
    ) -> torch.Tensor:
        tile = decision.tile
        while True:
            try:
                return tiling.stream_forward(
                    self.generator, image, weights, tile=tile, storage=decision.storage, precision=self.precision,
                    device=self.device, temp_dir=self.tiling_config.temp_dir, statistics=statistics,
                )  # fmt: skip
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                if tile // 2 < self.tiling_config.min_tile:
                    raise self._out_of_memory(image.shape[-1], image.shape[-2], f" even with {tile}-pixel tiles") from None
                tile //= 2

    # -- the whole-image pass -------------------------------------------------------------------------------------

    def run_whole(self, images: torch.Tensor, weights: torch.Tensor | None, statistics: NormStatistics | None = None) -> torch.Tensor:
        """The whole-image pass; lets ``torch.OutOfMemoryError`` through for :meth:`forward` to stream instead."""
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._conv_precision():
            if self.optimize:
                out = self._run_prepared(images, weights, statistics)
            else:
                out = self._run_reference(images, weights, statistics)
        return out.float().cpu()

    def _conv_precision(self) -> contextlib.AbstractContextManager:
        """fp32 on CUDA means fp32: cuDNN would otherwise run the convs in TF32 (PyTorch's default), 10-bit mantissas."""
        if self.device.type != "cuda" or self.precision != "fp32":
            return contextlib.nullcontext()
        cudnn = torch.backends.cudnn
        return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False)

    def _run_reference(self, images: torch.Tensor, weights: torch.Tensor | None, statistics: NormStatistics | None) -> torch.Tensor:
        if self.precision == "fp32":
            return self.generator(images, weights, statistics)
        with torch.autocast(self.device.type, dtype=DTYPES[self.precision]):
            return self.generator(images, weights, statistics)

    def _run_prepared(self, images: torch.Tensor, weights: torch.Tensor | None, statistics: NormStatistics | None) -> torch.Tensor:
        prepared = self.prepared
        batch, _, height, width = images.shape
        affine = prepared.mixed_affine(style_weights(weights, self.generator.config.num_styles, batch, images.device))
        if statistics is not None:  # given statistics: eager (the compiled graph is the plain network's)
            return prepared.core(images, affine, height, width, statistics)
        shape = tuple(images.shape)
        compiled = self.compile_policy.compiled_for(shape)
        core = compiled or prepared.core
        if not self.compile_policy.timing(shape, compiled is not None):
            return core(images, affine, height, width)
        started = time.perf_counter()
        out = core(images, affine, height, width)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.compile_policy.record(shape, time.perf_counter() - started, compiled is not None)
        return out

    def _compile(self):
        # Compiled from the network without the sub-pixel and space-to-depth rewrites: inductor fuses the upsample and
        # pads itself, and the rewrites' shuffles cost it more than they save (26-style network at 1024 px on the CPU:
        # compiled 176 ms plain against 204 ms rewritten; docs/benchmarks/inference-cpu.md).
        plain = self.prepared
        if plain.rewrite:
            plain = PreparedGenerator(self.generator, DTYPES[self.precision], rewrite=False).to(self.device)
        return compile_function(plain.core, cuda_graphs=self.device.type == "cuda")


class _IndexLimitError(RuntimeError):
    """A CUDA kernel refused a tensor too large for 32-bit indexing: streaming in tiles gets round it."""


_DEVICE_LIMITS = (torch.OutOfMemoryError, _IndexLimitError)
