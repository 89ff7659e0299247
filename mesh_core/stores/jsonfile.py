"""A JSON file: one process's state, written atomically.

Each save writes a temporary file beside the target, fsyncs it, renames it over
the target and fsyncs the folder, so a crash at any moment leaves either the old
or the new file, never a torn one. An advisory lock (``<file>.lock``) keeps two
processes from writing at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .base import PersistedState, StateStore, StateStoreError

__all__ = ["JsonFileStore"]


class JsonFileStore(StateStore):
    name = "json"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> PersistedState | None:
        where = str(self.path)
        with self._locked(exclusive=False):
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
        except ValueError as exc:
            raise StateStoreError(
                f"{where}: not valid JSON ({exc})", details={"where": where}
            ) from None
        return PersistedState.from_dict(data, where)

    def save(self, state: PersistedState) -> None:
        data = json.dumps(state.to_dict(), separators=(",", ":")).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._locked(exclusive=True):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
