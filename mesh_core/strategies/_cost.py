"""Cost-first: the cheapest model by per-token price."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from pydantic import Field

from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import SelectionResult, SelectionStrategy, StrategyContext, StrategyOptions

__all__ = ["CostFirstOptions", "CostFirstStrategy"]

_ID = attrgetter("model_id")


class CostFirstOptions(StrategyOptions):
    """Options of cost-first (``output_ratio`` is also a pool key)."""

    output_ratio: float = Field(0.25, ge=0, le=1)
    """The expected share of output tokens, by which input and output prices blend."""


def blended_price(input_price: float | None, output_price: float | None, ratio: float) -> float:
    """The price per 1k tokens of a request whose tokens are ``ratio`` output."""
    return (input_price or 0.0) * (1 - ratio) + (output_price or 0.0) * ratio


class CostFirstStrategy(SelectionStrategy):
    """Select the cheapest available model based on per-token pricing.

    The effective price blends input and output prices by the expected share of
    output tokens (``output_ratio``, 0.25 by default). Unpriced models rank last;
    ties go to pool order. Re-evaluated on every request, so traffic returns to
    the cheapest model as soon as it is back.
    """

    strategy_id = "modelmesh.cost-first.v1"
    Options = CostFirstOptions
    options: CostFirstOptions

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self._price: dict[str, float] = {}
        """Effective price per model (prices are static: computed once per model)."""

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        price = self._price
        ids = list(map(_ID, candidates))
        try:
            prices = list(map(price.__getitem__, ids))
        except KeyError:
            for c in candidates:
                price.setdefault(c.model_id, -self.score(c, request))
            prices = list(map(price.__getitem__, ids))
        best = min(prices)
        return self._result(candidates[prices.index(best)], -best, "cheapest")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        if candidate.input_price is None and candidate.output_price is None:
            return float("-inf")
        return -blended_price(
            candidate.input_price, candidate.output_price, self.options.output_ratio
        )
