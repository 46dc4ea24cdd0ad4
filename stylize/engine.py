"""Running a generator: device and precision choice, and the forward pass on batches of images.

Everything here works on tensors: ``(B, 3, H, W)`` float in ``[0, 1]`` in and out. Files and PIL images are
the business of :mod:`stylize.imaging` and :mod:`stylize.api`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.fastpath import PreparedGenerator
from stylize.network import MIN_SIDE, Generator

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a device that exists on this machine, or explain why not."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise StylizeError("device 'mps' is not available on this machine", "use --device cpu or --device auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise StylizeError(
                f"device '{name}' requested but CUDA is not available", "use --device cpu, or install a CUDA build of torch"
            )
        index_text = name.partition(":")[2] or "0"
        if not index_text.isdigit() or int(index_text) >= torch.cuda.device_count():
            raise StylizeError(
                f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)",
                "use cuda:0 ... cuda:N-1",
            )
        return torch.device(f"cuda:{index_text}")
    raise StylizeError(f"unknown device '{name}'", "use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16, where bf16 matrix work is several times faster than fp32.

    (Measured: Intel with AMX 2,240 against 368 GFLOP/s fp32; AMD Zen 5 with AVX-512 BF16 526-898 against 135-211.)
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if any(getattr(torch.cpu, probe, lambda: False)() for probe in probes):
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(name: str, device: torch.device, model_precision: dict[str, str] | None = None) -> str:
    """Pick ``fp32|bf16|fp16`` for ``device``.

    ``auto`` takes the precision recorded in the model file for this device type (decided when the model was
    imported or trained by comparing against fp32 on real photos), and fp32 when the file records none.
    An explicit precision the device cannot run is an error rather than a silent fallback.
    """
    name = (name or "auto").strip().lower()
    if name not in PRECISIONS:
        raise StylizeError(f"unknown precision '{name}'", f"use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        name = (model_precision or {}).get(device.type, "fp32")
        if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
            name = "fp32"
        return name if name in _DTYPES else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise StylizeError("fp16 is not supported on the CPU", "use --precision bf16 or fp32 on the CPU")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise StylizeError("this GPU does not support bf16", "use --precision fp16 or fp32")
    return name


COMPILE_MODES = ("auto", "always", "never")
#: With ``compile="auto"``, a shape is compiled once this many seconds have been spent running it eagerly in the
#: process (the ski-rental rule: pay for the purchase once the rent has reached its price, which bounds the cost
#: at twice the best choice in hindsight). A cold compile costs 10-30 s on a 2-core CPU, 1-3 s from torch's
#: on-disk cache. So one photo, or a few tiles, run eagerly; a folder of same-sized photos gets compiled.
AUTO_COMPILE_AFTER_SECONDS = 15.0
#: The share of a shape's eager time that its compiled graph saves: 0.50 -> 0.34 CPU-s (fp32, 1024x768 photo, 2-core
#: CPU). With a bound on the calls still to come (:meth:`Engine.expect_calls`), ``auto`` also skips a compile that
#: those calls cannot repay: remaining calls x eager seconds per call x this share < AUTO_COMPILE_AFTER_SECONDS
#: (the price of a compile, as above).
COMPILE_SAVES_SHARE = 0.3
#: With ``compile="auto"``, the compiled network's first calls on a shape are timed; unless their median is under
#: this share of the eager time per call, that shape goes back to eager for good.
COMPILE_TRIAL_CALLS = 3
COMPILE_KEEP_RATIO = 0.95


@dataclass
class Engine:
    """A generator prepared once for one device and precision.

    ``optimize`` runs the inference-prepared copy of the network (:mod:`stylize.fastpath`); ``False`` runs the
    plain :class:`Generator` (with autocast for bf16/fp16), the reference the fast path is tested against.
    ``compile`` is ``auto`` (compile a shape once it has cost :data:`AUTO_COMPILE_AFTER_SECONDS` eagerly, unless the
    calls still to come, when known, cannot repay it), ``always`` or ``never``; compiled graphs are kept per input
    shape, and torch's on-disk inductor cache keeps them between runs.
    """

    generator: Generator
    device: torch.device
    precision: str = "fp32"
    compile: str = "auto"
    optimize: bool = True

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise StylizeError(f"unknown compile mode '{self.compile}'", f"use one of {', '.join(COMPILE_MODES)}")
        self.generator = self.generator.to(self.device).eval().requires_grad_(False)
        self._prepared: PreparedGenerator | None = None
        self._compiled: Callable[..., torch.Tensor] | None = None
        self._compile_failed = False
        self._eager_seconds: dict[tuple[int, ...], float] = {}
        self._eager_calls: dict[tuple[int, ...], int] = {}
        self._compiled_times: dict[tuple[int, ...], list[float]] = {}
        self._eager_only: set[tuple[int, ...]] = set()  # shapes whose compiled network measured no faster
        self._remaining_calls: int | None = None

    def expect_calls(self, remaining: int | None) -> None:
        """Tell ``compile="auto"`` that at most ``remaining`` forward calls, this one included, are still to come.

        A folder run knows how many images it has left; a compile that those cannot repay is then skipped (on the
        CPU a cold compile costs 13-39 s, more than an 80-photo folder of mixed sizes saves). None: not known.
        """
        self._remaining_calls = remaining

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.precision == "fp32" else _DTYPES[self.precision]

    @property
    def prepared(self) -> PreparedGenerator:
        """The inference-prepared network, built on first use and kept for the life of the engine."""
        if self._prepared is None:
            # On the CPU: the sub-pixel/space-to-depth rewrites, and the wide layers channels-last (oneDNN's native layout;
            # see fastpath.WIDE_CHANNELS). On CUDA contiguous, as measured there: on an H200 (cuDNN 9.19) channels_last
            # fp16 ran slower, 10.6 against 8.1 ms for the Johnson network at 1024x1024 (docs/gpu.md).
            on_cpu = self.device.type == "cpu"
            dtype = _DTYPES[self.precision]
            self._prepared = PreparedGenerator(self.generator, dtype, rewrite=on_cpu, wide_channels_last=on_cpu).to(self.device)
        return self._prepared

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """Stylize ``images`` (B, 3, H, W) in [0, 1] with ``style_weights`` (S,) or (B, S); float32 result on the CPU."""
        try:
            return self.run(images, style_weights)
        except torch.OutOfMemoryError:
            raise StylizeError(
                f"out of memory on {self.device} for a {images.shape[-1]}x{images.shape[-2]} image",
                "use --max-size to downscale, --tile auto, or --device cpu",
                exit_code=EXIT_FAILURE,
            ) from None

    def run(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` that lets ``torch.OutOfMemoryError`` through, for callers that retry by streaming."""
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._conv_precision():
            out = self._forward_optimized(images, style_weights) if self.optimize else self._forward_plain(images, style_weights)
        return out.float().cpu()

    def _conv_precision(self) -> contextlib.AbstractContextManager:
        """fp32 on CUDA means fp32: cuDNN would otherwise run the convs in TF32 (PyTorch's default), 10-bit mantissas."""
        if self.device.type != "cuda" or self.precision != "fp32":
            return contextlib.nullcontext()
        cudnn = torch.backends.cudnn
        return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False)

    def _forward_plain(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        dtype = self.autocast_dtype
        if dtype is None:
            return self.generator(images, style_weights)
        with torch.autocast(self.device.type, dtype=dtype):
            return self.generator(images, style_weights)

    def _forward_optimized(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        prepared = self.prepared
        batch, _, height, width = images.shape
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"images need at least {MIN_SIDE} pixels on each side, got {height}x{width}")
        affine = prepared.mixed_affine(prepared.style_weights(style_weights, batch, images.device))
        shape = tuple(images.shape)
        core = self._core_for(shape)
        compiled = core != prepared.core  # not `is not`: each access to a method makes a new bound-method object
        if compiled and not self._judging(shape):
            return core(images, affine, height, width)
        started = time.perf_counter()
        out = core(images, affine, height, width)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        if compiled:
            self._judge_compiled(shape, seconds)
        else:
            self._eager_seconds[shape] = self._eager_seconds.get(shape, 0.0) + seconds
            self._eager_calls[shape] = self._eager_calls.get(shape, 0) + 1
        return out

    def _judging(self, shape: tuple[int, ...]) -> bool:
        """Whether the compiled network's calls on ``shape`` are still being timed against the eager ones."""
        return self.compile == "auto" and len(self._compiled_times.get(shape, [])) <= COMPILE_TRIAL_CALLS

    def _judge_compiled(self, shape: tuple[int, ...], seconds: float) -> None:
        """After the compile call and :data:`COMPILE_TRIAL_CALLS` timed calls, keep the compiled network for ``shape``
        only if it beat the eager one: on some CPUs it does not (docs/speed.md), and the compile is then sunk cost."""
        times = self._compiled_times.setdefault(shape, [])
        times.append(seconds)  # the first one includes the compile itself and is not judged
        if len(times) == COMPILE_TRIAL_CALLS + 1 and self._eager_calls.get(shape):
            compiled = sorted(times[1:])[len(times[1:]) // 2]
            eager = self._eager_seconds[shape] / self._eager_calls[shape]
            if compiled > COMPILE_KEEP_RATIO * eager:
                self._eager_only.add(shape)

    def _core_for(self, shape: tuple[int, ...]) -> Callable[..., torch.Tensor]:
        """The compiled network for this input shape where compiling repays, else the eager one."""
        prepared = self.prepared
        if self.compile == "never" or self._compile_failed or shape in self._eager_only:
            return prepared.core
        if self.compile == "auto":
            spent = self._eager_seconds.get(shape, 0.0)
            if spent < AUTO_COMPILE_AFTER_SECONDS:
                return prepared.core
            calls = self._eager_calls.get(shape, 0)
            if self._remaining_calls is not None and calls:
                saving = self._remaining_calls * spent / calls * COMPILE_SAVES_SHARE
                if saving < AUTO_COMPILE_AFTER_SECONDS:
                    return prepared.core
        if self._compiled is None:
            # Compiled from the network without the sub-pixel and space-to-depth rewrites: inductor fuses the upsample
            # and pads itself, and the rewrites' shuffles cost it more than they save (26-style network at 1024 px
            # on the CPU: compiled 176 ms plain against 204 ms rewritten; scripts/bench_rewrites.py).
            plain = prepared
            if prepared.rewrite:
                plain = PreparedGenerator(self.generator, _DTYPES[self.precision], rewrite=False).to(self.device)
            self._compiled = _compile(plain.core, cuda_graphs=self.device.type == "cuda")
            if self._compiled is None:
                self._compile_failed = True
                return prepared.core
        return self._compiled


def _compile(function: Callable[..., torch.Tensor], cuda_graphs: bool = False) -> Callable[..., torch.Tensor] | None:
    """``torch.compile`` with static shapes (dynamic shapes measured 1.6x slower here), or None where unavailable.

    ``cuda_graphs`` replays each shape's kernels as one CUDA graph (``mode="reduce-overhead"``): a folder of
    same-sized photos then pays one launch per image instead of one per kernel. The graph reuses its output
    buffer on the next call, which is safe here because :meth:`Engine.run` copies every result to the CPU at once.
    """
    try:
        import torch._dynamo

        # One graph per input shape: allow as many shapes as a folder of mixed photo sizes brings.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        compiled = torch.compile(function, dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
    except Exception:  # noqa: BLE001 - no compiler toolchain or an unsupported platform: eager still works
        return None

    broken = False

    def run(*args: object) -> torch.Tensor:
        nonlocal broken
        if not broken:
            try:
                return compiled(*args)
            except torch.OutOfMemoryError:
                raise
            except Exception:  # noqa: BLE001 - a failed compile (e.g. no C++ compiler) falls back to the eager network for good
                broken = True
        return function(*args)

    return run
