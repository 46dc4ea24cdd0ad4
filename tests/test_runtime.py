"""Process settings applied before torch loads: how idle OpenMP threads wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_runnable_threads_are_read_from_the_kernels_statistics(tmp_path):
    from stylize.runtime import other_runnable_threads

    stat = tmp_path / "stat"
    stat.write_bytes(b"cpu  1 2 3 4\nprocs_running 4\nprocs_blocked 0\n")
    assert other_runnable_threads(samples=2, interval=0.0, stat_path=str(stat)) == 3  # the caller is one of them
    stat.write_bytes(b"procs_running 1\n")
    assert other_runnable_threads(samples=1, interval=0.0, stat_path=str(stat)) == 0
    stat.write_bytes(b"cpu  1 2 3 4\n")  # a kernel that does not say
    assert other_runnable_threads(samples=1, interval=0.0, stat_path=str(stat)) is None
    assert other_runnable_threads(samples=1, interval=0.0, stat_path=str(tmp_path / "missing")) is None
