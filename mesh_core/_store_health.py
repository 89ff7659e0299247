"""Whether the state store is usable right now, and when to try it again (sans I/O).

The store serves the answer, never the other way round: when a store operation fails
the mesh keeps its state in memory and carries on (*degraded*), and tries the store
again after a backoff. :class:`StoreHealth` is that policy as a small state machine,
pybreaker-style: ``healthy -> degraded`` on a failure, ``degraded -> healthy`` on a
success, and every transition is returned as a value so the caller logs, counts and
emits it exactly once.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

__all__ = ["StoreHealth", "StoreTransition"]


class StoreTransition(enum.Enum):
    """What a recorded outcome changed."""

    NONE = "none"
    DEGRADED = "degraded"
    """The first failure after a healthy period: log a warning, emit ``store.degraded``."""
    RECOVERED = "recovered"
    """The first success after a degraded period: log it, emit ``store.recovered``, re-sync."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between two tries of a degraded store."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1-based)."""
        return min(self.maximum, self.initial * self.factor ** max(0, failures - 1))


class StoreHealth:
    """Healthy or degraded, with a retry time. Thread-safe; times are monotonic seconds."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self.healthy = True
        self.errors = 0
        """Failed store operations since the mesh started."""
        self.degradations = 0
        """Times the store went from healthy to degraded."""
        self.streak = 0
        """Failures in a row (0 while healthy)."""
        self.degraded_since: float | None = None
        self.retry_at = 0.0
        self.last_error: str | None = None

    def may_try(self, now: float) -> bool:
        """Whether an operation should go to the store now (always, while healthy)."""
        return self.healthy or now >= self.retry_at

    def failed(self, now: float, error: str) -> StoreTransition:
        """Record a failed operation; the store is degraded until a later success."""
        with self._lock:
            self.errors += 1
            self.streak += 1
            self.last_error = error
            self.retry_at = now + self.backoff.delay(self.streak)
            if not self.healthy:
                return StoreTransition.NONE
            self.healthy = False
            self.degradations += 1
            self.degraded_since = now
            return StoreTransition.DEGRADED

    def succeeded(self) -> StoreTransition:
        """Record a successful operation."""
        if self.healthy:  # the common case, without the lock
            return StoreTransition.NONE
        with self._lock:
            if self.healthy:
                return StoreTransition.NONE
            self.healthy = True
            self.streak = 0
            self.degraded_since = None
            return StoreTransition.RECOVERED
