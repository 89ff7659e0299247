"""Latency-first: the model with the lowest recent latency."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from ..state import ModelSnapshot
from ..types import CompletionRequest
from .base import SelectionResult, SelectionStrategy

__all__ = ["LatencyFirstStrategy"]


class LatencyFirstStrategy(SelectionStrategy):
    """Select the model with the lowest mean latency over its recent history.

    A model with no history is given the median of the known means, so it is
    neither blindly preferred nor starved; ties go to pool order.
    """

    strategy_id = "modelmesh.latency-first.v1"

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        means = [c.latency_avg for c in candidates]
        known = [m for m in means if m is not None]
        default = statistics.median(known) if known else 0.0
        best_i, best = 0, float("inf")
        for i, m in enumerate(means):
            value = default if m is None else m
            if value < best:
                best_i, best = i, value
        return self._result(candidates[best_i], -best, "lowest recent latency")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        avg = candidate.latency_avg
        return 0.0 if avg is None else -avg
