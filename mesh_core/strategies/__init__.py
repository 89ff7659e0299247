"""Selection strategies: the eight shipped ones and a registry for your own."""

from __future__ import annotations

from ._base import BalanceMode, SelectionResult, SelectionStrategy, StrategyOptions, priority_score
from ._cost import CostFirstStrategy
from ._latency import LatencyFirstStrategy
from ._load_balanced import LoadBalancedStrategy
from ._priority import PrioritySelectionStrategy, StickUntilFailureStrategy
from ._rate_limit import RateLimitAwareStrategy
from ._registry import create_strategy, known_strategies, register_strategy, resolve_strategy_id
from ._round_robin import RoundRobinStrategy
from ._session import SessionStickinessStrategy

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
    "SHIPPED_STRATEGIES",
    "BalanceMode",
    "CostFirstStrategy",
    "LatencyFirstStrategy",
    "LoadBalancedStrategy",
    "PrioritySelectionStrategy",
    "RateLimitAwareStrategy",
    "RoundRobinStrategy",
    "SelectionResult",
    "SelectionStrategy",
    "SessionStickinessStrategy",
    "StickUntilFailureStrategy",
    "StrategyOptions",
    "create_strategy",
    "known_strategies",
    "priority_score",
    "register_strategy",
    "resolve_strategy_id",
]
