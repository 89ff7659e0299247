"""Strategies driven by the priority lists: stick-until-failure and priority-selection."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import PrivateAttr, field_validator

from .._errors import NoAvailableModelError
from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import (
    SelectionResult,
    SelectionStrategy,
    StrategyContext,
    StrategyOptions,
    priority_score,
)
from ._registry import resolve_strategy_id, strategy_class

__all__ = ["PrioritySelectionOptions", "PrioritySelectionStrategy", "StickUntilFailureStrategy"]

_PRIORITY_ID = "modelmesh.priority-selection.v1"


class StickUntilFailureStrategy(SelectionStrategy):
    """Use the same model until it fails, then rotate (the default strategy).

    The current model is kept while it is a candidate. When it fails (it is then
    left out of the candidates, for the rest of the request or while in standby),
    the next candidate after it in pool order becomes current. A recovered earlier
    model does not take traffic back until the current one fails in turn.
    The very first choice follows the priority lists, else pool order.
    """

    strategy_id = "modelmesh.stick-until-failure.v1"

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self.current: str | None = None

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        current = self.current
        if current is not None:
            for cand in candidates:
                if cand.model_id == current:
                    return self._result(cand, 1.0, "current model")
            chosen = self._next_after(current, candidates)
            reason = f"rotated from {current}"
        else:
            chosen = self._by_priority(candidates)
            reason = "first choice"
        self.current = chosen.model_id
        return self._result(chosen, 1.0, reason)

    def _next_after(self, current: str, candidates: Sequence[ModelSnapshot]) -> ModelSnapshot:
        pos = self._position.get(current)
        if pos is None:
            return self._by_priority(candidates)
        for cand in candidates:
            if self._position.get(cand.model_id, -1) > pos:
                return cand
        return candidates[0]  # wrap around

    def export_state(self) -> dict[str, Any]:
        return {"current": self.current}

    def import_state(self, data: Mapping[str, Any]) -> None:
        self.current = data.get("current")


class PrioritySelectionOptions(StrategyOptions):
    """Options of priority-selection (``fallback_strategy`` is also a pool key).

    The fallback strategy's own options come from the same pool settings: a pool with
    ``fallback_strategy: load-balanced`` may set ``balance_mode`` too.
    """

    fallback_strategy: str = "round-robin"
    """The strategy that decides when no model of the priority lists is available, or
    ``error`` to raise NoAvailableModelError then."""
    _fallback_options: StrategyOptions | None = PrivateAttr(None)

    @field_validator("fallback_strategy")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value == "error":
            return value
        try:
            resolved = resolve_strategy_id(value)
        except KeyError as exc:
            msg = str(exc.args[0])
            raise ValueError(msg[:-1] + ", or 'error')" if msg.endswith(")") else msg) from None
        if resolved == _PRIORITY_ID:
            raise ValueError("cannot be priority-selection itself")
        return value

    def model_post_init(self, context: Any, /) -> None:
        """The fallback's default options, until :meth:`parse_options` sets them."""
        if self.fallback_strategy != "error":
            self._fallback_options = strategy_class(self.fallback_strategy).Options()

    @property
    def fallback_options(self) -> StrategyOptions | None:
        """The fallback's options (None: no fallback, ``error``)."""
        return self._fallback_options


class PrioritySelectionStrategy(SelectionStrategy):
    """Always prefer the highest-priority available model.

    Each request walks ``model_priority`` and takes the first active model, else
    the first model whose provider comes earliest in ``provider_priority``. When
    lists are configured but none of their models is available, the
    ``fallback_strategy`` decides (``round-robin`` by default, or ``error``). With
    no lists at all, the pool's own order is the priority. Traffic returns to a
    recovered higher-priority model at once.
    """

    strategy_id = _PRIORITY_ID
    Options = PrioritySelectionOptions
    options: PrioritySelectionOptions

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self._fallback: SelectionStrategy | None = None
        fb = self.options.fallback_strategy
        if fb != "error":
            # The fallback sees the same candidates and context; it cannot fall back in turn.
            self._fallback = strategy_class(fb)(self.options.fallback_options, self.context)

    @classmethod
    def parse_options(
        cls, settings: Mapping[str, Any], pool_keys: Collection[str] = ()
    ) -> StrategyOptions:
        """Its own options, and the fallback's from the settings that are not its own."""
        own = PrioritySelectionOptions.model_fields
        options = PrioritySelectionOptions.model_validate(
            {k: v for k, v in settings.items() if k in own}
        )
        rest = {k: v for k, v in settings.items() if k not in own}
        fb = options.fallback_strategy
        if fb == "error":  # nothing else to give options to: unknown ones are refused
            SelectionStrategy.parse_options(rest, pool_keys)
        else:
            options._fallback_options = strategy_class(fb).parse_options(rest, pool_keys)
        return options

    @classmethod
    def option_names(cls, settings: Mapping[str, Any]) -> list[str]:
        fb = settings.get("fallback_strategy", cls.Options().fallback_strategy)
        try:
            extra = strategy_class(fb).option_names({}) if fb != "error" else []
        except KeyError:
            extra = []
        return sorted({*cls.Options.model_fields, *extra})

    def bind(self, pool_name: str, model_ids: Sequence[str]) -> None:
        super().bind(pool_name, model_ids)
        if self._fallback is not None:
            self._fallback.bind(pool_name, model_ids)

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        if not self._model_rank and not self._provider_rank:
            return self._result(candidates[0], 1.0, "pool order")
        best = candidates[0]
        best_score = priority_score(best, self._model_rank, self._provider_rank)
        for cand in candidates[1:]:
            s = priority_score(cand, self._model_rank, self._provider_rank)
            if s > best_score:
                best, best_score = cand, s
        if best_score >= 500.0:
            return self._result(best, best_score, "priority list")
        if self._fallback is None:
            raise NoAvailableModelError(
                f"no model of the priority lists is available in pool {self.pool_name!r} "
                "and fallback_strategy is 'error'",
                pool_name=self.pool_name,
            )
        picked = self._fallback.select(candidates, request)
        return SelectionResult(picked.model_id, picked.provider_id, picked.score, "fallback")

    def export_state(self) -> dict[str, Any]:
        return {"fallback": self._fallback.export_state() if self._fallback else {}}

    def import_state(self, data: Mapping[str, Any]) -> None:
        if self._fallback is not None:
            self._fallback.import_state(data.get("fallback", {}))
