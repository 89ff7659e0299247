import threading
from datetime import UTC, datetime

import pytest

from mesh_core._assembly import build_model, build_pools
from mesh_core._capabilities import CapabilityTree
from mesh_core._clock import ManualClock
from mesh_core._config import load_config
from mesh_core._errors import NoAvailableModelError, ServerError
from mesh_core._events import EventEmitter, EventType
from mesh_core._pool import CapabilityPool, Model, PoolState, RotationPolicy
from tests.helpers import req

T0 = datetime(2026, 1, 7, 12, tzinfo=UTC).timestamp()  # a Wednesday


def mesh_parts(cfg: dict, clock=None):
    config = load_config(cfg)
    clock = clock or ManualClock(T0)
    tree = CapabilityTree(config.capabilities)
    models = {mid: build_model(mid, m, tree) for mid, m in config.models.items()}
    emitter = EventEmitter(clock.time)
    events = []
    emitter.on(None, events.append)
    pools = build_pools(config, models, tree, emitter, clock, threading.RLock())
    return pools, models, clock, events


BASE = {
    "providers": {"a": {"base_url": "http://127.0.0.1:1"}, "b": {"base_url": "http://127.0.0.1:2"}},
    "models": {
        "a.chat": {"provider": "a", "capabilities": ["chat-completion"]},
        "b.chat": {"provider": "b", "capabilities": ["chat-completion"]},
        "b.code": {"provider": "b", "capabilities": ["code-generation"]},
        "a.embed": {
            "provider": "a",
            "capabilities": ["text-embeddings"],
            "embedding_space": "a/embed@8",  # required of an embedding model
        },
    },
}


def test_membership_by_capability_ancestors_and_filters():
    cfg = dict(
        BASE,
        pools={
            "chat": {"capability": "chat-completion"},
            "text": {"capability": "generation.text-generation"},
            "gen": {"capability": "generation", "excluded_providers": ["a"]},
            "only_a": {"capability": "generation", "allowed_providers": ["a"]},
            "explicit": {"models": ["a.embed", "b.code"]},
            "hybrid": {"capability": "code-generation", "models": ["a.chat"]},
            "embeddings": {},  # the pool's own name is a capability node
        },
    )
    pools, *_ = mesh_parts(cfg)
    ids = {k: [m.id for m in p.models] for k, p in pools.items()}
    assert ids["chat"] == ["a.chat", "b.chat"]
    assert ids["text"] == ["a.chat", "b.chat", "b.code"]
    assert ids["gen"] == ["b.chat", "b.code"]
    assert ids["only_a"] == ["a.chat"]
    assert ids["explicit"] == ["a.embed", "b.code"]
    assert ids["hybrid"] == ["a.chat", "b.code"]
    assert ids["embeddings"] == ["a.embed"]
    assert pools["text"].hierarchy_node == "generation.text-generation"


def test_select_deactivate_recover_and_events():
    pools, models, _, events = mesh_parts(
        dict(BASE, pools={"chat": {"capability": "chat-completion"}})
    )
    pool = pools["chat"]
    a, b = models["a.chat"], models["b.chat"]
    assert pool.select(req()) is a
    pool.deactivate(a, "manual")
    assert pool.get_active_models() == [b] and pool.get_standby_models() == [a]
    assert pool.select(req()) is b
    pool.recover(a)
    assert pool.get_active_models() == [a, b]
    st = pool.get_state()
    assert st == PoolState("chat", "generation.text-generation.chat-completion", 2, 0, 0, 2)
    kinds = [e.event_type for e in events if e.pool_id == "chat"]
    assert kinds.count(EventType.MODEL_ADDED) == 2
    assert EventType.MODEL_DEACTIVATED in kinds and EventType.MODEL_REACTIVATED in kinds
    pool.remove_model(b)
    assert pool.get_active_models() == [a]
    assert events[-1].event_type is EventType.MODEL_REMOVED


