"""The selection-strategy interface and what strategies share."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._clock import Clock, SystemClock
from .._errors import NoAvailableModelError
from .._state import ModelSnapshot
from .._types import CompletionRequest

__all__ = [
    "BalanceMode",
    "SelectionResult",
    "SelectionStrategy",
    "StrategyOptions",
    "priority_score",
]


class BalanceMode(enum.Enum):
    """Distribution mode for the load-balanced strategy."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


@dataclass(frozen=True, slots=True)
class SelectionResult:
    """Result of a model selection decision."""

    model_id: str
    provider_id: str
    score: float
    reason: str


@dataclass(frozen=True)
class StrategyOptions:
    """Every parameter a pool can give its strategy (the pool's strategy options)."""

    model_priority: tuple[str, ...] = ()
    provider_priority: tuple[str, ...] = ()
    fallback_strategy: str = "round-robin"
    balance_mode: BalanceMode = BalanceMode.RELATIVE
    rate_limit_threshold: float = 0.8
    rate_limit_min_delta: float = 0.0
    rate_limit_max_rpm: int = 0
    affinity_mode: str = "fallback"
    session_timeout: float = 1800.0
    output_ratio: float = 0.25
    clock: Clock = field(default_factory=SystemClock)
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Options of custom strategies (``strategy_options`` in configuration)."""


def priority_score(
    candidate: ModelSnapshot, model_rank: Mapping[str, int], provider_rank: Mapping[str, int]
) -> float:
    """The shared base score: model priority, then provider priority, then health.

    A model named in ``model_priority`` scores 1000 + (list length - index); one whose
    provider is in ``provider_priority`` scores 500 + (list length - index); any other
    scores 1 - error_rate.
    """
    rank = model_rank.get(candidate.model_id)
    if rank is not None:
        return 1000.0 + rank
    rank = provider_rank.get(candidate.provider_id)
    if rank is not None:
        return 500.0 + rank
    return 1.0 - candidate.error_rate


def _ranks(names: Sequence[str]) -> dict[str, int]:
    n = len(names)
    return {name: n - i for i, name in enumerate(names)}


class SelectionStrategy:
    """Chooses the best model from active candidates for a given request.

    Candidates arrive in pool order (the configured order of the pool's models),
    already stripped of standby models and of models that cannot serve the
    request. The default :meth:`select` returns the highest :meth:`score`, ties
    going to the first candidate. Strategies that keep state between requests
    (a pointer, a cursor, a session table) override :meth:`select`.
    """

    strategy_id: ClassVar[str] = ""

    def __init__(self, options: StrategyOptions | None = None) -> None:
        self.options = options or StrategyOptions()
        self.pool_name = ""
        self._position: dict[str, int] = {}
        self._model_rank = _ranks(self.options.model_priority)
        self._provider_rank = _ranks(self.options.provider_priority)

    # --- the interface every strategy implements --------------------------
    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        """Return the highest-scoring candidate; ties go to the first in the list."""
        self._require(candidates)
        best = candidates[0]
        best_score = self.score(best, request)
        for cand in candidates[1:]:
            s = self.score(cand, request)
            if s > best_score:
                best, best_score = cand, s
        return self._result(best, best_score, "highest score")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        """Higher is better. The default is the shared base (priority) score."""
        return priority_score(candidate, self._model_rank, self._provider_rank)

    # --- hooks used by the pool ----------------------------------------------
    def bind(self, pool_name: str, model_ids: Sequence[str]) -> None:
        """Tell the strategy its pool and the pool's model order."""
        self.pool_name = pool_name
        self._position = {m: i for i, m in enumerate(model_ids)}

    def export_state(self) -> dict[str, Any]:
        """State worth persisting across restarts (JSON-safe)."""
        return {}

    def import_state(self, data: Mapping[str, Any]) -> None:
        """Restore what :meth:`export_state` produced."""

    # --- helpers ---------------------------------------------------------------
    def _require(self, candidates: Sequence[ModelSnapshot]) -> None:
        if not candidates:
            raise NoAvailableModelError(
                f"no active model to select from in pool {self.pool_name!r}",
                pool_name=self.pool_name,
            )

    @staticmethod
    def _result(c: ModelSnapshot, score: float, reason: str) -> SelectionResult:
        return SelectionResult(c.model_id, c.provider_id, float(score), reason)

    def _by_priority(self, candidates: Sequence[ModelSnapshot]) -> ModelSnapshot:
        """The base-score winner (priority lists, then health, then pool order)."""
        best = candidates[0]
        if not self._model_rank and not self._provider_rank:
            return best
        best_score = priority_score(best, self._model_rank, self._provider_rank)
        for cand in candidates[1:]:
            s = priority_score(cand, self._model_rank, self._provider_rank)
            if s > best_score:
                best, best_score = cand, s
        return best
