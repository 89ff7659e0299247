"""The state-store interface.

Two tiers:

* A *snapshot* store (memory, JSON file) keeps the whole state of one process:
  ``load`` at start, ``save`` on every change or periodically, and on close.
* A *shared* store (SQLite, Redis) is also the meeting point of several
  processes: usage counters are added atomically in the store (``add_usage``
  returns the new totals), status changes are published with a sequence number
  (``publish_status``) and every process polls what changed since it last looked
  (``statuses_since``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._errors import StateStoreError

__all__ = ["FORMAT", "PersistedState", "StateStore", "StateStoreError", "UsageCounters"]

FORMAT = 1


@dataclass
class PersistedState:
    """Everything the mesh keeps across restarts."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """ModelState.to_dict() per model: counters, standby reason, recovery time, periods."""
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per pool: total_requests, rotation_events and the strategy's state (sessions, cursor)."""
    saved_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "saved_at": self.saved_at,
            "models": self.models,
            "pools": self.pools,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> PersistedState:
        """Validate the shape of loaded data (StateStoreError when it is not ours)."""
        if not isinstance(data, dict):
            raise StateStoreError(f"{where}: not a JSON object", details={"where": where})
        if data.get("format") != FORMAT:
            raise StateStoreError(
                f"{where}: unknown state format {data.get('format')!r}", details={"where": where}
            )
        models, pools = data.get("models"), data.get("pools")
        if not isinstance(models, dict) or not isinstance(pools, dict):
            raise StateStoreError(
                f"{where}: 'models' and 'pools' must be objects", details={"where": where}
            )
        for mid, m in models.items():
            if not isinstance(m, dict):
                raise StateStoreError(
                    f"{where}: model {mid!r} is not an object", details={"where": where}
                )
        return cls(models=models, pools=pools, saved_at=data.get("saved_at"))


@dataclass(frozen=True, slots=True)
class UsageCounters:
    """A model's counters in the current quota and budget periods."""

    requests: int = 0
    tokens: int = 0
    cost: float = 0.0


class StateStore(ABC):
    """Where the mesh keeps its state."""

    shared: ClassVar[bool] = False
    durable: bool = True
    """False for a store that keeps nothing beyond the process (saving it is pointless);
    a class default, which an instance may override (a read-only view of a file)."""
    name: ClassVar[str] = ""

    @abstractmethod
    def load(self) -> PersistedState | None:
        """The saved state, or None when nothing was saved yet."""

    @abstractmethod
    def save(self, state: PersistedState) -> None:
        """Write ``state`` durably (atomically: a crash leaves the old or the new state)."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release files and connections."""

    # --- shared stores ------------------------------------------------------------
    def add_usage(
        self,
        model_id: str,
        quota_period: float,
        budget_period: float,
        requests: int,
        tokens: int,
        cost: float,
        *,
        token: str | None = None,
    ) -> UsageCounters:
        """Add to a model's counters atomically and return the new totals.

        ``token`` identifies this addition: the mesh re-sends an addition whose reply it
        did not get, and a store that may have applied it anyway (a network store whose
        server was paused, not dead) must apply each token only once.
        """
        raise TypeError(f"the {self.name} store is not shared")

    def get_usage(self, model_id: str, quota_period: float, budget_period: float) -> UsageCounters:
        raise TypeError(f"the {self.name} store is not shared")

    def publish_status(self, model_id: str, status: dict[str, Any]) -> int:
        """Record a status change for every process; returns its sequence number."""
        raise TypeError(f"the {self.name} store is not shared")

    def statuses_since(self, seq: int) -> list[tuple[str, dict[str, Any], int]]:
        """Status changes after ``seq``: ``(model_id, status, seq)``, oldest first."""
        raise TypeError(f"the {self.name} store is not shared")