def test_no_available_model_says_when_the_earliest_recovers():
    pools, models, clock, _ = mesh_parts(
        dict(
            BASE, pools={"chat": {"capability": "chat-completion", "recovery": {"cooldown": "30s"}}}
        )
    )
    pool = pools["chat"]
    pool.deactivate(models["a.chat"], "error_threshold")
    clock.advance(10)
    pool.deactivate(models["b.chat"], "manual")
    with pytest.raises(NoAvailableModelError) as ei:
        pool.select(req())
    assert ei.value.pool_name == "chat"
    assert ei.value.recovers_at == T0 + 30
    assert "20.0s" in str(ei.value)


def test_standby_shared_across_pools_and_recovery_on_use_with_trial():
    cfg = dict(
        BASE,
        pools={
            "chat": {"capability": "chat-completion", "recovery": {"cooldown": "60s"}},
            "text": {"capability": "generation.text-generation"},
        },
    )
    pools, models, clock, events = mesh_parts(cfg)
    a = models["a.chat"]
    pools["chat"].deactivate(a, "error_threshold")
    assert a not in pools["text"].get_active_models()  # the state is shared
    clock.advance(59)
    assert pools["chat"].select(req()).id == "b.chat"
    clock.advance(1)
    pools["chat"].refresh()
    assert a.state.status == "active" and a.state.probation  # back, on trial
    assert events[-1].metadata["trial"] is True
    # a failed trial sends it back with a doubled cooldown
    a.state.record_failure(ServerError("x", status_code=503), now=clock.time())
    pools["chat"].deactivate(a, "error_threshold")
    assert a.state.recover_at == clock.time() + 120


def test_only_one_trial_request_in_flight():
    pools, models, clock, _ = mesh_parts(
        dict(
            BASE,
            pools={"chat": {"capability": "chat-completion", "strategy": "priority-selection"}},
        )
    )
    pool, a = pools["chat"], models["a.chat"]
    pool.deactivate(a, "error_threshold")
    clock.advance(61)
    assert pool.select(req()) is a and a.state.probation
    a.in_flight = 1  # the trial is running
    assert pool.select(req()).id == "b.chat"


def test_maintenance_window_takes_models_out_and_brings_them_back():
    # Wednesdays 13:00-13:59
    cfg = dict(
        BASE,
        pools={
            "chat": {
                "capability": "chat-completion",
                "deactivation": {"maintenance_window": "* 13 * * 3"},
            }
        },
    )
    pools, models, clock, _ = mesh_parts(cfg)
    pool = pools["chat"]
    assert pool.select(req()).id == "a.chat"
    clock.advance(3600)  # 13:00
    with pytest.raises(NoAvailableModelError) as ei:
        pool.select(req())
    assert ei.value.recovers_at == T0 + 7200
    assert models["a.chat"].state.deactivation_reason == "maintenance_window"
    clock.advance(3600)  # 14:00
    assert pool.select(req()).id == "a.chat"
    assert not models["a.chat"].state.probation


def test_request_limit_recovers_at_the_next_quota_period():
    cfg = dict(
        BASE,
        pools={
            "chat": {
                "capability": "chat-completion",
                "deactivation": {"request_limit": 2, "quota_window": "daily"},
            }
        },
    )
    pools, models, clock, _ = mesh_parts(cfg)
    pool, a = pools["chat"], models["a.chat"]
    pol = pool.rotation_policy.deactivation
    pol.policy.roll_periods(a.state, clock.time())
    a.state.record_success(0.1, 1, 0.0, now=clock.time())
    a.state.record_success(0.1, 1, 0.0, now=clock.time())
    reason = pol.get_reason(a.snapshot(clock.time()))
    assert reason.value == "request_limit"
    pool.deactivate(a, reason)
    midnight = datetime(2026, 1, 8, tzinfo=UTC).timestamp()
    assert a.state.recover_at == midnight
    clock.set(midnight)
    assert pool.select(req()) is a and a.state.quota_used == 0


def test_pool_without_config_is_usable_standalone():
    pool = CapabilityPool("p", "generation", RotationPolicy(), EventEmitter())
    m = Model(id="x.m", provider_id="x", name="m")
    pool.add_model(m)
    assert pool.select(req()) is m
