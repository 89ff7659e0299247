"""Small builders shared by the unit tests."""

from __future__ import annotations

from mesh_core._state import ModelSnapshot
from mesh_core._types import CompletionRequest


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
