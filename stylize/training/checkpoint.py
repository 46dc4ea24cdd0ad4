"""Training checkpoints: one atomic ``torch.save`` file holding everything an exact resume needs.

Contents: generator, optimiser and grad-scaler states, the torch/numpy/python RNG states, the number of finished
steps (which is also the data position, see :mod:`stylize.training.data`), the style names, the generator
config and the training config. Only tensors, numbers, strings, lists, tuples and dicts are stored, so loading
uses ``torch.load(weights_only=True)`` and never unpickles objects.
"""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylize.errors import StylizeError
from stylize.io import make_parent_folder, write_atomic

CHECKPOINT_VERSION = 1


def rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` atomically (:func:`stylize.io.files.write_atomic`: a temporary file in the same folder, then a rename)."""
    buffer = io.BytesIO()
    torch.save({"checkpoint_version": CHECKPOINT_VERSION, **state}, buffer)
    make_parent_folder(path)
    return write_atomic(buffer.getvalue(), path, overwrite=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StylizeError(f"checkpoint not found: {path}", "pass the .ckpt file written next to `out`, or `resume=auto`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        message = f"{path.name} is not a readable checkpoint: {str(exc)[:160]}"
        raise StylizeError(message, "start afresh without `resume`") from None
    if not isinstance(state, dict) or state.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise StylizeError(f"{path.name} is not a stylize training checkpoint", "start afresh without `resume`")
    return state
