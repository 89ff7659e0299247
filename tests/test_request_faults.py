"""Every fault the server can inject, over real HTTP, sync and async."""

from __future__ import annotations

import time

import pytest

from mesh_core import Mesh
from mesh_core._errors import (
    AllProvidersExhaustedError,
    BadRequestError,
    ContentPolicyError,
    ContextWindowExceededError,
    StreamInterruptedError,
)
from mesh_core.testing import faults
from tests.conftest import FAST_TOTAL, MODES, complete, config_for, stream


def outcomes(resp_or_chunk):
    return [(a.model_id, a.outcome) for a in resp_or_chunk.attempts]


@MODES
def test_healthy_answer(make_mesh, servers, mode):
    mesh = make_mesh()
    r = complete(mesh, mode, "chat", "hello")
    assert r.model == "p1.m1" and r.provider == "p1" and r.pool == "chat"
    assert r.content == "Hello from m1. You said: hello"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert r.finish_reason == "stop" and r.provider_model == "m1"
    assert outcomes(r) == [("p1.m1", "success")]


@MODES
@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_retry_once_then_fail_over(make_mesh, servers, mode, status):
    mesh = make_mesh()
    servers[0].set("m1", faults.server_error(status))
    r = complete(mesh, mode, "chat", "hi")
    assert r.model == "p2.m2"
    assert outcomes(r) == [
        ("p1.m1", "server_error"),
        ("p1.m1", "server_error"),
        ("p2.m2", "success"),
    ]
    assert r.attempts[0].status_code == status
    assert servers[0].count("m1") == 2
    counted = status in (500, 503)  # 502 is not in the default error_codes
    assert mesh.snapshot("p1.m1").failure_count == (2 if counted else 0)


@MODES
def test_rate_limit_with_short_retry_after_is_retried_in_place(make_mesh, servers, mode):
    mesh = make_mesh()
    servers[0].enqueue("m1", faults.rate_limited(retry_after=0.2))
    t0 = time.perf_counter()
    r = complete(mesh, mode, "chat", "hi")
    assert time.perf_counter() - t0 >= 0.2  # Retry-After honoured
    assert r.model == "p1.m1"
    assert outcomes(r) == [("p1.m1", "rate_limited"), ("p1.m1", "success")]


@MODES
def test_rate_limit_with_long_retry_after_fails_over_at_once(make_mesh, servers, mode):
    mesh = make_mesh(pool={"deactivation": {"retry_limit": 1}})
    servers[0].enqueue("m1", faults.rate_limited(retry_after=120))
    t0 = time.perf_counter()
    r = complete(mesh, mode, "chat", "hi")
    assert time.perf_counter() - t0 < 5
    assert r.model == "p2.m2" and servers[0].count("m1") == 1
    snap = mesh.snapshot("p1.m1")  # deactivated; the cooldown honours Retry-After
    assert snap.status == "standby" and snap.cooldown_remaining > 100


@MODES
def test_quota_exhausted_deactivates_at_once(make_mesh, servers, mode):
    mesh = make_mesh()
    servers[0].set("m1", faults.quota_exhausted())
    r = complete(mesh, mode, "chat", "hi")
    assert r.model == "p2.m2" and servers[0].count("m1") == 1
    snap = mesh.snapshot("p1.m1")
    assert snap.status == "standby" and snap.deactivation_reason == "quota_exhausted"
    complete(mesh, mode, "chat", "again")
    assert servers[0].count("m1") == 1  # no more traffic while in standby


@MODES
@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_takes_the_whole_provider_out(servers, mode, status):
    from mesh_core import Mesh
    from tests.conftest import config_for

    cfg = config_for(servers, models={"p1.m1b": {"provider": "p1", "name": "m1b"}})
    cfg["pools"]["chat"]["strategy"] = "priority-selection"
    mesh = Mesh.from_config(cfg)
    servers[0].set("m1", faults.unauthorized(status))
    r = complete(mesh, mode, "chat", "hi")
    assert r.model == "p2.m2"
    for mid in ("p1.m1", "p1.m1b"):
        snap = mesh.snapshot(mid)
        assert snap.status == "standby" and snap.deactivation_reason == "authentication_failed"
    assert servers[0].count("m1b") == 0
    mesh.close()


