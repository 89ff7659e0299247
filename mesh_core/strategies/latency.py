"""Latency-first: the model with the lowest recent latency."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from operator import attrgetter

from ..state import ModelSnapshot
from ..types import CompletionRequest
from .base import SelectionResult, SelectionStrategy

__all__ = ["LatencyFirstStrategy"]

_mean = attrgetter("latency_mean")
_history = attrgetter("latency_history")


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
        means = list(map(_mean, candidates))  # a slot read per candidate, in C
        if means.count(None) == len(means) and not any(map(_history, candidates)):
            return self._result(candidates[0], 0.0, "no latency known yet: pool order")
        if None in means:  # snapshots built without the mean: compute it from the history
            means = [c.latency_avg if m is None else m for c, m in zip(candidates, means)]
        if None in means:  # no history: the median of the known means
            known = [m for m in means if m is not None]
            default = statistics.median(known) if known else 0.0
            means = [default if m is None else m for m in means]
        best = min(means)
        return self._result(candidates[means.index(best)], -best, "lowest recent latency")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        avg = candidate.latency_avg
        return 0.0 if avg is None else -avg
