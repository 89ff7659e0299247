"""Cost-first: the cheapest model by per-token price."""

from __future__ import annotations

from ..state import ModelSnapshot
from ..types import CompletionRequest
from .base import SelectionStrategy

__all__ = ["CostFirstStrategy"]


class CostFirstStrategy(SelectionStrategy):
    """Select the cheapest available model based on per-token pricing.

    The effective price blends input and output prices by the expected share of
    output tokens (``output_ratio``, 0.25 by default). Unpriced models rank last;
    ties go to pool order. Re-evaluated on every request, so traffic returns to
    the cheapest model as soon as it is back.
    """

    strategy_id = "modelmesh.cost-first.v1"

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        if candidate.input_price is None and candidate.output_price is None:
            return float("-inf")
        r = self.options.output_ratio
        return -((candidate.input_price or 0.0) * (1 - r) + (candidate.output_price or 0.0) * r)
