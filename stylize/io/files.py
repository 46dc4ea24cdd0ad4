"""Files that appear complete or not at all: atomic writes, leftovers of killed runs, and safe output checks.

Every file stylize writes (images, model files, training checkpoints, reports, video outputs) goes through
:func:`write_atomic`: the bytes go to a hidden temporary file in the same folder, are flushed to disk, and the file is
renamed into place. A killed run leaves at most a ``.<name>.<hex>.stylize-tmp`` file, which the next run removes.
Failures a user can cause (a full disk, a read-only folder, an existing output) are one-line
errors (:class:`~stylize.errors.StylizeError`).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path

from stylize.errors import EXIT_FAILURE, StylizeError

#: Suffix of the temporary files :func:`write_atomic` creates; leftovers from killed runs end in it.
TEMP_SUFFIX = ".stylize-tmp"
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class AtomicFile:
    """A temporary name next to ``path`` that becomes ``path`` only when complete: write ``temp`` (all at once or
    piece by piece), then :meth:`commit`; :meth:`discard` on failure. Without ``overwrite`` the commit is a hard link,
    which fails rather than replace a file that appeared meanwhile."""

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.temp = self.path.parent / _temp_name(self.path.name)

    def commit(self) -> Path:
        """Flush the temporary file to disk and give it the final name; the temporary name is gone afterwards."""
        try:
            _sync(self.temp)
            if self.overwrite:
                os.replace(self.temp, self.path)
            else:
                _link_without_clobbering(self.temp, self.path, display_path(self.path))
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise write_error(exc, self.path) from exc
            raise
        self.discard()  # after a hard link the temporary name is still there
        _sync_folder(self.path.parent)
        return self.path

    def discard(self) -> None:
        _remove_quietly(self.temp)


def write_atomic(data: bytes, path: str | os.PathLike[str], *, overwrite: bool = False, clean_stale: bool = True) -> Path:
    """Write ``data`` to ``path`` so that the file is either complete or absent, even if the process is killed.

    The bytes go to ``.<name>.<pid>-<random>.stylize-tmp`` in the same folder, are flushed to disk, and the temporary
    file is then renamed into place (:class:`AtomicFile`). The temporary file is removed on any failure.
    ``clean_stale`` first removes what a killed write of this same file left (:func:`remove_stale_temporaries_of`); a
    caller that has already cleaned the whole folder passes False, since that lists the folder on every write (4.3 ms
    per file in a 10,000-file folder).
    """
    path = Path(path)
    label = display_path(path)
    try:
        if path.is_dir():
            raise StylizeError(f"{label} is a folder", "give the output a file name")
        if not overwrite and os.path.lexists(path):
            raise _exists_error(label)
    except OSError as exc:
        raise write_error(exc, path) from exc
    if clean_stale:
        remove_stale_temporaries_of(path)
    target = AtomicFile(path, overwrite=overwrite)
    try:
        _write(target.temp, data)
    except BaseException as exc:
        target.discard()
        if isinstance(exc, OSError):
            raise write_error(exc, path) from exc
        raise
    return target.commit()


def remove_stale_temporaries_of(path: Path) -> None:
    """Delete ``.<name>.<pid>-<8 hex digits>.stylize-tmp`` next to ``path``: what a killed write of this same file left
    (a running writer's are kept).

    The exact shape matters: ``.a.png.x.<pid>-<hex>.stylize-tmp`` belongs to ``a.png.x``, which may be being written now.
    """
    stale = re.compile(re.escape(f".{_temp_stem(path.name)}.") + r"(\d+-)?[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if stale.fullmatch(name) and not _writer_alive(name):
            _remove_quietly(path.parent / name)


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite``; a symbolic link, even a dangling one, counts as existing.

    With ``overwrite``, :func:`write_atomic` renames the new file over the name: a link there is replaced by the file
    and whatever it pointed to is never written.
    """
    if overwrite:
        return
    label = display_path(path)
    if os.path.islink(path):
        raise StylizeError(
            f"output {label} is a symbolic link (to {display_path(os.readlink(path))})",
            "pass `overwrite` to replace the link itself; its target is never written",
        )
    if os.path.lexists(path):
        raise StylizeError(f"output {label} already exists", "pass `overwrite` to replace it")


def make_parent_folder(path: str | os.PathLike[str]) -> None:
    """Create the folder ``path`` goes into (and its parents); failures are the same errors :func:`write_atomic` gives."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file stands where a folder is needed
        raise write_error(NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), path) from exc
    except OSError as exc:
        raise write_error(exc, path) from exc


def _temp_stem(name: str) -> str:
    # Keep the temporary name under the usual 255-byte limit even for very long output names.
    return os.fsdecode(os.fsencode(name)[:180])


def _temp_name(name: str) -> str:
    # The writer's process id lets a concurrent run tell a temporary file in use from one a killed run left.
    return f".{_temp_stem(name)}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


_WRITER_PID = re.compile(r"\.(\d+)-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")


def _writer_alive(name: str) -> bool:
    """Whether the process that named this temporary file is still running (then it is not stale)."""
    match = _WRITER_PID.search(name)
    if not match or int(match.group(1)) == os.getpid():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours to signal
        return True
    return True


def _write(temp: Path, data: bytes) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_without_clobbering(temp: Path, path: Path, label: str) -> None:
    try:
        os.link(temp, path)
    except FileExistsError as exc:
        raise _exists_error(label) from exc
    except OSError as exc:
        # Some file systems (FAT, some network shares) have no hard links: check, then rename.
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV):
            raise
        if os.path.lexists(path):
            raise _exists_error(label) from exc
        os.replace(temp, path)


def _exists_error(label: str) -> StylizeError:
    return StylizeError(f"{label} exists; pass `overwrite` to replace it")


def write_error(exc: OSError, path: Path) -> StylizeError:
    """The one-line error for a failed write of ``path``."""
    label, folder = display_path(path), display_path(path.parent)
    if exc.errno in _DISK_FULL_ERRNOS:
        return StylizeError(
            f"disk full while writing {label} (nothing was written)", "free some space or write elsewhere", EXIT_FAILURE
        )
    if isinstance(exc, FileNotFoundError):
        return StylizeError(f"cannot write {label}: the folder {folder} does not exist", "create it first")
    if isinstance(exc, NotADirectoryError):
        return StylizeError(f"cannot write {label}: {folder} is not a folder", "choose an output path inside a folder")
    if exc.errno == errno.ENAMETOOLONG:
        return StylizeError(f"cannot write {label}: the file name is too long", "choose a shorter name")
    if exc.errno in _READ_ONLY_ERRNOS:
        return StylizeError(
            f"cannot write {label}: the folder {folder} is read-only or not yours", "choose a folder you may write to"
        )
    return StylizeError(f"could not write {label}: {exc.strerror or exc}", exit_code=EXIT_FAILURE)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_folder(folder: Path) -> None:
    # Make the rename itself durable; not every platform or file system allows opening a folder, which is fine.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name the same file (through links too); compares resolved paths if one is missing."""
    if os.fspath(a) == "-" or os.fspath(b) == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        # realpath, unlike Path.resolve on Python < 3.13, does not raise on a symlink loop
        return os.path.realpath(a) == os.path.realpath(b)


def remove_stale_temporaries(folder: str | os.PathLike[str], *, recursive: bool = True) -> int:
    """Delete the ``.*.stylize-tmp`` files that killed runs left in ``folder``; return how many were removed.

    Temporary files of a process that is still running (another run writing into the same folder) are left alone.
    """
    removed = 0
    for root, dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX) and not _writer_alive(name):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
        if not recursive:
            dirs.clear()
    return removed


def display_path(path: str | os.PathLike[str] | bytes) -> str:
    """A path as text that can always be printed: undecodable bytes show as ``\\xNN`` escapes."""
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")

