"""Choosing a model's precision: the fastest one whose output stays visually identical to fp32.

Reduced precision is a property of the model, not of the device alone: bf16 rounding is amplified by narrow
layers and conditional norms (the bundled 26-style network is off by up to 145 levels on isolated pixels in
bf16), while wider networks may pass. So the choice is measured once, when a model is imported or trained, on a
few real photos, and recorded in the model file's ``precision`` metadata; ``--precision auto`` then reads it.

Visually identical means, for every test image, on the ``[0, 1]`` scale: mean absolute difference
<= 1.5/255 and 99.9th percentile of the absolute difference <= 8/255.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from stylize.engine.routing import Engine
from stylize.network import Generator

#: Mean absolute difference from fp32 allowed, on the [0, 1] scale.
MAX_MEAN_ABS = 1.5 / 255
#: 99.9th percentile of the absolute difference from fp32 allowed, on the [0, 1] scale.
MAX_P999 = 8.0 / 255


@dataclass(frozen=True)
class Deviation:
    """How far one precision's output is from fp32's on one image."""

    mean_abs: float
    p999: float
    max_abs: float

    @property
    def within_tolerance(self) -> bool:
        return self.mean_abs <= MAX_MEAN_ABS and self.p999 <= MAX_P999


@dataclass
class PrecisionChoice:
    """The chosen precision, with what was measured for every candidate (seconds per image, deviations)."""

    precision: str
    seconds: dict[str, float] = field(default_factory=dict)
    deviations: dict[str, list[Deviation]] = field(default_factory=dict)

    def passed(self, precision: str) -> bool:
        return all(d.within_tolerance for d in self.deviations.get(precision, []))

    def summary(self) -> str:
        parts = []
        for name, seconds in self.seconds.items():
            worst = max(self.deviations.get(name, []), key=lambda d: d.p999, default=None)
            detail = "" if worst is None else f", worst mean {worst.mean_abs * 255:.2f}/255 p99.9 {worst.p999 * 255:.1f}/255"
            verdict = "ok" if self.passed(name) else "out of tolerance"
            parts.append(f"{name}: {seconds * 1000:.0f} ms/image{detail} ({verdict})")
        return f"chose {self.precision}; " + "; ".join(parts)


def deviation(reference: torch.Tensor, candidate: torch.Tensor) -> Deviation:
    """Compare two ``(B, 3, H, W)`` outputs in ``[0, 1]``."""
    diff = (candidate.float() - reference.float()).abs().flatten()
    # torch.quantile refuses inputs over 16M elements; the k-th value is the same statistic.
    k = max(1, min(diff.numel(), int(round(0.999 * diff.numel()))))
    p999 = diff.kthvalue(k).values.item()
    return Deviation(mean_abs=diff.mean().item(), p999=p999, max_abs=diff.max().item())


def candidate_precisions(device: torch.device) -> list[str]:
    """Reduced precisions worth trying on ``device``: bf16 on CPUs with AMX/AVX-512 BF16, fp16 and bf16 on CUDA."""
    from stylize.devices import cpu_has_fast_bf16

    if device.type == "cpu":
        return ["bf16"] if cpu_has_fast_bf16() else []
    if device.type == "cuda":
        return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    return []


def choose_precision(
    generator: Generator,
    images: Sequence[torch.Tensor],
    style_weights: Sequence[torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    candidates: Sequence[str] | None = None,
    repeats: int = 3,
    timer: Callable[[Engine, torch.Tensor, torch.Tensor, int], float] | None = None,
) -> PrecisionChoice:
    """The fastest precision whose output is within tolerance of fp32 on every image and style.

    ``images`` are ``(1, 3, H, W)`` or ``(3, H, W)`` photos in ``[0, 1]`` (a few real photos around 512 px are
    enough); ``style_weights`` are the style vectors to test (default: every style of the model one-hot, up to 4
    spread over the table). Speed is the median of ``repeats`` timed forward passes on the first image through the
    same engine that ``stylize apply`` uses (eager; compiled graphs scale alike), or what ``timer(engine, images,
    weights, repeats)`` returns. fp32 is the fallback.
    """
    timer = timer or _time

    device = torch.device(device)
    candidates = list(candidate_precisions(device) if candidates is None else candidates)
    batches = [image if image.dim() == 4 else image.unsqueeze(0) for image in images]
    if not batches:
        raise ValueError("choose_precision needs at least one image")
    weights_list = list(style_weights) if style_weights is not None else _spread_styles(generator.config.num_styles)
    choice = PrecisionChoice(precision="fp32")
    engines = {name: Engine(generator, device, name, compile="never") for name in ["fp32", *candidates]}
    references = [[engines["fp32"].forward(x, w) for w in weights_list] for x in batches]
    for name, engine in engines.items():
        choice.seconds[name] = timer(engine, batches[0], weights_list[0], repeats)
        if name == "fp32":
            continue
        choice.deviations[name] = [
            deviation(references[i][j], engine.forward(x, w)) for i, x in enumerate(batches) for j, w in enumerate(weights_list)
        ]
    passing = [name for name in engines if name == "fp32" or choice.passed(name)]
    choice.precision = min(passing, key=lambda name: choice.seconds[name])
    return choice


def _spread_styles(num_styles: int, count: int = 4) -> list[torch.Tensor]:
    indices = sorted({round(i * (num_styles - 1) / max(count - 1, 1)) for i in range(min(count, num_styles))})
    return [torch.nn.functional.one_hot(torch.tensor(i), num_styles).float() for i in indices]


def _time(engine: Engine, images: torch.Tensor, weights: torch.Tensor, repeats: int) -> float:
    engine.forward(images, weights)  # warm-up: first-call allocations and oneDNN kernel selection
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        engine.forward(images, weights)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
