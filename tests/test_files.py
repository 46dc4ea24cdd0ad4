"""Tests for stylize.io.files: atomic writes, leftovers of killed runs, output checks and paths."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stylize.errors import EXIT_FAILURE, StylizeError, as_flags
from stylize.io.files import (
    TEMP_SUFFIX,
    check_output,
    display_path,
    make_parent_folder,
    remove_stale_temporaries,
    remove_stale_temporaries_of,
    same_file,
    write_atomic,
)
from tests.conftest import REPO

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def pids():
    """(a live process that is not this one, the id of a process that has ended): the writers of temporaries."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    try:
        yield live.pid, ended.pid
    finally:
        live.kill()
        live.wait()


# -------------------------------------------------------------------------------------------------------- atomic writes


def test_write_atomic_writes_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "out.png"
    assert write_atomic(b"first", target) == target and target.read_bytes() == b"first"
    with pytest.raises(StylizeError) as info:
        write_atomic(b"second", target)
    assert info.value.one_line().endswith("out.png exists; pass overwrite to replace it")
    assert as_flags(info.value.marked_line()).endswith("out.png exists; pass --overwrite to replace it")
    assert target.read_bytes() == b"first"
    write_atomic(b"second", target, overwrite=True)
    assert target.read_bytes() == b"second"
    assert no_temporaries(tmp_path)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_write_atomic_never_clobbers_a_file_that_appears_meanwhile(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    real_link = os.link

    def racing_link(src, dst):
        Path(dst).write_bytes(b"someone else's")  # another process wins the race after our exists() check
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(StylizeError, match="exists; pass overwrite"):
        write_atomic(b"ours", target)
    assert target.read_bytes() == b"someone else's" and no_temporaries(tmp_path)


def test_write_atomic_without_hard_links_falls_back_to_rename(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    write_atomic(b"data", tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == b"data" and no_temporaries(tmp_path)


@pytest.mark.parametrize("failure", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_write_atomic_removes_its_temporary_file_on_failure(tmp_path, monkeypatch, failure):
    target = tmp_path / "out.png"
    target.write_bytes(b"before")
    seen = []

    def broken_replace(src, dst):
        seen.append(Path(src).name)
        assert Path(src).read_bytes() == b"new"  # written in full before the rename
        raise failure

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises((StylizeError, KeyboardInterrupt)) as info:
        write_atomic(b"new", target, overwrite=True)
    # The temporary is hidden, next to the target, and names its writer's process.
    assert len(seen) == 1 and re.fullmatch(rf"\.out\.png\.{os.getpid()}-[0-9a-f]{{8}}\.stylize-tmp", seen[0]), seen
    if isinstance(failure, OSError):
        assert info.value.message == f"could not write {target}: Input/output error"
        assert info.value.exit_code == EXIT_FAILURE
    assert target.read_bytes() == b"before" and no_temporaries(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_write_atomic_disk_full(tmp_path, monkeypatch, code):
    def full(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StylizeError) as info:
        write_atomic(b"data", tmp_path / "out.png")
    assert info.value.message.startswith("disk full while writing") and info.value.exit_code == EXIT_FAILURE
    assert not (tmp_path / "out.png").exists() and no_temporaries(tmp_path)


def test_write_atomic_file_size_limit_for_real(tmp_path):
    # A real EFBIG from the kernel: a child process whose file-size limit is 1000 bytes writes 100 kB.
    script = (
        "import resource, sys\n"
        "from stylize.io.files import write_atomic\n"
        "from stylize.errors import StylizeError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "try:\n"
        "    write_atomic(b'x' * 100_000, sys.argv[1])\n"
        "except StylizeError as e:\n"
        "    print(e.exit_code, e.message)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "big.png")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.startswith("1 disk full while writing"), result.stderr
    assert os.listdir(tmp_path) == []


def test_write_into_missing_folder_or_through_a_file(tmp_path):
    with pytest.raises(StylizeError, match="does not exist"):
        write_atomic(b"x", tmp_path / "missing" / "out.png")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StylizeError, match="is not a folder"):
        write_atomic(b"x", tmp_path / "file" / "out.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(StylizeError, match="is a folder"):
        write_atomic(b"x", tmp_path / "dir.png", overwrite=True)


def test_write_into_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if IS_ROOT:  # root writes anywhere: inject what a read-only mount answers
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                raise OSError(errno.EROFS, "Read-only file system", path)
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    try:
        with pytest.raises(StylizeError) as info:
            write_atomic(b"x", folder / "out.png")
        assert "is read-only or not yours" in info.value.message
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_very_long_output_name(tmp_path):
    name = "é" * 120 + ".png"  # 244 bytes: fine for the file, too long for a naive temporary name
    assert write_atomic(b"data", tmp_path / name).read_bytes() == b"data"
    assert no_temporaries(tmp_path)


def test_name_too_long(tmp_path):
    with pytest.raises(StylizeError, match="the file name is too long"):
        write_atomic(b"data", tmp_path / ("n" * 300 + ".png"))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------- leftovers of killed runs


def test_remove_stale_temporaries(tmp_path, pids):
    live, ended = pids
    (tmp_path / "sub").mkdir()
    stale = [
        tmp_path / f".out.png.abcd1234{TEMP_SUFFIX}",  # no writer recorded
        tmp_path / "sub" / f".x.jpg.00ff00ff{TEMP_SUFFIX}",
        tmp_path / f".y.png.{ended}-00ff00ff{TEMP_SUFFIX}",  # its writer has ended
    ]
    keep = [
        tmp_path / "out.png",
        tmp_path / ".hidden",
        tmp_path / f"visible{TEMP_SUFFIX}",
        tmp_path / f".z.png.{live}-0123abcd{TEMP_SUFFIX}",  # another run is writing it right now
    ]
    for path in stale + keep:
        path.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path, recursive=False) == 2
    assert remove_stale_temporaries(tmp_path) == 1
    assert all(path.exists() for path in keep) and not any(path.exists() for path in stale)


def test_write_atomic_removes_what_a_killed_write_of_the_same_file_left(tmp_path, pids):
    live, ended = pids
    stale = [
        tmp_path / ".out.png.deadbeef.stylize-tmp",  # a kill between write and rename leaves this
        tmp_path / f".out.png.{ended}-deadbeef.stylize-tmp",
    ]
    keep = [
        tmp_path / f".out.png.{live}-deadbeef.stylize-tmp",  # a live writer's: not stale
        tmp_path / ".out.png.x.deadbeef.stylize-tmp",  # belongs to out.png.x: not ours to remove
        tmp_path / f".out.png.x.{ended}-deadbeef.stylize-tmp",
        tmp_path / ".out.png.notahexid.stylize-tmp",
    ]
    for path in stale + keep:
        path.write_bytes(b"half")
    write_atomic(b"whole", tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == b"whole"
    assert not any(path.exists() for path in stale) and all(path.exists() for path in keep)

    (tmp_path / f".out.png.{ended}-deadbeef.stylize-tmp").write_bytes(b"half")
    remove_stale_temporaries_of(tmp_path / "out.png")
    assert not (tmp_path / f".out.png.{ended}-deadbeef.stylize-tmp").exists() and all(path.exists() for path in keep)


# ------------------------------------------------------------------------------------------------ outputs and paths


def test_check_output(tmp_path):
    check_output(tmp_path / "new.png", overwrite=False)
    (tmp_path / "old.png").write_bytes(b"keep")
    with pytest.raises(StylizeError) as info:
        check_output(tmp_path / "old.png", overwrite=False)
    assert info.value.one_line() == f"output {tmp_path / 'old.png'} already exists (pass overwrite to replace it)"
    check_output(tmp_path / "old.png", overwrite=True)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "elsewhere" / "new.png")  # a link counts even when dangling
    with pytest.raises(StylizeError, match="dangling.png is a symbolic link") as info:
        check_output(tmp_path / "dangling.png", overwrite=False)
    assert "its target is never written" in info.value.hint
    check_output(tmp_path / "dangling.png", overwrite=True)
    assert (tmp_path / "old.png").read_bytes() == b"keep" and not (tmp_path / "elsewhere").exists()


def test_make_parent_folder(tmp_path):
    make_parent_folder(tmp_path / "a" / "b" / "out.png")
    assert (tmp_path / "a" / "b").is_dir() and not (tmp_path / "a" / "b" / "out.png").exists()
    make_parent_folder(tmp_path / "a" / "b" / "out.png")  # already there: fine
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StylizeError, match="is not a folder"):
        make_parent_folder(tmp_path / "file" / "sub" / "out.png")


def test_same_file(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"a")
    (tmp_path / "link.png").symlink_to(a)
    os.link(a, tmp_path / "hard.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.png").write_bytes(b"a")
    assert same_file(a, tmp_path / "link.png") and same_file(a, tmp_path / "hard.png")
    assert same_file(a, tmp_path / "sub" / ".." / "a.png")
    assert not same_file(a, tmp_path / "b.png")
    assert same_file(tmp_path / "new.png", tmp_path / "sub" / ".." / "new.png")  # neither exists yet
    assert not same_file(a, tmp_path / "new.png")
    assert not same_file("-", "-")


def test_display_path_escapes_undecodable_bytes():
    assert display_path(os.fsdecode(b"caf\xe9.png")) == "caf\\udce9.png"
    assert display_path(b"caf\xe9.png") == "caf\\udce9.png"
    assert display_path(Path("é/a.png")) == "é/a.png"
