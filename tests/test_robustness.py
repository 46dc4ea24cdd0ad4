"""Runs the robustness corpus (tests/robustness_corpus.py) through the CLI and checks what must hold for every case.

For every case: the exit code is the expected one; stderr holds no traceback, and a failure is exactly one ``error: ...``
line with the expected fragment; every file that existed before is unchanged (by SHA-256, symlinks by target); a
failure creates no file at all (so nothing partial under the final name); no ``*.stylize-tmp`` or other temporary
is left behind; files a payload would create never appear. A folder run that fails some files (:class:`FilesFail`)
creates exactly the outputs of the others, and each failed file is reported on stderr.
"""

from __future__ import annotations

import functools
import hashlib
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import invoke
from tests.robustness_corpus import CASES, Case, Fails, FilesFail, Succeeds, picture

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
FSIZE_LIMIT = 1024  # bytes: the "fsize" runner's file-size limit, under any output of the cases that use it
PR_CAPBSET_DROP = 24  # prctl option (linux/prctl.h)
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2  # linux/capability.h: what lets root ignore file permissions


# ------------------------------------------------------------------------------------------------------------- running


def run_in_process(args: tuple[str, ...], folder: Path) -> tuple[int, str, str]:
    """``stylize ARGS`` through :func:`stylize.cli.main` in this process, in ``folder``: (exit code, stdout, stderr)."""
    result = invoke(*args, cwd=folder, env={"HOME": str(folder)})  # as the subprocess runners do
    return result.returncode, _text(result.stdout), _text(result.stderr)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _without_permission_override() -> None:
    """In the child between fork and exec: drop root's power to ignore file permissions from the bounding set.

    The exec'd program then lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so mode 000 files and mode 555 folders
    refuse it as they refuse any user (switching to uid 65534 instead would lock it out of the root-owned Python).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@functools.lru_cache(maxsize=1)
def can_drop_permission_override() -> bool:
    if not IS_ROOT:
        return True  # permissions already apply
    probe = subprocess.run(["true"], preexec_fn=_without_permission_override, capture_output=True)
    return probe.returncode == 0


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


def _environment(folder: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("STYLIZE_DEBUG", None)
    return env


def run_subprocess(args: tuple[str, ...], folder: Path, runner: str) -> tuple[int, str, str]:
    """``python -m stylize ARGS`` in ``folder``, unprivileged or with a file-size limit when the runner says so."""
    preexec = {"unprivileged": _without_permission_override if IS_ROOT else None, "fsize": _small_files}.get(runner)
    result = subprocess.run(
        [sys.executable, "-m", "stylize", *args], cwd=folder, capture_output=True, env=_environment(folder), timeout=180,
        preexec_fn=preexec,
    )  # fmt: skip
    return result.returncode, _text(result.stdout), _text(result.stderr)


#: ``python -c SLOWED SECONDS ARGS...``: ``stylize ARGS`` as ``python -m stylize`` runs it, with ``SECONDS`` of sleep per
#: stylized image in stylize.pipeline.stages.stylize, so that a kill can land between two images of a folder run.
SLOWED = """
import sys, time
from stylize.runtime import prepare_process
prepare_process()
from stylize.pipeline import stages as pipeline
from stylize.cli import run
seconds, sys.argv = float(sys.argv[1]), ["stylize", *sys.argv[2:]]
stylize = pipeline.stylize
def slowed(engine, pixels, *rest):
    time.sleep(seconds * len(pixels))
    return stylize(engine, pixels, *rest)
pipeline.stylize = slowed
run()
"""


def run_killed_then_again(case: Case, folder: Path) -> tuple[int, str, str]:
    """Runner "kill-9": start the command, SIGKILL it once ``case.interrupt.when`` holds, check what the kill left
    (``case.interrupt.then``), add the temporaries a kill mid-write leaves, and return the result of running the same
    command again."""
    interrupt = case.interrupt
    assert interrupt is not None
    command = ["-c", SLOWED, str(interrupt.seconds_per_image)] if interrupt.seconds_per_image else ["-m", "stylize"]
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: an unread pipe could block the first run
        process = subprocess.Popen(
            [sys.executable, *command, *case.args], cwd=folder, env=_environment(folder),
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not interrupt.when(folder):
                if process.poll() is not None:
                    stderr.seek(0)
                    pytest.fail(f"the first run ended (exit {process.returncode}) before it could be killed: {stderr.read()!r}")
                if time.monotonic() > deadline:
                    pytest.fail("the moment to kill the first run never came")
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, f"the first run was not killed (exit {process.returncode})"
    interrupt.then(folder)
    for name, data in interrupt.leaves:
        (folder / name.format(pid=process.pid)).write_bytes(data)
    return run_subprocess(case.args, folder, "subprocess")


# ------------------------------------------------------------------------------------------------------------ snapshots


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (symlinks not followed): files by SHA-256, links by target, folders by mode."""
    entries: dict[str, tuple] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            relative = os.fsdecode(path.relative_to(folder))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[relative] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:  # an unreadable input when the tests run unprivileged
                    digest = f"unreadable, {info.st_size} bytes, mtime {info.st_mtime_ns}"
                entries[relative] = ("file", digest, stat.S_IMODE(info.st_mode))
    return entries


