"""Process settings applied before torch loads: how idle OpenMP threads wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# prepare_process() must run before torch is imported, so each case runs in a fresh interpreter.
PROBE = """
import json, os, sys
sys.path.insert(0, {root!r})
import stylize.runtime as runtime
runtime.other_runnable_threads = lambda: {others!r}
runtime.prepare_process()
print(json.dumps({{k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}))
"""


def _settings(others: int | None, **user: str) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user)
    code = PROBE.format(root=str(ROOT), others=others)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(result.stdout)


def test_quiet_machine_spins_a_bounded_while_busy_or_unknown_sleeps():
    assert _settings(0) == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}
    assert _settings(1) == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}
    assert _settings(None) == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}


def test_the_users_own_settings_win():
    assert _settings(0, OMP_WAIT_POLICY="ACTIVE") == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}
    assert _settings(0, GOMP_SPINCOUNT="5") == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "5"}


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_runnable_threads_are_read_from_the_kernel():
    from stylize.runtime import other_runnable_threads

    others = other_runnable_threads(samples=2, interval=0.0)
    assert isinstance(others, int) and others >= 0
