"""State persistence: memory, JSON file, SQLite, Redis."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ._base import PersistedState, StateStore, StateStoreError, UsageCounters
from ._memory import MemoryStore

__all__ = [
    "MemoryStore",
    "PersistedState",
    "StateStore",
    "StateStoreError",
    "UsageCounters",
    "create_store",
    "open_store",
    "quarantine",
]

logger = logging.getLogger("modelmesh")


def quarantine(path: str | os.PathLike[str]) -> str | None:
    """Move an unreadable state file (and SQLite's -wal/-shm) aside; returns the new name."""
    if not Path(path).exists():
        return None
    aside = f"{path}.corrupt-{int(time.time())}"
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def open_store(config: Any) -> StateStore:
    """:func:`create_store`, honouring ``on_corrupt: fresh`` for an unreadable file."""
    try:
        return create_store(config)
    except StateStoreError as exc:
        if (
            config.on_corrupt != "fresh"
            or config.backend not in ("json", "sqlite")
            or exc.details.get("unavailable")  # locked or unreachable is not corrupt
            or config.backend == "json"  # a JSON file is read later, by load()
        ):
            raise
        aside = quarantine(exc.details["where"])
        logger.warning(
            "%s; starting with fresh state (the unreadable state was kept as %s)",
            exc.message,
            aside,
        )
        return create_store(config)


def create_store(config: Any, *, read_only: bool = False) -> StateStore:
    """The store a ``storage`` configuration section describes (imports only what it needs).

    ``read_only``: a JSON file is read without taking its lock (to look at a running
    mesh's state); the other backends are shared anyway.
    """
    backend = config.backend
    timeout = getattr(config, "timeout", 2.0)
    if backend == "memory":
        return MemoryStore()
    if backend == "json":
        from ._jsonfile import JsonFileStore

        return JsonFileStore(config.path or "modelmesh-state.json", read_only=read_only)
    if backend == "sqlite":
        from ._sqlite import SqliteStore

        return SqliteStore(config.path or "modelmesh-state.db", timeout=timeout)
    if backend == "redis":
        from ._redis import RedisStore

        url = config.url.get_secret_value() if config.url else "redis://127.0.0.1:6379/0"
        return RedisStore(url, key_prefix=config.key_prefix, timeout=timeout)
    raise ValueError(f"unknown storage backend {backend!r}")