@MODES
def test_context_window_overflow_moves_to_a_larger_model(make_mesh, servers, mode):
    mesh = make_mesh(
        n=3,
        models={
            "p1.m1": {"context_window": 4096},
            "p2.m2": {"context_window": 4096},
            "p3.m3": {"context_window": 128000},
        },
    )
    servers[0].set("m1", faults.context_length_exceeded())
    r = complete(mesh, mode, "chat", "a long prompt")
    assert r.model == "p3.m3"
    assert servers[1].count("m2") == 0  # no larger than the one that overflowed: skipped
    assert mesh.snapshot("p1.m1").failure_count == 0  # not the model's fault


@MODES
def test_context_overflow_with_no_larger_model_raises_it(make_mesh, servers, mode):
    mesh = make_mesh(models={"p1.m1": {"context_window": 4096}, "p2.m2": {"context_window": 4096}})
    servers[0].set("m1", faults.context_length_exceeded())
    with pytest.raises(ContextWindowExceededError):
        complete(mesh, mode, "chat", "hi")


@MODES
@pytest.mark.parametrize(
    "behaviour, error",
    [
        (faults.content_policy(), ContentPolicyError),
        (faults.error(400, "bad param 'foo'"), BadRequestError),
    ],
)
def test_caller_errors_are_raised_not_routed_around(make_mesh, servers, mode, behaviour, error):
    mesh = make_mesh()
    servers[0].set("m1", behaviour)
    with pytest.raises(error) as ei:
        complete(mesh, mode, "chat", "hi")
    assert ei.value.status_code == 400
    assert servers[1].count() == 0 and servers[0].count("m1") == 1
    assert mesh.snapshot("p1.m1").failure_count == 0


@MODES
@pytest.mark.parametrize(
    "behaviour, kind", [(faults.reset(), "connection_error"), (faults.silent(), "timeout")]
)
def test_reset_and_silence_fail_over_without_retrying(make_mesh, servers, mode, behaviour, kind):
    mesh = make_mesh()
    servers[0].set("m1", behaviour)
    t0 = time.perf_counter()
    r = complete(mesh, mode, "chat", "hi")
    assert time.perf_counter() - t0 < FAST_TOTAL + 5  # bounded by the total timeout, not hung
    assert r.model == "p2.m2" and outcomes(r)[0] == ("p1.m1", kind)
    assert servers[0].count("m1") == 1


@MODES
def test_every_model_failing_raises_exhausted_with_attempts(make_mesh, servers, mode):
    mesh = make_mesh()
    servers[0].set("m1", faults.server_error(502))
    servers[1].set("m2", faults.reset())
    with pytest.raises(AllProvidersExhaustedError) as ei:
        complete(mesh, mode, "chat", "hi")
    err = ei.value
    assert err.pool_name == "chat" and [a.model_id for a in err.attempts] == [
        "p1.m1",
        "p1.m1",
        "p2.m2",
    ]
    assert "chat" in str(err) and err.last_error is not None


# --- streaming ----------------------------------------------------------------------


@MODES
def test_stream_healthy_last_chunk_carries_usage_and_attempts(make_mesh, servers, mode):
    mesh = make_mesh()
    chunks = stream(mesh, mode, "chat", "stream this")
    assert "".join(c.content for c in chunks) == "Hello from m1. You said: stream this"
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.usage.total_tokens > 0
    assert last.model == "p1.m1" and outcomes(last) == [("p1.m1", "success")]
    assert all(c.model == "p1.m1" for c in chunks)
    assert mesh.snapshot("p1.m1").quota_used == 1


