"""Selection strategies: the eight shipped ones and a registry for your own."""

from __future__ import annotations

from ._base import (
    POOL_OPTION_KEYS,
    BalanceMode,
    SelectionResult,
    SelectionStrategy,
    StrategyContext,
    StrategyOptions,
    priority_score,
)
from ._cost import CostFirstOptions, CostFirstStrategy
from ._latency import LatencyFirstOptions, LatencyFirstStrategy
from ._load_balanced import LoadBalancedOptions, LoadBalancedStrategy
from ._priority import (
    PrioritySelectionOptions,
    PrioritySelectionStrategy,
    StickUntilFailureStrategy,
)
from ._rate_limit import RateLimitAwareOptions, RateLimitAwareStrategy, RateLimitOptions
from ._registry import (
    create_strategy,
    known_strategies,
    register_strategy,
    resolve_strategy_id,
    strategy_class,
)
from ._round_robin import RoundRobinStrategy
from ._session import SessionStickinessOptions, SessionStickinessStrategy

DEFAULT_STRATEGY = StickUntilFailureStrategy.strategy_id

SHIPPED_STRATEGIES: tuple[type[SelectionStrategy], ...] = (
    StickUntilFailureStrategy,
    PrioritySelectionStrategy,
    RoundRobinStrategy,
    CostFirstStrategy,
    LatencyFirstStrategy,
    SessionStickinessStrategy,
    RateLimitAwareStrategy,
    LoadBalancedStrategy,
)
for _cls in SHIPPED_STRATEGIES:
    register_strategy(_cls.strategy_id, _cls)

__all__ = [
    "DEFAULT_STRATEGY",
    "POOL_OPTION_KEYS",
    "SHIPPED_STRATEGIES",
    "BalanceMode",
    "CostFirstOptions",
    "CostFirstStrategy",
    "LatencyFirstOptions",
    "LatencyFirstStrategy",
    "LoadBalancedOptions",
    "LoadBalancedStrategy",
    "PrioritySelectionOptions",
    "PrioritySelectionStrategy",
    "RateLimitAwareOptions",
    "RateLimitAwareStrategy",
    "RateLimitOptions",
    "RoundRobinStrategy",
    "SelectionResult",
    "SelectionStrategy",
    "SessionStickinessOptions",
    "SessionStickinessStrategy",
    "StickUntilFailureStrategy",
    "StrategyContext",
    "StrategyOptions",
    "create_strategy",
    "known_strategies",
    "priority_score",
    "register_strategy",
    "resolve_strategy_id",
    "strategy_class",
]
