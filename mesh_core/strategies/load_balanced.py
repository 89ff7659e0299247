"""Load-balanced: spread requests in proportion to rate-limit headroom."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..state import ModelSnapshot
from ..types import CompletionRequest
from .base import BalanceMode, SelectionResult, SelectionStrategy, StrategyOptions

__all__ = ["LoadBalancedStrategy"]


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
        weights = [self.weight(c) for c in candidates]
        known = [w for w in weights if w is not None]
        default = statistics.median(known) if known else 1.0
        filled = [default if w is None else w for w in weights]
        total = sum(filled)
        if total <= 0:  # nobody has headroom: share equally rather than stall
            filled = [1.0] * len(filled)
            total = float(len(filled))
        current = self._current
        best_i, best = 0, float("-inf")
        for i, (cand, w) in enumerate(zip(candidates, filled)):
            value = current.get(cand.model_id, 0.0) + w
            current[cand.model_id] = value
            if value > best:
                best_i, best = i, value
        chosen = candidates[best_i]
        current[chosen.model_id] -= total
        return self._result(chosen, filled[best_i] / total, "weighted share")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        w = self.weight(candidate)
        return 0.0 if w is None else w

    def export_state(self) -> dict[str, Any]:
        return {"current": dict(self._current)}

    def import_state(self, data: Mapping[str, Any]) -> None:
        self._current = {k: float(v) for k, v in data.get("current", {}).items()}
