"""Adaptive deadlines: first-token and stall deadlines learned from each model's history,
between a floor and the configured value (the ceiling)."""

from __future__ import annotations

from mesh_core._deadlines import FIRST_TOKEN_FLOOR, MIN_SAMPLES, STALL_FLOOR, ResponseTimes
from mesh_core._failover import Flight
from mesh_core._types import CompletionRequest
from mesh_core.providers import Timeouts
from mesh_core.testing import faults
from tests.conftest import MODES, stream

CONFIGURED = Timeouts(connect=5, first_token=60, stall=60, total=300)


def history(first_token: float, gap: float, n: int = MIN_SAMPLES) -> ResponseTimes:
    times = ResponseTimes()
    for _ in range(n):
        times.first_token(first_token)
        times.finished(gap)
    return times


def test_without_enough_history_the_configured_values_hold():
    assert history(0.5, 0.1, n=MIN_SAMPLES - 1).deadlines(CONFIGURED) == CONFIGURED


def test_a_fast_model_is_declared_slow_at_the_floor():
    learned = history(0.5, 0.1).deadlines(CONFIGURED)
    assert learned.first_token == FIRST_TOKEN_FLOOR and learned.stall == STALL_FLOOR
    assert (learned.connect, learned.total) == (CONFIGURED.connect, CONFIGURED.total)


def test_a_thinking_model_keeps_what_its_history_needs():
    learned = history(40.0, 30.0).deadlines(CONFIGURED)
    assert 40.0 <= learned.first_token <= 60.0 and 30.0 <= learned.stall <= 60.0


def test_the_configured_value_stays_the_ceiling():
    learned = history(200.0, 200.0).deadlines(CONFIGURED)
    assert learned.first_token == 60 and learned.stall == 60


def test_variance_widens_the_deadline():
    steady, jittery = ResponseTimes(), ResponseTimes()
    for i in range(20):
        steady.first_token(6.0)
        jittery.first_token(2.0 if i % 2 else 10.0)
    assert jittery.deadlines(CONFIGURED).first_token > steady.deadlines(CONFIGURED).first_token


def learning_mesh(make_mesh, adaptive):
    slow_limits = {"first_token": "30s", "stall": "30s", "total": "60s", "adaptive": adaptive}
    return make_mesh(
        pool={"strategy": "priority-selection", "hedging": {"after": "off"}},
        models={"p1.m1": {"timeouts": slow_limits}},
    )


@MODES
def test_a_silent_model_is_cut_at_its_learned_deadline(make_mesh, servers, mode):
    mesh = learning_mesh(make_mesh, adaptive=True)
    for _ in range(MIN_SAMPLES):
        assert stream(mesh, mode, "chat", "hi")[-1].model == "p1.m1"
    servers[0].set("m1", faults.silent())
    chunks = stream(mesh, mode, "chat", "hi")
    assert chunks[-1].model == "p2.m2"
    first = chunks[-1].attempts[0]
    assert first.outcome == "timeout" and f"{FIRST_TOKEN_FLOOR:g}s" in first.error
    assert first.latency < 25  # the learned 5 s, not the configured 30 s (generous)


def test_adaptive_false_keeps_the_configured_deadline(make_mesh, servers):
    mesh = learning_mesh(make_mesh, adaptive=False)
    for _ in range(MIN_SAMPLES):
        stream(mesh, "sync", "chat", "hi")
    assert mesh._router.adaptive["p1.m1"] is False
    request = CompletionRequest(model="chat", messages=[{"role": "user", "content": "hi"}])
    flight = Flight(mesh._router, mesh.pool("chat"), request, stream=True)
    assert flight._timeouts(mesh.model("p1.m1")).first_token == 30.0
