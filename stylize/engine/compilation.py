"""When the engine runs a shape compiled: ``torch.compile`` only where it repays its cold start.

A cold compile costs 10-40 s on a 2-core CPU (1-3 s from torch's on-disk inductor cache), so one photo, or a few tiles,
run eagerly and a folder of same-sized photos gets compiled. :class:`CompilePolicy` keeps, per input shape, the eager
time spent and the compiled calls' times, and decides:

- ``auto``: compile a shape once it has cost :data:`AUTO_COMPILE_AFTER_SECONDS` eagerly (the ski-rental rule: pay for
  the purchase once the rent has reached its price, which bounds the cost at twice the best choice in hindsight),
  unless the calls still to come, when known (:meth:`CompilePolicy.expect_calls`), cannot repay it; then time the
  compiled network's first :data:`COMPILE_TRIAL_CALLS` calls and go back to eager for good unless they beat it;
- ``always``: compile every shape on first use; ``never``: stay eager.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from stylize.errors import StylizeError

COMPILE_MODES = ("auto", "always", "never")
#: With ``auto``, a shape is compiled once this many seconds have been spent running it eagerly in the process.
AUTO_COMPILE_AFTER_SECONDS = 15.0
#: The share of a shape's eager time that its compiled graph saves (0.50 -> 0.34 CPU-s, fp32, 1024x768 photo, 2-core
#: CPU): remaining calls x eager seconds per call x this share below AUTO_COMPILE_AFTER_SECONDS skips the compile.
COMPILE_SAVES_SHARE = 0.3
#: The compiled network's first calls on a shape that are timed; unless their median is under COMPILE_KEEP_RATIO of
#: the eager time per call, that shape goes back to eager for good.
COMPILE_TRIAL_CALLS = 3
COMPILE_KEEP_RATIO = 0.95
#: Compiled graphs kept per function: one per input shape, as many as a folder of mixed photo sizes brings.
MAX_SHAPES = 64

Shape = tuple[int, ...]


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise StylizeError(f"unknown compile mode '{mode}'", f"use `compile` {', '.join(COMPILE_MODES)}")
    return mode


class CompilePolicy:
    """Per input shape: eager or compiled, by ``mode`` (see the module docstring)."""

    def __init__(self, mode: str, compile_function: Callable[[], Callable[..., torch.Tensor] | None]) -> None:
        """``compile_function`` builds the compiled network on first need (None where compiling is unavailable)."""
        self.mode = check_compile_mode(mode)
        self._compile_function = compile_function
        self._compiled: Callable[..., torch.Tensor] | None = None
        self._unavailable = False
        self._eager_seconds: dict[Shape, float] = {}
        self._eager_calls: dict[Shape, int] = {}
        self._compiled_times: dict[Shape, list[float]] = {}
        self._eager_only: set[Shape] = set()  # shapes whose compiled network measured no faster
        self._remaining_calls: int | None = None

    def expect_calls(self, remaining: int | None) -> None:
        """At most ``remaining`` forward calls, this one included, are still to come (None: not known)."""
        self._remaining_calls = remaining

    def compiled_for(self, shape: Shape) -> Callable[..., torch.Tensor] | None:
        """The compiled network to run ``shape`` with, or None to run it eagerly."""
        if self.mode == "never" or self._unavailable or shape in self._eager_only:
            return None
        if self.mode == "auto" and not self._repays(shape):
            return None
        if self._compiled is None:
            self._compiled = self._compile_function()
            if self._compiled is None:
                self._unavailable = True
        return self._compiled

    def timing(self, shape: Shape, compiled: bool) -> bool:
        """Whether this call's time is wanted (:meth:`record`): every eager call, and compiled trial calls."""
        return not compiled or (self.mode == "auto" and len(self._compiled_times.get(shape, [])) <= COMPILE_TRIAL_CALLS)

    def record(self, shape: Shape, seconds: float, compiled: bool) -> None:
        if not compiled:
            self._eager_seconds[shape] = self._eager_seconds.get(shape, 0.0) + seconds
            self._eager_calls[shape] = self._eager_calls.get(shape, 0) + 1
            return
        times = self._compiled_times.setdefault(shape, [])
        times.append(seconds)  # the first one includes the compile itself and is not judged
        if len(times) == COMPILE_TRIAL_CALLS + 1 and self._eager_calls.get(shape):
            eager = self._eager_seconds[shape] / self._eager_calls[shape]
            if statistics.median(times[1:]) > COMPILE_KEEP_RATIO * eager:
                self._eager_only.add(shape)

    def _repays(self, shape: Shape) -> bool:
        spent = self._eager_seconds.get(shape, 0.0)
        if spent < AUTO_COMPILE_AFTER_SECONDS:
            return False
        calls = self._eager_calls.get(shape, 0)
        if self._remaining_calls is not None and calls:
            return self._remaining_calls * spent / calls * COMPILE_SAVES_SHARE >= AUTO_COMPILE_AFTER_SECONDS
        return True


def compile_function(function: Callable[..., torch.Tensor], cuda_graphs: bool = False) -> Callable[..., torch.Tensor] | None:
    """``torch.compile`` with static shapes (dynamic shapes measured 1.6x slower here), or None where unavailable.

    ``cuda_graphs`` replays each shape's kernels as one CUDA graph (``mode="reduce-overhead"``): a folder of
    same-sized photos then pays one launch per image instead of one per kernel. The graph reuses its output buffer
    on the next call, which is safe because the engine copies every result to the CPU at once. A compile that fails
    (e.g. no C++ compiler) falls back to ``function`` for good.
    """
    try:
        import torch._dynamo

        compiled = torch.compile(function, dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
        limits = torch._dynamo.config.patch(cache_size_limit=MAX_SHAPES)  # for these calls only, not process-wide
    except Exception:  # noqa: BLE001 - no compiler toolchain or an unsupported platform: eager still works
        return None
    broken = False

    def run(*args: object) -> torch.Tensor:
        nonlocal broken
        if not broken:
            try:
                with limits:
                    return compiled(*args)
            except torch.OutOfMemoryError:
                raise
            except Exception:  # noqa: BLE001 - see the docstring
                broken = True
        return function(*args)

    return run
