"""Load-balanced: spread requests in proportion to rate-limit headroom."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import (
    BalanceMode,
    SelectionResult,
    SelectionStrategy,
    StrategyContext,
    StrategyOptions,
)

__all__ = ["LoadBalancedOptions", "LoadBalancedStrategy"]

_ID = attrgetter("model_id")


class LoadBalancedOptions(StrategyOptions):
    """Options of load-balanced (``balance_mode`` is also a pool key)."""

    balance_mode: BalanceMode = BalanceMode.RELATIVE
    """``relative``: weights are remaining / limit; ``absolute``: the remaining count."""


class LoadBalancedStrategy(SelectionStrategy):
    """Distribute requests proportionally to rate-limit headroom.

    Each candidate's weight is its headroom from the provider's rate-limit
    headers: in ``relative`` mode (default) remaining / limit, in ``absolute``
    mode the remaining request count. A model without headroom data gets the
    median weight of those with data, so with no data at all the distribution is
    equal. Requests are dealt by stride scheduling: each model holds a *pass*; the
    lowest pass is chosen (ties to pool order) and advances by 1 / weight. That is
    deterministic and exact in proportion, and a pick touches one model, so it
    stays cheap at thousands of models. A model seen for the first time, or back
    from standby, starts at the current pass rather than claiming a burst.
    """

    strategy_id = "modelmesh.load-balanced.v1"
    Options = LoadBalancedOptions
    options: LoadBalancedOptions

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self._pass: dict[str, float] = {}
        self._aligned: tuple[Sequence[ModelSnapshot], list[str], list[float]] | None = None
        """The last candidate list with its ids and passes, slot for slot."""
        self._now = 0.0
        """The pass of the last pick: passes of models present all along never fall below."""

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
        passes = self._pass
        cached = self._aligned
        if (
            cached is not None
            and cached[0] is candidates
            and len(cached[1]) == len(candidates)
            and cached[1][-1] == candidates[-1].model_id
        ):
            # The pool's own candidate list: same models in the same slots as last time.
            ids, current = cached[1], cached[2]
        else:
            ids = list(map(_ID, candidates))
            # None for a model not seen yet (given a pass below), hence the ignore:
            current = list(map(passes.get, ids))  # type: ignore[arg-type]  # see above
        if None in current:  # models seen for the first time start at the current pass
            known = [p for p in current if p is not None]
            start = max(min(known), self._now) if known else self._now
            for mid, p in zip(ids, current):
                if p is None:
                    passes[mid] = start
            current = list(map(passes.__getitem__, ids))
        while True:
            best = min(current)
            i = current.index(best)
            if best >= self._now:
                break
            passes[ids[i]] = current[i] = self._now  # back from standby: no catch-up burst
        chosen = candidates[i]
        weight = self._weight_of(chosen, candidates)
        passes[ids[i]] = current[i] = best + 1.0 / weight
        self._now = best
        self._aligned = (candidates, ids, current)
        return self._result(chosen, weight, "weighted share")

    def _weight_of(self, chosen: ModelSnapshot, candidates: Sequence[ModelSnapshot]) -> float:
        weight = self.weight(chosen)
        if weight is None:  # no data for this one: the median of those with data
            known = [w for w in map(self.weight, candidates) if w is not None]
            weight = statistics.median(known) if known else 1.0
        floor = 1.0 if self.options.balance_mode is BalanceMode.ABSOLUTE else 0.01
        return max(weight, floor)  # no headroom: picked rarely, never starved for good

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        w = self.weight(candidate)
        return 0.0 if w is None else w

    def export_state(self) -> dict[str, Any]:
        return {"passes": dict(self._pass), "now": self._now}

    def import_state(self, data: Mapping[str, Any]) -> None:
        self._pass = {k: float(v) for k, v in data.get("passes", {}).items()}
        self._aligned = None
        self._now = float(data.get("now", 0.0))
