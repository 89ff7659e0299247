"""Rate-limit-aware: switch models before a rate limit is hit."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import SelectionResult, SelectionStrategy, StrategyOptions, priority_score

__all__ = ["RateLimitAwareStrategy", "usage_ratio"]


def usage_ratio(c: ModelSnapshot) -> float | None:
    """1 - remaining/limit from the provider's rate-limit headers (the worse of
    requests and tokens), or None when the provider sent none."""
    ratios = []
    if c.requests_limit and c.requests_remaining is not None:
        ratios.append(1.0 - c.requests_remaining / c.requests_limit)
    if c.tokens_limit and c.tokens_remaining is not None:
        ratios.append(1.0 - c.tokens_remaining / c.tokens_limit)
    return max(ratios) if ratios else None


class RateLimitAwareStrategy(SelectionStrategy):
    """Switch models preemptively before hitting rate limits, based on headroom.

    The preferred model (priority lists, else pool order) is used while its usage
    ratio is below ``rate_limit.threshold``. The ratio comes from the provider's
    ``x-ratelimit-*`` headers, else from local counting against
    ``rate_limit.max_rpm``. A model is also passed over while it served a request
    less than ``rate_limit.min_delta`` ago, or reached ``max_rpm`` in the last
    minute. When every model is over, the one with the most headroom is taken.
    """

    strategy_id = "modelmesh.rate-limit-aware.v1"

    def __init__(self, options: StrategyOptions | None = None) -> None:
        super().__init__(options)
        self._sent: dict[str, deque[float]] = {}

    def _ratio(self, c: ModelSnapshot, now: float) -> tuple[float, bool]:
        """(usage ratio, blocked) for one candidate at ``now``."""
        opts = self.options
        sent = self._sent.get(c.model_id)
        if sent:
            while sent and sent[0] <= now - 60.0:
                sent.popleft()
        recent = len(sent) if sent else 0
        ratio = usage_ratio(c)
        if ratio is None:
            ratio = recent / opts.rate_limit_max_rpm if opts.rate_limit_max_rpm else 0.0
        blocked = bool(opts.rate_limit_max_rpm and recent >= opts.rate_limit_max_rpm) or bool(
            opts.rate_limit_min_delta and sent and now - sent[-1] < opts.rate_limit_min_delta
        )
        return ratio, blocked

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        now = self.options.clock.time()
        threshold = self.options.rate_limit_threshold
        ordered = self._priority_order(candidates)
        best, best_ratio = ordered[0], float("inf")
        for cand in ordered:
            ratio, blocked = self._ratio(cand, now)
            if ratio < threshold and not blocked:
                return self._taken(cand, ratio, now, "below threshold")
            effective = max(ratio, threshold) if blocked else ratio
            if effective < best_ratio:
                best, best_ratio = cand, effective
        return self._taken(best, best_ratio, now, "most headroom (all at threshold)")

    def _priority_order(self, candidates: Sequence[ModelSnapshot]) -> Sequence[ModelSnapshot]:
        if not self._model_rank and not self._provider_rank:
            return candidates
        ranks = (self._model_rank, self._provider_rank)
        return sorted(candidates, key=lambda c: -priority_score(c, *ranks))

    def _taken(self, c: ModelSnapshot, ratio: float, now: float, reason: str) -> SelectionResult:
        self._sent.setdefault(c.model_id, deque()).append(now)
        return self._result(c, (1.0 - ratio) * 100.0, reason)

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        ratio, _ = self._ratio(candidate, self.options.clock.time())
        return (1.0 - ratio) * 100.0
