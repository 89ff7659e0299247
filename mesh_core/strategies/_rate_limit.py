"""Rate-limit-aware: switch models before a rate limit is hit."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from pydantic import Field

from .._config import Duration
from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import (
    SelectionResult,
    SelectionStrategy,
    StrategyContext,
    StrategyOptions,
    priority_score,
)

__all__ = ["RateLimitAwareOptions", "RateLimitAwareStrategy", "RateLimitOptions", "usage_ratio"]


class RateLimitOptions(StrategyOptions):
    """The pool's ``rate_limit`` section."""

    threshold: float = Field(0.8, gt=0, le=1)
    """Switch models at this fraction of the rate limit."""
    min_delta: Duration = 0.0
    """The shortest time between two requests to the same model."""
    max_rpm: int = Field(0, ge=0)
    """Requests per minute counted locally when the provider sends no rate-limit headers
    (0: no local limit)."""


class RateLimitAwareOptions(StrategyOptions):
    """Options of rate-limit-aware (``rate_limit`` is also a pool key)."""

    rate_limit: RateLimitOptions = Field(default_factory=RateLimitOptions)


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
    Options = RateLimitAwareOptions
    options: RateLimitAwareOptions

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self._sent: dict[str, deque[float]] = {}

    def _ratio(self, c: ModelSnapshot, now: float) -> tuple[float, bool]:
        """(usage ratio, blocked) for one candidate at ``now``."""
        opts = self.options.rate_limit
        sent = self._sent.get(c.model_id)
        if sent:
            while sent and sent[0] <= now - 60.0:
                sent.popleft()
        recent = len(sent) if sent else 0
        ratio = usage_ratio(c)
        if ratio is None:
            ratio = recent / opts.max_rpm if opts.max_rpm else 0.0
        blocked = bool(opts.max_rpm and recent >= opts.max_rpm) or bool(
            opts.min_delta and sent and now - sent[-1] < opts.min_delta
        )
        return ratio, blocked

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        now = self.clock.time()
        threshold = self.options.rate_limit.threshold
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
        ratio, _ = self._ratio(candidate, self.clock.time())
        return (1.0 - ratio) * 100.0
