"""Load-balanced: spread requests in proportion to rate-limit headroom."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import add, attrgetter
from typing import Any

from ..state import ModelSnapshot
from ..types import CompletionRequest
from .base import BalanceMode, SelectionResult, SelectionStrategy, StrategyOptions

__all__ = ["LoadBalancedStrategy"]

_ID = attrgetter("model_id")
_REMAINING = attrgetter("requests_remaining")


class LoadBalancedStrategy(SelectionStrategy):
    """Distribute requests proportionally to rate-limit headroom.

    Each candidate's weight is its headroom from the provider's rate-limit
    headers: in ``relative`` mode (default) remaining / limit, in ``absolute``
    mode the remaining request count. A model without headroom data gets the
    median weight of those with data, so with no data at all the distribution is
    equal. Requests are then dealt by smooth weighted round-robin: deterministic,
    exact in proportion over any window, ties to pool order.
    """

    strategy_id = "modelmesh.load-balanced.v1"

    def __init__(self, options: StrategyOptions | None = None) -> None:
        super().__init__(options)
        self._current: dict[str, float] = {}

    def weight(self, c: ModelSnapshot) -> float | None:
        """Headroom weight of one candidate, or None without data."""
        if c.requests_remaining is None:
            return None
        if self.options.balance_mode is BalanceMode.ABSOLUTE:
            return float(max(c.requests_remaining, 0))
        if not c.requests_limit:
            return None
        return max(c.requests_remaining, 0) / c.requests_limit

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        # The per-candidate work runs in C (map, operator.add, dict.update): this is O(n)
        # per request, and must stay cheap at thousands of models.
        remaining = list(map(_REMAINING, candidates))
        if remaining.count(None) == len(remaining):
            weights: list[float] = [1.0] * len(candidates)  # no data at all: equal shares
        else:
            raw = list(map(self.weight, candidates))
            known = [w for w in raw if w is not None]
            default = statistics.median(known) if known else 1.0
            weights = [default if w is None else w for w in raw]
        total = sum(weights)
        if total <= 0:  # nobody has headroom: share equally rather than stall
            weights = [1.0] * len(weights)
            total = float(len(weights))
        current = self._current
        ids = list(map(_ID, candidates))
        updated = list(map(add, map(current.get, ids, repeat(0.0)), weights))
        current.update(zip(ids, updated))
        best = max(updated)
        i = updated.index(best)
        current[ids[i]] = best - total
        return self._result(candidates[i], weights[i] / total, "weighted share")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        w = self.weight(candidate)
        return 0.0 if w is None else w

    def export_state(self) -> dict[str, Any]:
        return {"current": dict(self._current)}

    def import_state(self, data: Mapping[str, Any]) -> None:
        self._current = {k: float(v) for k, v in data.get("current", {}).items()}
