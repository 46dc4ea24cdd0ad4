"""Files written as a stream that appear complete or not at all: :class:`AtomicFile`.

:func:`stylize.imaging.write_atomic` does this for bytes held in memory; videos and their segments are written piece by
piece, so they get the same recipe with the same temporary names (``.<name>.<hex>.stylize-tmp`` in the target's
folder): write the temporary file, flush it to disk, then rename it into place. Without ``overwrite`` the temporary
file is hard-linked instead, which fails rather than replace a file that appeared meanwhile.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.imaging import TEMP_SUFFIX, display_path

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_HARD_LINKS_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV})


class AtomicFile:
    """A temporary name next to ``path``: write there, then :meth:`commit` (or :meth:`discard` on failure)."""

    def __init__(self, path: Path, *, overwrite: bool) -> None:
        self.path = path
        self.overwrite = overwrite
        stem = os.fsdecode(os.fsencode(path.name)[:180])  # stay under the usual 255-byte name limit
        self.temp = path.parent / f".{stem}.{secrets.token_hex(4)}{TEMP_SUFFIX}"

    def commit(self) -> Path:
        """Flush the temporary file to disk and give it the final name; the temporary file is gone afterwards."""
        try:
            _sync(self.temp)
            if self.overwrite:
                os.replace(self.temp, self.path)
            else:
                self._link()
            _sync_folder(self.path.parent)
        except OSError as exc:
            self.discard()
            raise write_error(exc, self.path) from exc
        return self.path

    def discard(self) -> None:
        try:
            os.unlink(self.temp)
        except OSError:
            pass

    def _link(self) -> None:
        try:
            os.link(self.temp, self.path)
        except FileExistsError as exc:
            raise StylizeError(f"{display_path(self.path)} exists", "pass --overwrite to replace it") from exc
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS_ERRNOS:  # FAT and some network shares have no hard links
                raise
            if os.path.lexists(self.path):
                raise StylizeError(f"{display_path(self.path)} exists", "pass --overwrite to replace it") from exc
            os.replace(self.temp, self.path)
            return
        os.unlink(self.temp)


def write_error(exc: OSError, path: Path) -> StylizeError:
    """The one-line error for a failed write of ``path`` (FFmpeg's I/O errors are OSErrors too)."""
    label = display_path(path)
    if exc.errno in _DISK_FULL_ERRNOS:
        return StylizeError(f"disk full while writing {label}", "free some space or write elsewhere", EXIT_FAILURE)
    if isinstance(exc, PermissionError):
        return StylizeError(f"cannot write {label}: permission denied", "choose a folder you may write to")
    return StylizeError(f"could not write {label}: {exc.strerror or exc}", exit_code=EXIT_FAILURE)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    # Makes the rename itself durable; some platforms and file systems cannot open a folder, which is fine.
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
