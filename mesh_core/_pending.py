"""What the mesh has changed and not yet written to its state store.

The request path records its changes here, in memory, and returns; whoever talks to
the store next (the request's own thread, or the background worker) *takes* a batch,
tries to write it, and *gives back* what it could not write. Taking and giving back
merge with whatever arrived meanwhile, so an outage of any length loses nothing.

Usage is added to the shared counters exactly once. A batch whose write failed may
still have been applied (a request sent to a server that was paused, not dead), so it
keeps its idempotency token and is re-sent as it was, never merged with newer usage;
the store applies each token once.

Thread-safe; the lock here is never held over I/O nor while taking the mesh's lock.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

__all__ = ["Delta", "PendingChanges", "UsageBatch", "UsageKey"]

UsageKey = tuple[str, float, float]
"""(model id, quota period start, budget period start)."""


@dataclass(slots=True)
class Delta:
    """Usage counted locally and not yet added to the shared store."""

    requests: int = 0
    tokens: int = 0
    cost: float = 0.0

    def add(self, other: Delta) -> None:
        self.requests += other.requests
        self.tokens += other.tokens
        self.cost += other.cost


UsageBatch = tuple[str, UsageKey, Delta]
"""(idempotency token, key, usage)."""


class PendingChanges:
    """Usage to add, statuses to publish, models and pools to save."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage: dict[UsageKey, Delta] = {}
        self._in_doubt: list[UsageBatch] = []
        self._statuses: set[str] = set()
        self._models: set[str] = set()
        self._pools: set[str] = set()

    # --- recording ----------------------------------------------------------------
    def request(self, model_id: str, pool: str, usage: tuple[UsageKey, Delta] | None) -> None:
        """A request finished: its model and pool are dirty, its usage (if any) pending."""
        with self._lock:
            if usage is not None:
                key, delta = usage
                self._usage.setdefault(key, Delta()).add(delta)
            self._models.add(model_id)
            self._pools.add(pool)

    def status(self, model_id: str, *, publish: bool) -> None:
        """A model's status changed: save it, and publish it to other processes."""
        with self._lock:
            self._models.add(model_id)
            if publish:
                self._statuses.add(model_id)

    # --- taking and giving back ---------------------------------------------------
    def take_usage(self) -> list[UsageBatch]:
        """Batches to add: those in doubt first (same tokens), then new ones."""
        with self._lock:
            fresh, self._usage = self._usage, {}
            doubtful, self._in_doubt = self._in_doubt, []
        return doubtful + [(uuid.uuid4().hex, key, delta) for key, delta in fresh.items()]

    def give_back_usage(self, batches: list[UsageBatch]) -> None:
        """Batches whose write failed: kept whole, with their tokens, to be re-sent."""
        with self._lock:
            self._in_doubt.extend(batches)

    def take_statuses(self) -> list[str]:
        with self._lock:
            mids, self._statuses = sorted(self._statuses), set()
        return mids

    def give_back_statuses(self, mids: list[str]) -> None:
        with self._lock:
            self._statuses.update(mids)

    def take_dirty(self) -> tuple[set[str], set[str]]:
        with self._lock:
            taken = self._models, self._pools
            self._models, self._pools = set(), set()
        return taken

    def give_back_dirty(self, models: set[str], pools: set[str]) -> None:
        with self._lock:
            self._models |= models
            self._pools |= pools

    # --- reading --------------------------------------------------------------------
    def usage_of(self, model_id: str, quota_period: float, budget_period: float) -> Delta:
        """What is pending for one model and period (added to the store's totals)."""
        key = (model_id, quota_period, budget_period)
        total = Delta()
        with self._lock:
            if key in self._usage:
                total.add(self._usage[key])
            for _, k, delta in self._in_doubt:
                if k == key:
                    total.add(delta)
        return total

    @property
    def to_write(self) -> bool:
        """Usage or statuses wait for the store (saving dirty state follows its policy)."""
        return bool(self._usage or self._in_doubt or self._statuses)

    @property
    def dirty(self) -> bool:
        return bool(self._models or self._pools)

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {
                "usage": sum(d.requests for d in self._usage.values())
                + sum(d.requests for _, _, d in self._in_doubt),
                "statuses": len(self._statuses),
                "models": len(self._models),
            }
