"""ModelMesh Lite core: capability pools, model state, evaluators, strategies and routing.

Names are loaded on first use, so ``import mesh_core`` costs almost nothing and
never imports LangChain or LlamaIndex; type checkers see them as the real classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "InvalidRequestError",
    "UnknownModelError",
    "UnknownCapabilityError",
    "StateStoreError",
    "ErrorKind",
)
_EXPORTS.update(dict.fromkeys(_ERRORS, "errors"))

if TYPE_CHECKING:  # what type checkers see; at run time names load on first use
    from .capabilities import (
        CapabilityTree as CapabilityTree,
    )
    from .clock import (
        ManualClock as ManualClock,
    )
    from .clock import (
        SystemClock as SystemClock,
    )
    from .config import (
        MeshConfig as MeshConfig,
    )
    from .config import (
        load_config as load_config,
    )
    from .errors import (
        AllProvidersExhaustedError as AllProvidersExhaustedError,
    )
    from .errors import (
        AuthenticationError as AuthenticationError,
    )
    from .errors import (
        BadRequestError as BadRequestError,
    )
    from .errors import (
        ConfigurationError as ConfigurationError,
    )
    from .errors import (
        ContentPolicyError as ContentPolicyError,
    )
    from .errors import (
        ContextWindowExceededError as ContextWindowExceededError,
    )
    from .errors import (
        ErrorKind as ErrorKind,
    )
    from .errors import (
        InvalidRequestError as InvalidRequestError,
    )
    from .errors import (
        MalformedResponseError as MalformedResponseError,
    )
    from .errors import (
        MeshClosedError as MeshClosedError,
    )
    from .errors import (
        ModelMeshError as ModelMeshError,
    )
    from .errors import (
        NoActiveModelError as NoActiveModelError,
    )
    from .errors import (
        NoAvailableModelError as NoAvailableModelError,
    )
    from .errors import (
        NoCapableModelError as NoCapableModelError,
    )
    from .errors import (
        ProviderConnectionError as ProviderConnectionError,
    )
    from .errors import (
        ProviderError as ProviderError,
    )
    from .errors import (
        ProviderTimeoutError as ProviderTimeoutError,
    )
    from .errors import (
        QuotaExhaustedError as QuotaExhaustedError,
    )
    from .errors import (
        RateLimitError as RateLimitError,
    )
    from .errors import (
        RoutingError as RoutingError,
    )
    from .errors import (
        ServerError as ServerError,
    )
    from .errors import (
        SessionModelUnavailableError as SessionModelUnavailableError,
    )
    from .errors import (
        StateStoreError as StateStoreError,
    )
    from .errors import (
        StreamInterruptedError as StreamInterruptedError,
    )
    from .errors import (
        UnknownCapabilityError as UnknownCapabilityError,
    )
    from .errors import (
        UnknownModelError as UnknownModelError,
    )
    from .errors import (
        UnknownPoolError as UnknownPoolError,
    )
    from .evaluators import (
        DeactivationEvaluator as DeactivationEvaluator,
    )
    from .evaluators import (
        DeactivationPolicy as DeactivationPolicy,
    )
    from .evaluators import (
        DeactivationReason as DeactivationReason,
    )
    from .evaluators import (
        MaintenanceWindow as MaintenanceWindow,
    )
    from .evaluators import (
        RecoveryEvaluator as RecoveryEvaluator,
    )
    from .evaluators import (
        RecoveryPolicy as RecoveryPolicy,
    )
    from .events import (
        Event as Event,
    )
    from .events import (
        EventEmitter as EventEmitter,
    )
    from .events import (
        EventType as EventType,
    )
    from .mesh import (
        Mesh as Mesh,
    )
    from .pool import (
        CapabilityPool as CapabilityPool,
    )
    from .pool import (
        Model as Model,
    )
    from .pool import (
        PoolState as PoolState,
    )
    from .pool import (
        RotationPolicy as RotationPolicy,
    )
    from .shared import (
        shared_mesh as shared_mesh,
    )
    from .state import (
        ModelSnapshot as ModelSnapshot,
    )
    from .state import (
        ModelState as ModelState,
    )
    from .strategies import (
        BalanceMode as BalanceMode,
    )
    from .strategies import (
        SelectionResult as SelectionResult,
    )
    from .strategies import (
        SelectionStrategy as SelectionStrategy,
    )
    from .strategies import (
        StrategyOptions as StrategyOptions,
    )
    from .strategies import (
        register_strategy as register_strategy,
    )
    from .types import (
        Attempt as Attempt,
    )
    from .types import (
        CompletionChunk as CompletionChunk,
    )
    from .types import (
        CompletionRequest as CompletionRequest,
    )
    from .types import (
        CompletionResponse as CompletionResponse,
    )
    from .types import (
        ToolCall as ToolCall,
    )
    from .types import (
        Usage as Usage,
    )

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
