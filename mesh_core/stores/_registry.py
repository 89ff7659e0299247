"""Store backends by name: the shipped ones and any registered from outside the package.

``storage.backend`` names an entry of this registry, so a backend of your own (a
database, a cloud key-value service) lives in your code: write a :class:`StateStore`,
register a factory under a name, and name it in the configuration. The factory gets the
validated ``storage`` section (its ``path``, ``url``, ``key_prefix``, ``timeout`` and
``options``) and builds the store; the shipped backends import their driver only there,
so an unused backend costs nothing.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._base import StateStore
from ._memory import MemoryStore

if TYPE_CHECKING:
    from .._config import StorageConfig

__all__ = [
    "StoreFactory",
    "known_store_backends",
    "register_store_backend",
    "store_factory",
]

StoreFactory = Callable[["StorageConfig"], StateStore]
"""Builds a store from the validated ``storage`` section of a configuration."""

_BACKENDS: dict[str, StoreFactory] = {}
_LOCK = threading.Lock()


def register_store_backend(name: str, factory: StoreFactory, *, replace: bool = False) -> None:
    """Make ``storage.backend: <name>`` build its store with ``factory(storage_config)``.

    Register before the configuration is loaded: an unregistered name is a
    configuration error that lists the known ones. Registering a name twice is an
    error unless ``replace`` is set (or it is the same factory again).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a store backend needs a non-empty name")
    if not callable(factory):
        raise TypeError("a store backend's factory must be callable: factory(storage_config)")
    with _LOCK:
        current = _BACKENDS.get(name)
        if current is not None and current is not factory and not replace:
            raise ValueError(f"store backend {name!r} is already registered")
        _BACKENDS[name] = factory


def known_store_backends() -> list[str]:
    """The names ``storage.backend`` accepts, sorted."""
    return sorted(_BACKENDS)


def store_factory(name: str) -> StoreFactory:
    """The factory registered under ``name`` (KeyError naming the known ones otherwise)."""
    factory = _BACKENDS.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, _BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(known_store_backends())
        raise KeyError(f"unknown storage backend {name!r}{hint} (known: {known})")
    return factory


def _memory(config: StorageConfig) -> StateStore:
    return MemoryStore()


DEFAULT_PATHS = {"json": "modelmesh-state.json", "sqlite": "modelmesh-state.db"}
"""Where the file backends keep the state when ``storage.path`` is not set."""


def _json(config: StorageConfig) -> StateStore:
    from ._jsonfile import JsonFileStore

    return JsonFileStore(config.path or DEFAULT_PATHS["json"])


def _sqlite(config: StorageConfig) -> StateStore:
    from ._sqlite import SqliteStore

    return SqliteStore(config.path or DEFAULT_PATHS["sqlite"], timeout=config.timeout)


def _redis(config: StorageConfig) -> StateStore:
    from ._redis import RedisStore

    url = config.url.get_secret_value() if config.url else "redis://127.0.0.1:6379/0"
    return RedisStore(url, key_prefix=config.key_prefix, timeout=config.timeout)


SHIPPED_BACKENDS: dict[str, StoreFactory] = {
    "memory": _memory,
    "json": _json,
    "sqlite": _sqlite,
    "redis": _redis,
}
for _name, _factory in SHIPPED_BACKENDS.items():
    register_store_backend(_name, _factory)