@MODES
@pytest.mark.parametrize(
    "behaviour",
    [
        faults.server_error(503),
        faults.reset(),
        faults.silent(),
        faults.slow_first_token(5),
        faults.malformed_event(after=0),
        faults.cut(after=0),
    ],
    ids=["503", "reset", "silent", "slow-first-token", "malformed-first", "cut-before-token"],
)
def test_stream_fails_over_transparently_before_the_first_token(
    make_mesh, servers, mode, behaviour
):
    mesh = make_mesh()
    servers[0].set("m1", behaviour)
    t0 = time.perf_counter()
    chunks = stream(mesh, mode, "chat", "hi")
    assert time.perf_counter() - t0 < 3  # first-token timeout is 0.6 s, not the 5 s delay
    assert "".join(c.content for c in chunks) == "Hello from m2. You said: hi"
    assert chunks[-1].model == "p2.m2"


@MODES
@pytest.mark.parametrize(
    "behaviour",
    [faults.cut(after=3), faults.stall(after=3, seconds=5), faults.malformed_event(after=3)],
    ids=["cut", "stall", "malformed"],
)
def test_stream_broken_after_first_token_raises_with_partial_text(
    make_mesh, servers, mode, behaviour
):
    mesh = make_mesh(pool={"stream_recovery": "raise"})
    servers[0].set("m1", behaviour)
    t0 = time.perf_counter()
    with pytest.raises(StreamInterruptedError) as ei:
        stream(mesh, mode, "chat", "hi")
    assert time.perf_counter() - t0 < 3
    assert ei.value.partial_text == "Hello from m1."
    assert ei.value.model_id == "p1.m1"
    assert servers[1].count() == 0  # never silently continued elsewhere
    assert mesh.snapshot("p1.m1").failure_count == 1


@MODES
@pytest.mark.parametrize(
    "behaviour",
    [faults.cut(after=3), faults.stall(after=3, seconds=5), faults.malformed_event(after=3)],
    ids=["cut", "stall", "malformed"],
)
def test_stream_broken_after_first_token_continues_by_default(make_mesh, servers, mode, behaviour):
    """A cut, a stall and a malformed event are one kind of break: continued on the next
    model by prefill, and the chunks join into one answer."""
    mesh = make_mesh()
    servers[0].set("m1", behaviour)
    chunks = stream(mesh, mode, "chat", "hi")
    assert "".join(c.content for c in chunks) == "Hello from m1. You said: hi"
    assert [c.continued_from for c in chunks if c.continued_from] == ["p1.m1"]
    assert chunks[-1].model == "p2.m2" and chunks[-1].finish_reason == "stop"
    assert servers[1].requests[-1].body["messages"][-1]["role"] == "assistant"
    assert mesh.snapshot("p1.m1").failure_count == 1


@MODES
def test_stream_without_done_but_finished_is_complete(make_mesh, servers, mode):
    mesh = make_mesh()
    servers[0].set("m1", faults.no_done())
    chunks = stream(mesh, mode, "chat", "hi")
    assert chunks[-1].finish_reason == "stop" and chunks[-1].model == "p1.m1"


@MODES
def test_stream_ends_at_done_even_if_the_server_holds_the_body_open(servers, mode):
    """After [DONE] the rest of the body is read only for a short grace, then let go."""
    cfg = config_for(servers)
    cfg["providers"]["p1"]["timeouts"] = {"stall": "10s", "total": "20s"}  # no help from these
    mesh = Mesh.from_config(cfg)
    servers[0].set("m1", faults.ok(linger_after_done=15.0))
    started = time.perf_counter()
    chunks = stream(mesh, mode, "chat", "hi")
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert time.perf_counter() - started < 8.0  # not the 15 s the server lingers
    servers[0].set("m1", faults.ok())
    assert stream(mesh, mode, "chat", "again")[-1].finish_reason == "stop"
    assert mesh.providers["p1"]._sync_shards().load == [0, 0, 0, 0]
    mesh.close()


def test_stream_consumer_stopping_early_releases_the_model(make_mesh, servers):
    mesh = make_mesh()
    it = mesh.stream("chat", "hi")
    next(it)
    assert mesh.model("p1.m1").in_flight == 1
    it.close()
    assert mesh.model("p1.m1").in_flight == 0
