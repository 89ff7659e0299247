"""Round-robin: cycle through the pool, one step per request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import SelectionResult, SelectionStrategy, StrategyContext, StrategyOptions

__all__ = ["RoundRobinStrategy"]


class RoundRobinStrategy(SelectionStrategy):
    """Cycle through active models in pool order, distributing requests evenly.

    The cursor walks the pool's full order, so standby models are skipped and a
    recovered model rejoins at its original position.
    """

    strategy_id = "modelmesh.round-robin.v1"

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self.cursor = 0
        self.rotations = 0

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        position = self._position
        cursor = self.cursor
        chosen = candidates[0]
        for cand in candidates:
            if position.get(cand.model_id, 0) >= cursor:
                chosen = cand
                break
        self.cursor = position.get(chosen.model_id, 0) + 1
        self.rotations += 1
        return self._result(chosen, 1.0, "next in turn")

    def score(self, candidate: ModelSnapshot, request: CompletionRequest) -> float:
        """Nearer to the cursor (in cycle order) scores higher."""
        n = max(len(self._position), 1)
        pos = self._position.get(candidate.model_id, 0)
        return float(n - ((pos - self.cursor) % n))

    def export_state(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "rotations": self.rotations}

    def import_state(self, data: Mapping[str, Any]) -> None:
        self.cursor = int(data.get("cursor", 0))
        self.rotations = int(data.get("rotations", 0))
