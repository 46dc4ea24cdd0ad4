"""The hidden work folder that makes a long video resumable: :class:`WorkFolder`.

``.out.mp4.stylize-video/`` next to the output holds one packet file per finished segment, the processor's state
after each (safetensors, never pickle), and ``manifest.json``: what the segments were made from (the source's size,
modification time and a hash of its first MiB; the options; the processor's fingerprint) and which are complete. A
segment is listed only after its packet file and state file are on disk, and every file appears atomically, so a run
killed at any moment leaves a manifest that tells the truth. A later run with the same identity reuses the complete
segments; with another identity the folder is emptied first. The folder is removed once the output is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from stylize.errors import StylizeError
from stylize.io import display_path, remove_stale_temporaries, write_atomic

MANIFEST = "manifest.json"
_VERSION = 1
_HASHED_BYTES = 1 << 20


@dataclass(frozen=True)
class SegmentRecord:
    """A finished segment, as the manifest lists it."""

    index: int  # segment number: frames from index * segment_seconds on (gaps in a variable-rate clip skip numbers)
    frames: int
    first_pts: int  # source timestamps of its first and last frame
    last_pts: int
    end_pts: int  # last_pts plus the last frame's duration
    packets: int
    bytes: int  # size of its packet file, checked before it is reused


def work_folder_for(target: Path) -> Path:
    return target.parent / f".{target.name}.stylize-video"


def source_identity(path: Path) -> dict[str, Any]:
    """What says "the same source file": size, modification time and a SHA-256 of the first MiB."""
    stat = path.stat()
    with open(path, "rb") as fp:
        head = hashlib.sha256(fp.read(_HASHED_BYTES)).hexdigest()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


class WorkFolder:
    """The segments and states of one output file, and the manifest that lists them.

    Longer than a screen: opening (lock, identity check, stale files), recording and cleaning up a run's folder are
    one object's life, and splitting them would spread the manifest's format over several places.
    """

    def __init__(self, target: Path, identity: dict[str, Any]) -> None:
        self.target = target
        self.folder = work_folder_for(target)
        self.identity = json.loads(json.dumps(identity))  # as it reads back from the manifest: lists, not tuples
        self.segments: list[SegmentRecord] = []
        self.encoder: dict[str, Any] | None = None  # EncoderSettings.to_dict() of the segments, once known
        self.complete = False  # every frame of the source is in a segment
        self.discarded_reason: str | None = None  # why an earlier run's segments could not be reused
        self._lock: Any = None

    @classmethod
    def open(cls, target: Path, identity: dict[str, Any]) -> WorkFolder:
        """Open (or create) the work folder of ``target``, keeping what an earlier run with ``identity`` finished."""
        work = cls(target, identity)
        try:
            work.folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StylizeError(f"cannot create the work folder {display_path(work.folder)}: {exc.strerror or exc}") from exc
        work._lock_folder()
        remove_stale_temporaries(work.folder, recursive=False)
        manifest = work._read_manifest()
        if manifest is not None and manifest.get("identity") == identity:
            work.encoder = manifest.get("encoder")
            work.segments = work._intact(manifest.get("segments", []))
            work.complete = bool(manifest.get("complete")) and len(work.segments) == len(manifest.get("segments", []))
        elif manifest is not None:
            work.discarded_reason = "the source, the options or the processor changed since the interrupted run"
        if work.discarded_reason or not work.segments:
            work._clear()
        work._write_manifest()
        return work

    def segment_path(self, index: int) -> Path:
        return self.folder / f"segment-{index:06d}.packets"

    def state_path(self, index: int) -> Path:
        return self.folder / f"state-{index:06d}.safetensors"

    def add_segment(self, record: SegmentRecord, state: dict[str, torch.Tensor]) -> None:
        """Record a segment whose packet file is in place, with the processor's state after its last frame."""
        write_atomic(save(state), self.state_path(record.index), overwrite=True, clean_stale=False)
        self.segments.append(record)
        self._write_manifest()

    def load_state(self, index: int) -> dict[str, torch.Tensor]:
        return load(self.state_path(index).read_bytes())

    def set_encoder(self, encoder: dict[str, Any]) -> None:
        """Record the segments' encoder settings, or check that they are those of the earlier run's segments."""
        if self.encoder is not None and self.encoder != encoder and self.segments:
            raise StylizeError(
                f"the finished segments in {display_path(self.folder)} were encoded with other settings",
                "delete that folder to start afresh",
            )
        self.encoder = encoder
        self._write_manifest()

    def mark_complete(self) -> None:
        self.complete = True
        self._write_manifest()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def _lock_folder(self) -> None:
        """Hold an advisory lock for the run, so that two runs never write the same segments (released on exit)."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; two concurrent runs of one output are the user's call
            return
        self._lock = open(self.folder / "lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.close()
            raise StylizeError(
                f"another stylize run is writing {display_path(self.target)}",
                "wait for it to finish, or write to another file",
            ) from exc

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return None
        return data

    def _intact(self, listed: list[dict[str, Any]]) -> list[SegmentRecord]:
        """The listed segments whose files are all there, up to the first that is not."""
        segments = []
        for fields in listed:
            record = SegmentRecord(**fields)
            path = self.segment_path(record.index)
            if not (path.is_file() and path.stat().st_size == record.bytes and self.state_path(record.index).is_file()):
                break
            segments.append(record)
        return segments

    def _clear(self) -> None:
        """Delete every segment and state file (an earlier run's, unusable now)."""
        self.segments, self.encoder, self.complete = [], None, False
        for entry in os.scandir(self.folder):
            if entry.name.startswith(("segment-", "state-")):
                os.unlink(entry.path)

    def _write_manifest(self) -> None:
        manifest = {
            "version": _VERSION,
            "identity": self.identity,
            "encoder": self.encoder,
            "segments": [asdict(segment) for segment in self.segments],
            "complete": self.complete,
        }
        write_atomic(json.dumps(manifest, indent=1).encode(), self.folder / MANIFEST, overwrite=True, clean_stale=False)