# ---------------------------------------------------------------------------------------------------------------- tests


def assert_only_written(before: dict[str, tuple], after: dict[str, tuple], outputs: tuple[str, ...]) -> None:
    """Each of ``outputs`` is now a file; apart from them and new folders they lie in, nothing appeared or changed."""
    for output in outputs:
        assert after.get(output, ("missing",))[0] == "file", f"{output} is not a file: {after.get(output)}"
    made = set(outputs)
    for output in outputs:  # the folders an output goes into, when the run created them
        for parent in Path(output).parents:
            name = parent.as_posix()
            if name != "." and name not in before and after.get(name, ("",))[0] == "dir":
                made.add(name)
    assert {k: v for k, v in after.items() if k not in made} == {k: v for k, v in before.items() if k not in made}, (
        f"something besides {sorted(outputs)} changed: {sorted(set(after.items()) ^ set(before.items()))}"
    )


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CASES])
def test_case(case: Case, tmp_path: Path) -> None:
    if case.runner == "unprivileged" and not can_drop_permission_override():
        pytest.skip("running as root without CAP_SETPCAP: cannot make file permissions apply to the child")
    folder = tmp_path / "work"
    folder.mkdir()
    try:
        case.build(folder)
        before = snapshot(folder)
        if case.runner == "cli":
            code, stdout, stderr = run_in_process(case.args, folder)
        elif case.runner == "kill-9":
            code, stdout, stderr = run_killed_then_again(case, folder)
        else:
            code, stdout, stderr = run_subprocess(case.args, folder, case.runner)
        after = snapshot(folder)
        report = f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"

        assert "Traceback" not in stderr, report
        expect = case.expect
        if isinstance(expect, Fails):
            assert code == expect.exit_code, report
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), report
            assert expect.fragment in lines[0], report
            assert after == before, f"a failed run changed the folder: {sorted(set(after.items()) ^ set(before.items()))}"
        elif isinstance(expect, FilesFail):  # a folder run: the good files are written, the bad ones reported
            assert code == 1, report
            assert "error:" not in stderr, report
            for name, fragment in expect.failed:
                assert any(name in line and fragment in line for line in stderr.splitlines()), f"{name}: {fragment!r}\n{report}"
            assert_only_written(before, after, expect.written)
            expect.check(folder)
        else:
            assert isinstance(expect, Succeeds)
            assert code == 0, report
            assert "error:" not in stderr, report
            if expect.note:
                assert expect.note in stderr, report
            assert_only_written(before, after, expect.outputs)
            expect.check(folder)
        leftovers = [name for name in after if name.endswith((".stylize-tmp", ".tmp"))]
        assert not leftovers, f"temporary files left behind: {leftovers}"
        for name in case.never:
            assert not os.path.lexists(folder / name), f"{name} exists: code from an input ran, or a link was followed"
    finally:
        for root, dirs, _ in os.walk(folder):  # let pytest clean up folders the case made read-only
            for name in dirs:
                Path(root, name).chmod(0o755)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES), "case names must be unique"


def test_docs_table_is_current() -> None:
    """docs/robustness.md holds the table that scripts/bench/robustness_table.py prints from the corpus."""
    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    try:
        import robustness_table
    finally:
        sys.path.remove(str(REPO / "scripts" / "bench"))
    docs = (REPO / "docs" / "robustness.md").read_text(encoding="utf-8")
    assert robustness_table.replace_table(docs) == docs, "docs/robustness.md is stale: run python scripts/bench/robustness_table.py --write"


# --------------------------------------------------------------------------------------------------- bundled files


def test_tampered_bundled_model_is_refused_by_the_cli(tmp_path, monkeypatch) -> None:
    """A bundled model whose bytes differ from the SHA-256 recorded in the package is refused before use, exit 1."""
    from stylize.io import catalog, resources

    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    original = resources.bundle_root() / "models" / "multistyle26.safetensors"
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the tensor data: still a valid file, just not ours
    (bundle / "models" / "multistyle26.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(resources, "bundle_root", lambda: bundle)
    monkeypatch.setattr(catalog, "bundle_root", lambda: bundle)
    work = tmp_path / "work"
    work.mkdir()
    picture(32, 24).save(work / "photo.png")
    for args in (("apply", "photo.png", "out.png"), ("apply", "photo.png", "out.png", "--model", "multistyle26")):
        code, _, stderr = run_in_process(args, work)
        assert code == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
        assert "does not match its recorded SHA-256" in stderr
    assert not (work / "out.png").exists()


def test_unexpected_exception_is_one_line_exit_1(tmp_path, monkeypatch) -> None:
    """The last line of defence in stylize.cli.main: a bug becomes one line and exit 1, not a traceback."""
    from stylize.api import Stylizer

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Stylizer, "load", broken)
    picture(32, 24).save(tmp_path / "photo.png")
    code, _, stderr = run_in_process(("apply", "photo.png", "out.png"), tmp_path)
    assert code == 1 and stderr == (
        "error: unexpected RuntimeError: simulated bug (run again as 'stylize --debug ...' for the traceback and report it)\n"
    )
