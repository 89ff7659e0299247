"""The selection-strategy interface and what strategies share."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .._clock import Clock, SystemClock
from .._errors import NoAvailableModelError
from .._state import ModelSnapshot
from .._types import CompletionRequest

__all__ = [
    "POOL_OPTION_KEYS",
    "BalanceMode",
    "SelectionResult",
    "SelectionStrategy",
    "StrategyContext",
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


class StrategyOptions(BaseModel):
    """The base of every strategy's options: validated, frozen, unknown keys refused.

    Each strategy names its own subclass as ``Options`` (a strategy without options
    keeps this empty one), so that a pool's settings for it are checked when the
    configuration loads, with errors that name the pool, the strategy and the option,
    rather than when the strategy first reads a loose mapping. A pool gives them under
    ``strategy_options:`` and, for the options the SelectionStrategy contract names as
    pool keys (``balance_mode``, ``rate_limit``, ``fallback_strategy``, ...), as the
    pool's own keys: see :data:`POOL_OPTION_KEYS`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


POOL_OPTION_KEYS: tuple[str, ...] = (
    "fallback_strategy",
    "balance_mode",
    "affinity_mode",
    "session_timeout",
    "output_ratio",
    "rate_limit",
)
"""Strategy options that are written as a pool's own keys (the configuration contract
predates per-strategy options). A strategy that declares an option of one of these names
receives it from there; to any other strategy the key means nothing."""


@dataclass(frozen=True, slots=True)
class StrategyContext:
    """What every strategy gets from its pool, whatever the strategy: the priority
    lists (the shared base score reads them) and the clock (never a configuration
    value, so not an option)."""

    model_priority: tuple[str, ...] = ()
    provider_priority: tuple[str, ...] = ()
    clock: Clock = field(default_factory=SystemClock)


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

    A strategy with parameters declares them as its ``Options`` (a
    :class:`StrategyOptions` subclass, so a bad value is refused when the configuration
    loads, not at the first request) and reads them from ``self.options``. What every
    strategy gets besides is ``self.context`` (the pool's priority lists) and
    ``self.clock``.
    """

    strategy_id: ClassVar[str] = ""
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    """This strategy's options model; a subclass with options names its own."""

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        opts = self.Options() if options is None else options
        if not isinstance(opts, self.Options):
            raise TypeError(
                f"{type(self).__name__} takes {self.Options.__name__}, not {type(opts).__name__}"
            )
        self.options = opts
        self.context = context if context is not None else StrategyContext()
        self.clock = self.context.clock
        self.pool_name = ""
        self._position: dict[str, int] = {}
        self._model_rank = _ranks(self.context.model_priority)
        self._provider_rank = _ranks(self.context.provider_priority)

    # --- options ------------------------------------------------------------------
    @classmethod
    def parse_options(
        cls, settings: Mapping[str, Any], pool_keys: Collection[str] = ()
    ) -> StrategyOptions:
        """This strategy's options from a pool's settings (pydantic's ValidationError
        when one is unknown or invalid).

        ``pool_keys`` are the settings written as the pool's own keys: one this strategy
        has no option for is left out (it belongs to another strategy), where an unknown
        key under ``strategy_options`` is an error.
        """
        fields = cls.Options.model_fields
        return cls.Options.model_validate(
            {k: v for k, v in settings.items() if k in fields or k not in pool_keys}
        )

    @classmethod
    def option_names(cls, settings: Mapping[str, Any]) -> list[str]:
        """The options this strategy accepts with these settings (for error messages)."""
        return sorted(cls.Options.model_fields)

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
