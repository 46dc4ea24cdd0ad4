"""How long a run trains and how its steps move the weights: the step count planned from a time budget, the
learning-rate schedule fitted to that count, and the moving average of the weights.

A budget is turned into steps once, after the first :data:`~stylize.config.WARMUP_STEPS` steps have been timed. Those
steps run at the warm-up rate, which does not depend on the count, so a run planned from a budget and a rerun with
``iterations`` set to the count it recorded make the same model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stylize.config import WARMUP_STEPS

#: Steps not timed by the plan: the first ones pay for kernel selection, allocations and the decoding workers' start.
UNTIMED_STEPS = 3
#: Steps' worth of time kept for the end of the run (the model file and the check of its inference precision).
END_RESERVE_STEPS = 8


def learning_rate_factor(step: int, total: int | None, schedule: str) -> float:
    """The multiple of the base rate for optimiser step ``step`` (0-based) of ``total``.

    "constant": 1. "cosine": ``(step + 1) / WARMUP_STEPS`` during the warm-up, then ``(1 + cos(pi * t)) / 2`` with
    ``t`` going from 0 after the warm-up to 1 at the last step. ``total`` None (not planned yet) is only allowed
    during the warm-up.
    """
    if schedule == "constant":
        return 1.0
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    if total is None:
        raise ValueError("the step count must be planned before the warm-up ends")
    decay_steps = max(1, total - WARMUP_STEPS)
    progress = min(1.0, (step - WARMUP_STEPS) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def plan_steps(done: int, elapsed: float, step_seconds: float, budget: float) -> int:
    """The run's step count: the ``done`` steps plus as many as fit in what is left of ``budget`` seconds after
    ``elapsed``, keeping :data:`END_RESERVE_STEPS` steps' worth for saving. Never fewer than ``done``."""
    left = budget - elapsed - END_RESERVE_STEPS * step_seconds
    return done + max(0, math.floor(left / step_seconds))


class WeightAverage:
    """An exponential moving average of a module's floating-point tensors (Polyak averaging), in float32.

    The decay grows with the number of updates, ``min(decay, (1 + n) / (10 + n))``, so that the first steps do not
    drag the average back to the starting weights for long.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.tensors = {name: value.detach().float().clone() for name, value in module.state_dict().items() if value.is_floating_point()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in module.state_dict().items():
            if name in self.tensors:
                self.tensors[name].lerp_(value.detach().float(), 1.0 - decay)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "tensors": self.tensors}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.updates = int(state["updates"])  # type: ignore[call-overload]
        tensors: dict[str, torch.Tensor] = state["tensors"]  # type: ignore[assignment]
        for name, value in tensors.items():
            self.tensors[name].copy_(value)

    def weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """``module``'s state dict with the averaged tensors in place of its own."""
        return {name: self.tensors.get(name, value) for name, value in module.state_dict().items()}
