"""Turning a validated configuration into models, policies and pools (no I/O)."""

from __future__ import annotations

import threading

from ._capabilities import CapabilityTree
from ._clock import Clock
from ._config import MeshConfig, ModelConfig, PoolConfig
from ._evaluators import (
    DeactivationEvaluator,
    DeactivationPolicy,
    RecoveryEvaluator,
    RecoveryPolicy,
)
from ._events import EventEmitter
from ._pool import CapabilityPool, Model, RotationPolicy
from ._state import ModelState
from ._strategy_config import strategy_context, strategy_options
from .strategies import strategy_class

__all__ = ["build_model", "build_pools", "capability_tree", "pool_members"]


def capability_tree(config: MeshConfig) -> CapabilityTree:
    return CapabilityTree(config.capabilities)


def build_model(model_id: str, cfg: ModelConfig, tree: CapabilityTree) -> Model:
    features = frozenset(k for k, v in cfg.features.model_dump().items() if v)
    pricing = cfg.pricing
    return Model(
        id=model_id,
        provider_id=cfg.provider,
        name=cfg.name or model_id.split(".", 1)[1],
        capabilities=tuple(tree.resolve(c) for c in cfg.capabilities),
        features=features,
        context_window=cfg.context_window,
        max_output_tokens=cfg.max_output_tokens,
        input_price=pricing.input_per_1k if pricing else None,
        output_price=pricing.output_per_1k if pricing else None,
        request_price=pricing.per_request if pricing else 0.0,
        state=ModelState(),
    )


def pool_members(
    pool_id: str, pool: PoolConfig, config: MeshConfig, tree: CapabilityTree
) -> list[str]:
    """The pool's models in pool order: the explicit list first, then capability matches.

    A model joins by capability when one of its capabilities is the pool's node or
    lies below it; ``allowed_providers`` / ``excluded_providers`` narrow those
    matches (an explicitly listed model is always a member).
    """
    members = list(dict.fromkeys(pool.models))
    node = pool.capability or (pool_id if not pool.models else None)
    if node is not None:
        node = tree.resolve(node)
        allowed = set(pool.allowed_providers) if pool.allowed_providers is not None else None
        excluded = set(pool.excluded_providers)
        for mid, mcfg in config.models.items():
            if mid in members or mcfg.provider in excluded:
                continue
            if allowed is not None and mcfg.provider not in allowed:
                continue
            if any(tree.covers(node, tree.resolve(c)) for c in mcfg.capabilities):
                members.append(mid)
    enabled = {pid for pid, p in config.providers.items() if p.enabled}
    return [m for m in members if config.models[m].provider in enabled]


def rotation_policy(pool_id: str, pool: PoolConfig, clock: Clock) -> RotationPolicy:
    """The pool's evaluators and strategy, each derived from its validated section."""
    deact = DeactivationPolicy.from_config(pool.deactivation)
    strategy = strategy_class(pool.strategy)(
        strategy_options(pool_id, pool), strategy_context(pool, clock)
    )
    return RotationPolicy(
        deactivation=DeactivationEvaluator(deact, clock),
        recovery=RecoveryEvaluator(
            RecoveryPolicy.from_config(pool.recovery),
            deact,
            clock,
        ),
        strategy=strategy,
    )


def build_pools(
    config: MeshConfig,
    models: dict[str, Model],
    tree: CapabilityTree,
    emitter: EventEmitter,
    clock: Clock,
    lock: threading.RLock,
) -> dict[str, CapabilityPool]:
    pools: dict[str, CapabilityPool] = {}
    for pid, pcfg in config.pools.items():
        node = pcfg.capability or (pid if not pcfg.models else "")
        pool = CapabilityPool(
            pid,
            tree.resolve(node) if node else "",
            rotation_policy(pid, pcfg, clock),
            emitter,
            clock=clock,
            lock=lock,
        )
        for mid in pool_members(pid, pcfg, config, tree):
            pool.add_model(models[mid])
        pools[pid] = pool
    return pools
