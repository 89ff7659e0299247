"""A JSON file: one process's state, written atomically.

Each save writes a temporary file beside the target, fsyncs it, renames it over
the target and fsyncs the folder, so a crash at any moment leaves either the old
or the new file, never a torn one.

A JSON file holds *one* mesh's state: two writers would each overwrite the other's
counters. So the store holds an exclusive lock on ``<file>.lock`` (with the owner's
pid in it) for as long as it is open, and a second mesh on the same file, in this
process or another, is refused with a clear error. Use SQLite or Redis to share
state. Temporary files left by a writer that was killed mid-save are removed when
the lock is taken (nobody else can be writing then).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import IO

from ._base import PersistedState, StateStore, StateStoreError

__all__ = ["JsonFileStore"]


class JsonFileStore(StateStore):
    name = "json"

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """``read_only``: only read the state (no lock, no save), e.g. for ``modelmesh
        status`` beside a running mesh."""
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            self.durable = False  # nothing is ever written through this instance
        self._lock = threading.Lock()
        self._owner: IO[str] | None = None
        if not read_only:
            self.reopen()

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self.path)!r})"

    # --- the lifetime lock --------------------------------------------------------
    def reopen(self) -> None:
        """Take the file's lock (StateStoreError if another mesh holds it)."""
        if self._owner is not None:
            return
        where = str(self.path)
        lock_path = f"{self.path}.lock"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            owner = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held until close
        except OSError as exc:
            raise StateStoreError(
                f"{where}: cannot create the lock file {lock_path}: {exc.strerror or exc}",
                details={"where": where, "unavailable": True},
            ) from None
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner.seek(0)
            pid = owner.read().strip() or "unknown"
            owner.close()
            raise StateStoreError(
                f"{where} is in use by another mesh (pid {pid}): a JSON state file serves "
                "one mesh at a time, or their updates overwrite each other; use "
                "storage.backend: sqlite or redis to share state between processes",
                details={"where": where},
            ) from None
        owner.seek(0)
        owner.truncate()
        owner.write(str(os.getpid()))
        owner.flush()
        self._owner = owner
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def close(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            with contextlib.suppress(OSError):
                owner.truncate(0)
            owner.close()  # closing the file releases the lock

    # --- state --------------------------------------------------------------------
    def load(self) -> PersistedState | None:
        where = str(self.path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateStoreError(
                f"{where}: cannot read: {exc}", details={"where": where}
            ) from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StateStoreError(
                f"{where}: not valid JSON ({exc})", details={"where": where}
            ) from None
        return PersistedState.from_dict(data, where)

    def save(self, state: PersistedState) -> None:
        if self.read_only:
            raise StateStoreError(f"{self.path}: opened read-only", details={"where": str(self)})
        if self._owner is None:
            self.reopen()
        data = json.dumps(state.to_dict(), separators=(",", ":")).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._lock:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()  # a full disk must not also fill up with temporary files
                raise
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
