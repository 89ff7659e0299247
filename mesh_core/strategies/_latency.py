"""Latency-first: the model with the lowest recent latency, and a bounded share for the rest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from pydantic import Field

from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import SelectionResult, SelectionStrategy, StrategyContext, StrategyOptions

__all__ = ["LatencyFirstOptions", "LatencyFirstStrategy"]

_mean = attrgetter("latency_mean")


class LatencyFirstOptions(StrategyOptions):
    """Options of latency-first."""

    explore_every: int = Field(10, ge=0, strict=True)
    """One selection in this many may go to a model without latency history (10: a tenth
    of the traffic at most); 0 turns exploration off."""


class LatencyFirstStrategy(SelectionStrategy):
    """Select the model with the lowest mean latency over its recent history.

    A model with no history cannot be compared, and giving it a made-up latency
    (the median of the others, say) either prefers it blindly or starves it for good:
    with the median it ties with the slowest model at best and never gets a request,
    so it is never measured. It gets a bounded exploration share instead: while some
    candidate is unmeasured, every ``explore_every``-th selection (10 by default, so at
    most a tenth of the traffic; ``strategy_options: {explore_every: N}``, 0 turns it
    off) goes to an unmeasured candidate (in turn, in pool order), and every other one
    to the lowest mean. An unmeasured model is so measured within N requests, and then
    competes on its latency. With nothing measured yet, pool order. Deterministic.
    """

    strategy_id = "modelmesh.latency-first.v1"
    Options = LatencyFirstOptions
    options: LatencyFirstOptions

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self.explore_every = self.options.explore_every
        self._turn = 0
        """Selections since the last exploration (counted only while one is possible)."""
        self._explored = 0
        """Explorations so far: which unmeasured candidate is next."""

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        means = list(map(_mean, candidates))  # a slot read per candidate, in C
        if None in means:  # snapshots built without the mean: compute it from the history
            means = [c.latency_avg if m is None else m for c, m in zip(candidates, means)]
            if None in means:
                return self._unmeasured(candidates, means)
        best = min(means)
        return self._result(candidates[means.index(best)], -best, "lowest recent latency")

    def _unmeasured(
        self, candidates: Sequence[ModelSnapshot], means: list[float | None]
    ) -> SelectionResult:
        known = [m for m in means if m is not None]
        if not known:
            return self._result(candidates[0], 0.0, "no latency known yet: pool order")
        self._turn += 1
        if self.explore_every and self._turn >= self.explore_every:
            self._turn = 0
            unknown = [c for c, m in zip(candidates, means) if m is None]
            chosen = unknown[self._explored % len(unknown)]
            self._explored += 1
            return self._result(chosen, 0.0, "exploring: no latency known yet")
        best = min(known)
        return self._result(candidates[means.index(best)], -best, "lowest recent latency")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        avg = candidate.latency_avg
        return 0.0 if avg is None else -avg

    def export_state(self) -> dict[str, Any]:
        return {"turn": self._turn, "explored": self._explored}

    def import_state(self, data: Mapping[str, Any]) -> None:
        self._turn = int(data.get("turn", 0))
        self._explored = int(data.get("explored", 0))
