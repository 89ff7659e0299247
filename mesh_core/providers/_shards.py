"""A provider's connection pool, split over a few httpx transports.

httpcore hands queued requests to connections with a pass whose cost grows with
connections x queued requests (encode/httpcore#1035), so one big pool slows down
exactly when it is busiest. ``k`` pools of ``n/k`` connections cut that cost by about
``k`` squared. Each request leases the least busy transport, the first one when
tied: light traffic keeps reusing the first pool's warm connection (no extra TLS
handshakes), and only concurrent requests spread out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Lease", "Shards", "shard_limits"]

T = TypeVar("T")

_MAX_SHARDS = 4
_MIN_CONNECTIONS_PER_SHARD = 25


def shard_limits(max_connections: int) -> list[int]:
    """How ``max_connections`` is split: up to four pools of at least 25 connections."""
    k = max(1, min(_MAX_SHARDS, max_connections // _MIN_CONNECTIONS_PER_SHARD))
    base, extra = divmod(max_connections, k)
    return [base + (i < extra) for i in range(k)]


class Lease(Generic[T]):
    """One request's hold on a transport; :meth:`release` it once the response is closed."""

    __slots__ = ("_index", "_shards", "transport")

    def __init__(self, shards: Shards[T], index: int) -> None:
        self._shards: Shards[T] | None = shards
        self._index = index
        self.transport = shards.transports[index]

    def release(self) -> None:
        """Give the transport back (idempotent: streams may close more than once)."""
        shards, self._shards = self._shards, None
        if shards is not None:
            shards._free(self._index)


class Shards(Generic[T]):
    """Transports with a count of the requests each one is serving."""

    def __init__(self, make: Callable[[int], T], max_connections: int) -> None:
        self.transports: list[T] = [make(limit) for limit in shard_limits(max_connections)]
        self._load = [0] * len(self.transports)
        self._lock = threading.Lock()

    def lease(self) -> Lease[T]:
        with self._lock:
            load = self._load
            index = load.index(min(load))
            load[index] += 1
        return Lease(self, index)

    def _free(self, index: int) -> None:
        with self._lock:
            self._load[index] -= 1

    @property
    def load(self) -> list[int]:
        """Requests in flight per transport (for tests and diagnostics)."""
        with self._lock:
            return list(self._load)
