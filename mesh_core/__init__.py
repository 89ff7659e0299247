"""ModelMesh Lite core: capability pools, model state, evaluators, strategies and routing.

Names are loaded on first use, so ``import mesh_core`` costs almost nothing and
never imports LangChain or LlamaIndex.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # facade
    "Mesh": "mesh",
    "shared_mesh": "shared",
    # configuration
    "MeshConfig": "config",
    "load_config": "config",
    # state and decisions
    "ModelState": "state",
    "ModelSnapshot": "state",
    "CapabilityTree": "capabilities",
    "CapabilityPool": "pool",
    "Model": "pool",
    "PoolState": "pool",
    "RotationPolicy": "pool",
    "DeactivationEvaluator": "evaluators",
    "DeactivationPolicy": "evaluators",
    "DeactivationReason": "evaluators",
    "MaintenanceWindow": "evaluators",
    "RecoveryEvaluator": "evaluators",
    "RecoveryPolicy": "evaluators",
    "SelectionStrategy": "strategies",
    "SelectionResult": "strategies",
    "StrategyOptions": "strategies",
    "BalanceMode": "strategies",
    "register_strategy": "strategies",
    # types
    "CompletionRequest": "types",
    "CompletionResponse": "types",
    "CompletionChunk": "types",
    "Usage": "types",
    "ToolCall": "types",
    "Attempt": "types",
    # events and time
    "Event": "events",
    "EventEmitter": "events",
    "EventType": "events",
    "ManualClock": "clock",
    "SystemClock": "clock",
}
_ERRORS = (
    "ModelMeshError",
    "ConfigurationError",
    "RoutingError",
    "UnknownPoolError",
    "NoAvailableModelError",
    "NoActiveModelError",
    "NoCapableModelError",
    "SessionModelUnavailableError",
    "AllProvidersExhaustedError",
    "ProviderError",
    "AuthenticationError",
    "RateLimitError",
    "QuotaExhaustedError",
    "ServerError",
    "ProviderTimeoutError",
    "ProviderConnectionError",
    "ContextWindowExceededError",
    "ContentPolicyError",
    "BadRequestError",
    "MalformedResponseError",
    "MeshClosedError",
    "StreamInterruptedError",
    "ErrorKind",
)
_EXPORTS.update(dict.fromkeys(_ERRORS, "errors"))

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mesh_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
