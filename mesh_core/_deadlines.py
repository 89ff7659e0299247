"""Deadlines learned from each model's own history, and when to hedge: pure arithmetic.

Two questions the request path asks before it streams from a model:

* **How long to wait** for the first token, and for the next chunk (adaptive
  deadlines). Like TCP's retransmission timeout (RFC 6298): a smoothed mean plus four
  mean deviations, never below a floor and never above the configured value, which
  stays the ceiling. A model that answers in one second is declared slow after a few
  seconds rather than thirty; a reasoning model whose history shows forty seconds of
  thinking is not cut.
* **When to ask a second model too** (first-token hedging). ``auto``: three times the
  model's median time to first token (the pool's while the model has little history),
  never below :data:`HEDGE_FLOOR`. A multiple of the median, not a high percentile:
  the median does not move when one request in ten is slow, and it does not drift
  down because the slow first tokens a hedge won are never seen.

Nothing here does I/O or takes a lock; the router keeps one :class:`ResponseTimes` per
model and updates it under the mesh lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from statistics import median

from .providers import Timeouts

__all__ = [
    "FIRST_TOKEN_FLOOR",
    "HEDGE_COLD",
    "HEDGE_FLOOR",
    "MIN_SAMPLES",
    "STALL_FLOOR",
    "HedgePolicy",
    "ResponseTimes",
    "adapted",
]

MIN_SAMPLES = 8
"""Streams a model must have finished before its history is used."""
FIRST_TOKEN_FLOOR = 5.0
"""An adaptive first-token deadline is never shorter (seconds)."""
STALL_FLOOR = 10.0
"""An adaptive stall deadline is never shorter (seconds)."""
HEDGE_FLOOR = 2.0
"""``after: auto`` never hedges sooner (seconds)."""
HEDGE_COLD = 10.0
"""``after: auto`` with no history in the whole pool yet (seconds)."""
_WINDOW = 64
_ALPHA, _BETA, _K = 1 / 8, 1 / 4, 4.0


@dataclass(slots=True)
class _Smoothed:
    """RFC 6298's estimator: ``mean`` and ``deviation`` of a series of durations."""

    mean: float = 0.0
    deviation: float = 0.0
    count: int = 0

    def add(self, sample: float) -> None:
        if self.count == 0:
            self.mean, self.deviation = sample, sample / 2
        else:
            self.deviation += _BETA * (abs(self.mean - sample) - self.deviation)
            self.mean += _ALPHA * (sample - self.mean)
        self.count += 1

    def bound(self, floor: float, ceiling: float) -> float:
        """The learned deadline, between ``floor`` and ``ceiling`` (the ceiling until the
        history is long enough)."""
        if self.count < MIN_SAMPLES:
            return ceiling
        return min(ceiling, max(floor, self.mean + _K * self.deviation))


class ResponseTimes:
    """How one model's streams went: time to first token, and the longest gap between
    two chunks of each finished stream."""

    __slots__ = ("_first_token", "_gap", "recent")

    def __init__(self) -> None:
        self._first_token = _Smoothed()
        self._gap = _Smoothed()
        self.recent: deque[float] = deque(maxlen=_WINDOW)
        """The last times to first token (seconds), for the hedging threshold."""

    def first_token(self, seconds: float) -> None:
        self._first_token.add(seconds)
        self.recent.append(seconds)

    def finished(self, longest_gap: float) -> None:
        self._gap.add(longest_gap)

    def deadlines(self, configured: Timeouts) -> Timeouts:
        """``configured`` with first-token and stall deadlines learned from this history."""
        first = self._first_token.bound(FIRST_TOKEN_FLOOR, configured.first_token)
        stall = self._gap.bound(STALL_FLOOR, configured.stall)
        if first == configured.first_token and stall == configured.stall:
            return configured
        return replace(configured, first_token=first, stall=stall)


def adapted(configured: Timeouts, times: ResponseTimes | None) -> Timeouts:
    """The deadlines for the next stream of a model (``configured`` without history)."""
    return configured if times is None else times.deadlines(configured)


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """A pool's ``hedging`` settings. ``after``: seconds, or None for ``auto``."""

    enabled: bool = True
    after: float | None = None
    max_extra: int = 1

    def threshold(self, model: ResponseTimes | None, pool: Iterable[ResponseTimes]) -> float:
        """Seconds without a first token after which a second model is asked too."""
        if self.after is not None:
            return self.after
        samples: list[float] = list(model.recent) if model is not None else []
        if len(samples) < MIN_SAMPLES:
            samples = [s for times in pool for s in times.recent]
        if len(samples) < MIN_SAMPLES:
            return HEDGE_COLD
        return max(HEDGE_FLOOR, 3.0 * median(samples))
