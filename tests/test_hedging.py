"""First-token hedging: a late first token sends the request to the next model too; the first
token wins, the other request is cancelled and recorded as slow, not failed."""

from __future__ import annotations

import asyncio

import pytest

from mesh_core import EventType
from mesh_core._deadlines import HEDGE_COLD, HEDGE_FLOOR, HedgePolicy, ResponseTimes
from mesh_core.testing import faults
from tests.conftest import MODES, stream

SLOW = {"timeouts": {"first_token": "10s", "stall": "10s", "total": "20s"}}
"""p1's limits: long enough that its slow first token is not a timeout, only late."""


def hedged_mesh(make_mesh, after="300ms", n=2):
    return make_mesh(
        n=n,
        pool={"strategy": "priority-selection", "hedging": {"after": after}},
        models={"p1.m1": SLOW},
    )


def record(mesh):
    seen = []
    mesh.on(EventType.REQUEST_HEDGED, seen.append)
    mesh.on(EventType.HEDGE_SETTLED, seen.append)
    return seen


@MODES
def test_a_late_first_token_is_raced_and_the_first_token_wins(make_mesh, servers, mode):
    mesh = hedged_mesh(make_mesh)
    seen = record(mesh)
    servers[0].set("m1", faults.slow_first_token(5))
    chunks = stream(mesh, mode, "chat", "hi")
    assert "".join(c.content for c in chunks) == "Hello from m2. You said: hi"
    last = chunks[-1]
    assert last.model == "p2.m2"
    assert [(a.model_id, a.outcome) for a in last.attempts] == [
        ("p1.m1", "slow"),
        ("p2.m2", "success"),
    ]
    slow = mesh.snapshot("p1.m1")
    assert slow.status == "active" and slow.failure_count == 0  # slow is not a failure
    assert mesh.model("p1.m1").in_flight == mesh.model("p2.m2").in_flight == 0
    assert [e.event_type for e in seen] == [EventType.REQUEST_HEDGED, EventType.HEDGE_SETTLED]
    assert seen[0].model_id == "p2.m2" and seen[0].metadata["slow"] == "p1.m1"
    assert seen[1].metadata["won"] is True


@MODES
def test_a_first_token_in_time_sends_no_hedge(make_mesh, servers, mode):
    mesh = hedged_mesh(make_mesh, after="5s")
    chunks = stream(mesh, mode, "chat", "hi")
    assert chunks[-1].model == "p1.m1"
    assert [a.outcome for a in chunks[-1].attempts] == ["success"]
    assert servers[1].count() == 0


@MODES
def test_hedging_off_waits_for_the_slow_model(make_mesh, servers, mode):
    mesh = hedged_mesh(make_mesh, after="off")
    servers[0].set("m1", faults.slow_first_token(0.5))
    chunks = stream(mesh, mode, "chat", "hi")
    assert chunks[-1].model == "p1.m1" and servers[1].count() == 0


@MODES
def test_the_slow_model_winning_cancels_the_hedge(make_mesh, servers, mode):
    mesh = hedged_mesh(make_mesh)
    servers[0].set("m1", faults.slow_first_token(0.6))
    servers[1].set("m2", faults.slow_first_token(8))
    chunks = stream(mesh, mode, "chat", "hi")
    assert chunks[-1].model == "p1.m1"
    assert [(a.model_id, a.outcome) for a in chunks[-1].attempts] == [
        ("p2.m2", "cancelled"),
        ("p1.m1", "success"),
    ]
    assert mesh.snapshot("p2.m2").failure_count == 0
    assert mesh.model("p1.m1").in_flight == mesh.model("p2.m2").in_flight == 0


@MODES
def test_a_hedge_that_fails_leaves_the_slow_model_to_answer(make_mesh, servers, mode):
    mesh = hedged_mesh(make_mesh)
    servers[0].set("m1", faults.slow_first_token(1.5))
    servers[1].set("m2", faults.server_error(500))
    chunks = stream(mesh, mode, "chat", "hi")
    assert chunks[-1].model == "p1.m1"
    outcomes = [(a.model_id, a.outcome) for a in chunks[-1].attempts]
    assert outcomes == [("p2.m2", "server_error"), ("p1.m1", "success")]
    assert mesh.snapshot("p2.m2").failure_count == 1


@MODES
def test_both_failing_fails_over_to_a_third_model(make_mesh, servers, mode):
    mesh = hedged_mesh(make_mesh, n=3)
    servers[0].set("m1", faults.silent())
    servers[1].set("m2", faults.server_error(503))
    chunks = stream(mesh, mode, "chat", "hi", timeout=2)
    assert chunks[-1].model == "p3.m3"
    outcomes = [(a.model_id, a.outcome) for a in chunks[-1].attempts]
    assert outcomes == [("p2.m2", "server_error"), ("p1.m1", "timeout"), ("p3.m3", "success")]
    assert all(mesh.model(m).in_flight == 0 for m in ("p1.m1", "p2.m2", "p3.m3"))


def test_a_caller_cancelling_a_race_releases_both_models(make_mesh, servers):
    mesh = hedged_mesh(make_mesh)
    servers[0].set("m1", faults.silent())
    servers[1].set("m2", faults.silent())

    async def consume():
        async for _ in mesh.astream("chat", "hi"):
            pass

    async def main():
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.8)  # past the hedge: both requests are out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for provider in mesh.providers.values():
            await provider.aclose()

    asyncio.run(main())
    assert servers[1].count() == 1  # the hedge was sent before the cancel
    assert mesh.model("p1.m1").in_flight == mesh.model("p2.m2").in_flight == 0


def test_non_streaming_calls_are_not_hedged(make_mesh, servers):
    mesh = hedged_mesh(make_mesh)
    servers[0].set("m1", faults.slow_first_token(0.8))
    assert mesh.complete("chat", "hi").model == "p1.m1"
    assert servers[1].count() == 0


# --- the threshold, as a pure function -------------------------------------------------


def times(*samples: float) -> ResponseTimes:
    t = ResponseTimes()
    for s in samples:
        t.first_token(s)
    return t


def test_auto_threshold_without_history_is_the_cold_value():
    assert HedgePolicy().threshold(None, []) == HEDGE_COLD


def test_auto_threshold_is_three_medians_never_below_the_floor():
    assert HedgePolicy().threshold(times(*[0.1] * 10), []) == HEDGE_FLOOR
    assert HedgePolicy().threshold(times(*[4.0] * 10), []) == pytest.approx(12.0)


def test_auto_threshold_ignores_a_slow_tenth():
    history = times(*([1.0] * 18 + [20.0, 20.0]))  # one in ten slow: the median holds
    assert HedgePolicy().threshold(history, []) == pytest.approx(3.0)


def test_auto_threshold_borrows_the_pools_history_for_a_new_model():
    pool = [times(*[2.0] * 10)]
    assert HedgePolicy().threshold(times(1.0), pool) == pytest.approx(6.0)


def test_a_fixed_threshold_is_used_as_given():
    assert HedgePolicy(after=0.25).threshold(times(*[9.0] * 20), []) == 0.25


def test_yaml_off_disables_hedging(make_mesh):
    mesh = make_mesh(pool={"hedging": {"after": False}})  # what YAML makes of a bare `off`
    assert mesh._router.hedge_after(mesh.pool("chat"), mesh.model("p1.m1")) is None
