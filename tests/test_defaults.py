"""Every default is written once, in the configuration models; runtime objects read it.

A runtime object built with no arguments must equal the one derived from a default
configuration section: were a default written again (``error_rate_threshold = 0.5`` in
a dataclass) and the configuration's changed, these would fail. Strategy options have
no default in the pool's configuration at all: their only one is the strategy's.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mesh_core._config import (
    DeactivationConfig,
    PoolConfig,
    RecoveryConfig,
    StorageConfig,
    load_config,
)
from mesh_core._evaluators import DeactivationPolicy, MaintenanceWindow, RecoveryPolicy
from mesh_core._persistence import StateKeeper
from mesh_core._router import PoolSettings
from mesh_core._state import ModelState, StateLimits
from mesh_core._strategy_config import strategy_options
from mesh_core.stores._redis import RedisStore
from mesh_core.stores._sqlite import SqliteStore
from mesh_core.strategies import POOL_OPTION_KEYS, SHIPPED_STRATEGIES


def test_deactivation_policy_defaults_are_the_configuration_defaults():
    assert DeactivationPolicy() == DeactivationPolicy.from_config(DeactivationConfig())


def test_recovery_policy_defaults_are_the_configuration_defaults():
    assert RecoveryPolicy() == RecoveryPolicy.from_config(RecoveryConfig())


def test_state_limits_and_window_are_the_configuration_defaults():
    cfg = DeactivationConfig()
    assert StateLimits() == StateLimits.from_config(cfg) == DeactivationPolicy().limits
    assert ModelState().window_size == cfg.error_rate_window


def test_pool_settings_defaults_are_the_configuration_defaults():
    assert PoolSettings() == PoolSettings.from_config(PoolConfig())


@pytest.mark.parametrize(
    ("func", "names"),
    [
        (
            StateKeeper.__init__,
            ("sync_policy", "sync_interval", "refresh_interval", "on_corrupt", "on_unavailable"),
        ),
        (SqliteStore.__init__, ("timeout",)),
        (RedisStore.__init__, ("key_prefix", "timeout")),
    ],
)
def test_storage_keyword_defaults_are_the_configuration_defaults(func, names):
    params = inspect.signature(func).parameters
    storage = StorageConfig()
    for name in names:
        assert params[name].default == getattr(storage, name), name


def test_a_configured_value_reaches_every_runtime_object():
    """from_config copies every field: a field it forgot would keep its default."""
    deact = DeactivationConfig(
        retry_limit=7,
        error_rate_threshold=0.3,
        error_rate_window=11,
        error_rate_min_requests=2,
        error_codes=[502],
        request_limit=9,
        token_limit=99,
        budget_limit=1.5,
        quota_window="daily",
        budget_window="weekly",
        maintenance_window="0 2 * * 0",
    )
    policy = DeactivationPolicy.from_config(deact)
    for f in dataclasses.fields(DeactivationPolicy):
        assert getattr(policy, f.name) != getattr(DeactivationPolicy(), f.name), f.name
    assert isinstance(policy.maintenance_window, MaintenanceWindow)
    assert policy.maintenance_window.cron == "0 2 * * 0"
    rec = RecoveryPolicy.from_config(
        RecoveryConfig(cooldown=5, backoff_factor=3, max_cooldown=50, trial=False)
    )
    for f in dataclasses.fields(RecoveryPolicy):
        assert getattr(rec, f.name) != getattr(RecoveryPolicy(), f.name), f.name


def test_strategy_options_have_one_default_the_strategys():
    pool = PoolConfig()
    assert all(getattr(pool, key) is None for key in POOL_OPTION_KEYS)
    for cls in SHIPPED_STRATEGIES:
        cfg = load_config(
            {"pools": {"p": {"capability": "chat-completion", "strategy": cls.strategy_id}}}
        )
        assert strategy_options("p", cfg.pools["p"]) == cls.Options()
