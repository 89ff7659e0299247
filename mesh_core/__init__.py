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
    "Mesh": "_mesh",
    "shared_mesh": "_shared",
    # configuration
    "MeshConfig": "_config",
    "load_config": "_config",
    # state and decisions
    "ModelState": "_state",
    "ModelSnapshot": "_state",
    "CapabilityTree": "_capabilities",
    "CapabilityPool": "_pool",
    "Model": "_pool",
    "PoolState": "_pool",
    "RotationPolicy": "_pool",
    "DeactivationEvaluator": "_evaluators",
    "DeactivationPolicy": "_evaluators",
    "DeactivationReason": "_evaluators",
    "MaintenanceWindow": "_evaluators",
    "RecoveryEvaluator": "_evaluators",
    "RecoveryPolicy": "_evaluators",
    "SelectionStrategy": "strategies",
    "SelectionResult": "strategies",
    "StrategyOptions": "strategies",
    "StrategyContext": "strategies",
    "BalanceMode": "strategies",
    "register_strategy": "strategies",
    # providers
    "register_provider_type": "providers",
    # state stores
    "StateStore": "stores",
    "register_store_backend": "stores",
    # what follows a failed attempt
    "decide": "_policy",
    "Decision": "_policy",
    "Failure": "_policy",
    "FailOver": "_policy",
    "Raise": "_policy",
    "Retry": "_policy",
    "RetryPolicy": "_policy",
    # types
    "CompletionRequest": "_types",
    "CompletionResponse": "_types",
    "CompletionChunk": "_types",
    "Usage": "_types",
    "ToolCall": "_types",
    "Attempt": "_types",
    "EmbeddingRequest": "_types",
    "EmbeddingResponse": "_types",
    # events and time
    "Event": "_events",
    "EventEmitter": "_events",
    "EventType": "_events",
    "ManualClock": "_clock",
    "SystemClock": "_clock",
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
_EXPORTS.update(dict.fromkeys(_ERRORS, "_errors"))

if TYPE_CHECKING:  # what type checkers see; at run time names load on first use
    from ._capabilities import (
        CapabilityTree as CapabilityTree,
    )
    from ._clock import (
        ManualClock as ManualClock,
        SystemClock as SystemClock,
    )
    from ._config import (
        MeshConfig as MeshConfig,
        load_config as load_config,
    )
    from ._errors import (
        AllProvidersExhaustedError as AllProvidersExhaustedError,
        AuthenticationError as AuthenticationError,
        BadRequestError as BadRequestError,
        ConfigurationError as ConfigurationError,
        ContentPolicyError as ContentPolicyError,
        ContextWindowExceededError as ContextWindowExceededError,
        ErrorKind as ErrorKind,
        InvalidRequestError as InvalidRequestError,
        MalformedResponseError as MalformedResponseError,
        MeshClosedError as MeshClosedError,
        ModelMeshError as ModelMeshError,
        NoActiveModelError as NoActiveModelError,
        NoAvailableModelError as NoAvailableModelError,
        NoCapableModelError as NoCapableModelError,
        ProviderConnectionError as ProviderConnectionError,
        ProviderError as ProviderError,
        ProviderTimeoutError as ProviderTimeoutError,
        QuotaExhaustedError as QuotaExhaustedError,
        RateLimitError as RateLimitError,
        RoutingError as RoutingError,
        ServerError as ServerError,
        SessionModelUnavailableError as SessionModelUnavailableError,
        StateStoreError as StateStoreError,
        StreamInterruptedError as StreamInterruptedError,
        UnknownCapabilityError as UnknownCapabilityError,
        UnknownModelError as UnknownModelError,
        UnknownPoolError as UnknownPoolError,
    )
    from ._evaluators import (
        DeactivationEvaluator as DeactivationEvaluator,
        DeactivationPolicy as DeactivationPolicy,
        DeactivationReason as DeactivationReason,
        MaintenanceWindow as MaintenanceWindow,
        RecoveryEvaluator as RecoveryEvaluator,
        RecoveryPolicy as RecoveryPolicy,
    )
    from ._events import (
        Event as Event,
        EventEmitter as EventEmitter,
        EventType as EventType,
    )
    from ._mesh import (
        Mesh as Mesh,
    )
    from ._policy import (
        Decision as Decision,
        FailOver as FailOver,
        Failure as Failure,
        Raise as Raise,
        Retry as Retry,
        RetryPolicy as RetryPolicy,
        decide as decide,
    )
    from ._pool import (
        CapabilityPool as CapabilityPool,
        Model as Model,
        PoolState as PoolState,
        RotationPolicy as RotationPolicy,
    )
    from ._shared import (
        shared_mesh as shared_mesh,
    )
    from ._state import (
        ModelSnapshot as ModelSnapshot,
        ModelState as ModelState,
    )
    from ._types import (
        Attempt as Attempt,
        CompletionChunk as CompletionChunk,
        CompletionRequest as CompletionRequest,
        CompletionResponse as CompletionResponse,
        EmbeddingRequest as EmbeddingRequest,
        EmbeddingResponse as EmbeddingResponse,
        ToolCall as ToolCall,
        Usage as Usage,
    )
    from .providers import (
        register_provider_type as register_provider_type,
    )
    from .stores import (
        StateStore as StateStore,
        register_store_backend as register_store_backend,
    )
    from .strategies import (
        BalanceMode as BalanceMode,
        SelectionResult as SelectionResult,
        SelectionStrategy as SelectionStrategy,
        StrategyContext as StrategyContext,
        StrategyOptions as StrategyOptions,
        register_strategy as register_strategy,
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
