"""Small builders shared by the unit tests."""

from __future__ import annotations

from pydantic import ConfigDict

from mesh_core._state import ModelSnapshot
from mesh_core._types import CompletionRequest
from mesh_core.strategies import StickUntilFailureStrategy, StrategyOptions, register_strategy


def snap(model_id: str, provider_id: str = "p", **kw) -> ModelSnapshot:
    base = dict(
        status="active",
        failure_count=0,
        error_rate=0.0,
        cooldown_remaining=0.0,
        quota_used=0,
        tokens_used=0,
        cost_accumulated=0.0,
    )
    base.update(kw)
    return ModelSnapshot(model_id=model_id, provider_id=provider_id, **base)


def req(**kw) -> CompletionRequest:
    return CompletionRequest(model="pool", messages=[{"role": "user", "content": "hi"}], **kw)


class FreeFormOptions(StrategyOptions):
    """Any option at all: a custom strategy may choose to take them (``extra="allow"``),
    which tests of what a configuration's options can hold (secrets, YAML merge keys,
    deep nesting) rely on now that a shipped strategy refuses an option it does not have."""

    model_config = ConfigDict(extra="allow", frozen=True)


class FreeFormStrategy(StickUntilFailureStrategy):
    strategy_id = "tests.free-form.v1"
    Options = FreeFormOptions


register_strategy(FreeFormStrategy.strategy_id, FreeFormStrategy)
FREE_FORM = FreeFormStrategy.strategy_id
