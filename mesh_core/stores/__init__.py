"""State persistence: memory, JSON file, SQLite, Redis, and backends registered by name."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._base import PersistedState, StateStore, StateStoreError, UsageCounters
from ._memory import MemoryStore
from ._registry import (
    DEFAULT_PATHS,
    StoreFactory,
    known_store_backends,
    register_store_backend,
    store_factory,
)

if TYPE_CHECKING:
    from .._config import StorageConfig

__all__ = [
    "DEFAULT_PATHS",
    "MemoryStore",
    "PersistedState",
    "StateStore",
    "StateStoreError",
    "StoreFactory",
    "UsageCounters",
    "create_store",
    "known_store_backends",
    "open_store",
    "quarantine",
    "register_store_backend",
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


def open_store(config: StorageConfig) -> StateStore:
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


def create_store(config: StorageConfig, *, read_only: bool = False) -> StateStore:
    """The store a ``storage`` configuration section describes, built by the factory
    registered under its ``backend`` (which imports only what it needs).

    ``read_only``: a JSON file is read without taking its lock (to look at a running
    mesh's state); the other backends are shared anyway, or their own business.
    """
    if read_only and config.backend == "json":
        from ._jsonfile import JsonFileStore

        return JsonFileStore(config.path or DEFAULT_PATHS["json"], read_only=True)
    try:
        factory = store_factory(config.backend)
    except KeyError as exc:  # a configuration built without validation
        raise ValueError(exc.args[0]) from None
    store = factory(config)
    if not isinstance(store, StateStore):
        raise TypeError(
            f"the factory of store backend {config.backend!r} returned "
            f"{type(store).__name__}, not a mesh_core.stores.StateStore"
        )
    return store
