"""Wall-clock steps (NTP, an administrator) and absurd Retry-After values.

A cooldown is a duration: it is measured on the monotonic clock, so setting the
system clock back an hour must not stretch a 60 s cooldown to 61 minutes, nor
setting it forward end one early. A calendar boundary (next quota period, end of
a maintenance window) is an instant on the wall clock and follows it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from mesh_core import Mesh
from mesh_core._clock import ManualClock
from mesh_core._errors import AllProvidersExhaustedError, NoAvailableModelError
from mesh_core.testing import faults
from tests.conftest import MODES, complete, config_for
from tests.helpers import req
from tests.test_pool import BASE, T0, mesh_parts

HOUR = 3600.0


def chat_pool(**settings):
    return dict(BASE, pools={"chat": {"capability": "chat-completion", **settings}})


# --- the manual clock ------------------------------------------------------------------


def test_manual_clock_moves_wall_and_monotonic_time():
    clock = ManualClock(1000.0, monotonic=5.0)
    assert clock.advance(10) == 1010.0 and clock.monotonic() == 15.0  # time passes
    assert clock.jump(-HOUR) == 1010.0 - HOUR and clock.monotonic() == 15.0  # a clock step
    clock.set(1010.0)  # forward: time passing
    assert clock.monotonic() == 15.0 + HOUR
    clock.set(0.0)  # backward: only a step, monotonic time never goes back
    assert clock.time() == 0.0 and clock.monotonic() == 15.0 + HOUR
    with pytest.raises(ValueError):
        clock.advance(-1)


# --- cooldowns ---------------------------------------------------------------------------


def test_clock_set_back_does_not_stretch_a_cooldown():
    pools, models, clock, _ = mesh_parts(chat_pool(recovery={"cooldown": "60s"}))
    pool, a = pools["chat"], models["a.chat"]
    pool.deactivate(a, "error_threshold")
    assert a.state.recover_at == T0 + 60  # persisted and shared as a Unix time
    clock.jump(-HOUR)
    assert a.snapshot(clock.time()).cooldown_remaining == 60
    clock.advance(59)
    assert pool.select(req()).id == "b.chat" and a.state.status == "standby"
    clock.advance(1)  # 60 s have passed: not 61 minutes
    pool.refresh()
    assert a.state.status == "active" and a.state.probation


def test_clock_set_forward_does_not_end_a_cooldown_early():
    pools, models, clock, _ = mesh_parts(chat_pool(recovery={"cooldown": "60s"}))
    pool, a = pools["chat"], models["a.chat"]
    pool.deactivate(a, "error_threshold")
    clock.jump(HOUR)
    assert a not in pool.get_active_models()
    assert a.snapshot(clock.time()).cooldown_remaining == 60
    clock.advance(60)
    assert a in pool.get_active_models()


def test_no_available_model_counts_down_in_monotonic_time():
    pools, models, clock, _ = mesh_parts(chat_pool(recovery={"cooldown": "30s"}))
    pool = pools["chat"]
    pool.deactivate(models["a.chat"], "error_threshold")
    pool.deactivate(models["b.chat"], "manual")
    clock.advance(10)
    clock.jump(-HOUR)
    with pytest.raises(NoAvailableModelError) as ei:
        pool.select(req())
    assert "recovers in 20.0s" in str(ei.value)
    # a wall time to wait for, in terms of the wall clock as it is now
    assert ei.value.recovers_at == clock.time() + 20


def test_a_failed_trial_after_a_clock_step_doubles_from_the_new_time():
    pools, models, clock, _ = mesh_parts(chat_pool(recovery={"cooldown": "60s"}))
    pool, a = pools["chat"], models["a.chat"]
    pool.deactivate(a, "error_threshold")
    clock.jump(-HOUR)
    clock.advance(60)
    pool.refresh()
    assert a.state.probation
    pool.deactivate(a, "error_threshold")  # the trial failed
    assert a.state.recover_at == clock.time() + 120
    clock.advance(119)
    assert a not in pool.get_active_models()
    clock.advance(1)
    assert a in pool.get_active_models()


# --- calendar recoveries -------------------------------------------------------------------


def test_a_quota_period_recovery_follows_the_wall_clock():
    pools, models, clock, _ = mesh_parts(
        chat_pool(deactivation={"request_limit": 1, "quota_window": "daily"})
    )
    pool, a = pools["chat"], models["a.chat"]
    pool.deactivate(a, "request_limit")
    midnight = datetime(2026, 1, 8, tzinfo=UTC).timestamp()
    assert a.state.recover_at == midnight
    clock.jump(-HOUR)  # 11:00 again
    clock.advance(midnight - T0)  # 12 h later, but the wall clock says 23:00
    assert a not in pool.get_active_models()
    clock.advance(HOUR - 1)
    assert a not in pool.get_active_models()
    clock.advance(1)  # midnight on the wall clock: the next quota period
    assert a in pool.get_active_models() and not a.state.probation


def test_a_clock_set_forward_past_the_period_boundary_recovers_at_once():
    pools, models, clock, _ = mesh_parts(
        chat_pool(deactivation={"request_limit": 1, "quota_window": "daily"})
    )
    pool, a = pools["chat"], models["a.chat"]
    pool.deactivate(a, "request_limit")
    assert a not in pool.get_active_models()
    clock.jump(12 * HOUR)  # the calendar says it is the next day
    assert a in pool.get_active_models()


def test_a_clock_set_back_into_a_maintenance_window_takes_models_out():
    # Wednesdays 13:00-13:59; T0 is a Wednesday, 12:00
    pools, models, clock, _ = mesh_parts(
        chat_pool(deactivation={"maintenance_window": "* 13 * * 3"})
    )
    pool = pools["chat"]
    clock.advance(2 * HOUR)  # 14:00: after the window
    assert pool.select(req()).id == "a.chat"
    clock.jump(-HOUR / 2)  # 13:30: inside it again
    with pytest.raises(NoAvailableModelError):
        pool.select(req())
    assert models["a.chat"].state.deactivation_reason == "maintenance_window"
    clock.advance(HOUR / 2)  # 14:00 on the wall clock: the window is over
    assert pool.select(req()).id == "a.chat"


# --- Retry-After, end to end -----------------------------------------------------------------


@MODES
@pytest.mark.parametrize("retry_after", [1e308, float("inf")])
def test_a_huge_retry_after_is_capped_by_max_cooldown(make_mesh, servers, mode, retry_after):
    clock = ManualClock()
    mesh = make_mesh(
        pool={
            "strategy": "priority-selection",
            "deactivation": {"retry_limit": 1},
            "recovery": {"cooldown": "30s", "max_cooldown": "10m"},
        },
        clock=clock,
    )
    servers[0].enqueue("m1", faults.rate_limited(retry_after=retry_after))
    assert complete(mesh, mode, "chat", "hi").model == "p2.m2"
    st = mesh.model("p1.m1").state
    assert st.status == "standby" and st.deactivation_reason == "error_threshold"
    assert st.recover_at == clock.time() + 600  # not "never"
    assert mesh.snapshot("p1.m1").cooldown_remaining == 600
    clock.advance(600)
    assert complete(mesh, mode, "chat", "trial").model == "p1.m1"


def test_a_retry_after_of_1e308_on_the_system_clock_is_capped(make_mesh, servers):
    mesh = make_mesh(pool={"deactivation": {"retry_limit": 1}, "retry": {"max_attempts": 1}})
    servers[0].set("m1", faults.rate_limited(retry_after=1e308))
    with pytest.raises(AllProvidersExhaustedError):
        complete(mesh, "sync", "chat", "hi", model="p1.m1")
    st = mesh.model("p1.m1").state
    now = mesh.clock.time()
    assert st.status == "standby" and now < st.recover_at <= now + 3600  # default max_cooldown


# --- state that carries only the wall-clock time -------------------------------------------------


def test_a_restored_cooldown_is_anchored_to_the_new_process_monotonic_clock(servers, tmp_path):
    cfg = config_for(servers, pool={"strategy": "priority-selection"})
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp_path / "state.db")}
    mesh = Mesh.from_config(cfg, clock=ManualClock(T0))
    mesh.deactivate("p1.m1", "error_threshold")
    mesh.close()

    clock = ManualClock(T0 + 5, monotonic=123.0)  # a restart: another monotonic origin
    again = Mesh.from_config(cfg, clock=clock)
    try:
        clock.jump(-HOUR)
        assert again.snapshot("p1.m1").cooldown_remaining == 55
        clock.advance(54)
        assert again.complete("chat", "hi").model == "p2.m2"
        clock.advance(1)
        assert again.complete("chat", "hi").model == "p1.m1"
    finally:
        again.close()


def test_a_cooldown_from_another_process_is_anchored_when_applied(servers, tmp_path):
    cfg = config_for(servers, pool={"strategy": "priority-selection"})
    cfg["storage"] = {
        "backend": "sqlite",
        "path": str(tmp_path / "state.db"),
        "refresh_interval": "50ms",
    }
    clock_b = ManualClock(T0, monotonic=777.0)
    a = Mesh.from_config(cfg, clock=ManualClock(T0))
    b = Mesh.from_config(cfg, clock=clock_b)
    try:
        a.deactivate("p1.m1", "error_threshold")
        time.sleep(0.1)
        assert b.complete("chat", "hi").model == "p2.m2"  # b picked up a's status
        clock_b.jump(-HOUR)
        assert b.snapshot("p1.m1").cooldown_remaining == 60
        clock_b.advance(60)
        assert b.complete("chat", "hi").model == "p1.m1"
    finally:
        a.close()
        b.close()


def test_a_clock_with_only_time_still_works(servers):
    """A clock written before ``monotonic()`` existed measures durations on its wall time."""

    class WallClock:
        def __init__(self) -> None:
            self.now = T0

        def time(self) -> float:
            return self.now

    clock = WallClock()
    cfg = config_for(
        servers, pool={"deactivation": {"retry_limit": 1}, "retry": {"max_attempts": 1}}
    )
    mesh = Mesh.from_config(cfg, clock=clock)
    servers[0].enqueue("m1", faults.server_error())
    assert mesh.complete("chat", "hi").model == "p2.m2"
    assert mesh.snapshot("p1.m1").status == "standby"
    clock.now += 61
    mesh.pool("chat").refresh()
    assert mesh.snapshot("p1.m1").status == "active"
    mesh.close()
