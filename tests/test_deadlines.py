"""Deadlines are wall-clock deadlines: a provider that is never quite silent (it trickles a byte
at a time, or sends ``100 Continue`` forever) cannot hold an attempt past ``timeouts.total``
(counted from when the request went out; or, for a stream, past ``first_token`` until its
first token), sync or async, plain or streamed, while the headers, the body or an error body
arrive. The attempt ends with a timeout, its connection is released, and the next model
answers.

Bounds are generous (a loaded 2-core CI machine): "within the deadline plus a few seconds",
where the fault would otherwise hold the call for a minute or more.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh_core import Mesh
from mesh_core.testing import faults
from tests.conftest import MODES, complete, config_for, stream

TIMEOUTS = {"connect": "1s", "first_token": "1s", "stall": "1s", "total": "2s"}
TOTAL, FIRST_TOKEN = 2.0, 1.0
SLACK = 3.0
"""Seconds allowed past a deadline (the fix ends within ~0.1 s; without it, 30 s or more)."""

TRICKLE = 0.15
"""Seconds per byte: a 150-byte header block takes over 20 s, and no read ever waits 1 s."""


@pytest.fixture
def mesh(servers):
    cfg = config_for(servers)
    for p in cfg["providers"].values():
        p["timeouts"] = dict(TIMEOUTS)
    m = Mesh.from_config(cfg)
    yield m
    m.close()


def _outcomes(r):
    return [(a.model_id, a.outcome) for a in r.attempts]


def _assert_timed_out_then_failed_over(r, elapsed: float, deadline: float) -> None:
    assert elapsed < deadline + SLACK, f"took {elapsed:.1f}s against a {deadline:g}s deadline"
    assert r.model == "p2.m2"
    assert _outcomes(r)[0] == ("p1.m1", "timeout")


def _idle(provider) -> bool:
    """No request holds a transport of the provider's sync pools, and no connection is busy."""
    shards = provider._sync
    if shards is None:
        return True
    busy = [c for t in shards.transports for c in t._pool.connections if not c.is_idle()]
    return shards.load == [0] * len(shards.load) and not [c for c in busy if not c.is_closed()]


PLAIN_FAULTS = {
    "trickled headers": faults.trickle(TRICKLE),
    "trickled body": faults.trickle(TRICKLE, body_only=True),
    "trickled 500 body": faults.error(500, "x" * 40, trickle=TRICKLE, trickle_body_only=True),
    "100 Continue forever": faults.interim_flood(),
}


@MODES
@pytest.mark.parametrize("fault", PLAIN_FAULTS.values(), ids=PLAIN_FAULTS.keys())
def test_total_bounds_a_plain_call(mesh, servers, mode, fault):
    servers[0].set("m1", fault)
    t0 = time.monotonic()
    r = complete(mesh, mode, "chat", "hi")
    _assert_timed_out_then_failed_over(r, time.monotonic() - t0, TOTAL)
    assert "total" in r.attempts[0].error
    assert servers[0].count("m1") == 1  # a timeout fails over, it is not retried in place
    assert mesh.snapshot("p1.m1").failure_count == 1  # and it counts against the model
    assert _idle(mesh.providers["p1"])


STREAM_FAULTS = {
    "trickled headers": faults.trickle(TRICKLE),
    "trickled 500 body": faults.error(500, "x" * 40, trickle=TRICKLE, trickle_body_only=True),
    "100 Continue forever": faults.interim_flood(),
}


@MODES
@pytest.mark.parametrize("fault", STREAM_FAULTS.values(), ids=STREAM_FAULTS.keys())
def test_first_token_bounds_a_stream_while_its_headers_trickle(mesh, servers, mode, fault):
    servers[0].set("m1", fault)
    t0 = time.monotonic()
    chunks = stream(mesh, mode, "chat", "hi")
    last = chunks[-1]
    _assert_timed_out_then_failed_over(last, time.monotonic() - t0, FIRST_TOKEN)
    assert "first token" in last.attempts[0].error
    assert "".join(c.content for c in chunks) == "Hello from m2. You said: hi"
    assert _idle(mesh.providers["p1"])


@MODES
def test_total_bounds_a_stream_whose_events_trickle(servers, mode):
    """Bytes that keep coming reset no deadline: with a generous first-token timeout, the
    stream still ends at ``total``."""
    cfg = config_for(servers)
    cfg["providers"]["p1"]["timeouts"] = {"first_token": "30s", "stall": "30s", "total": "2s"}
    servers[0].set("m1", faults.trickle(0.05, body_only=True))
    with Mesh.from_config(cfg) as mesh:
        t0 = time.monotonic()
        last = stream(mesh, mode, "chat", "hi")[-1]
        _assert_timed_out_then_failed_over(last, time.monotonic() - t0, TOTAL)
        assert "total" in last.attempts[0].error


def test_an_async_timeout_releases_the_lease_and_the_connection(servers):
    cfg = config_for(servers)
    cfg["providers"]["p1"]["timeouts"] = dict(TIMEOUTS)
    servers[0].set("m1", faults.trickle(TRICKLE))

    async def run():
        async with Mesh.from_config(cfg) as mesh:
            r = await mesh.acomplete("chat", "hi")
            shards = mesh.providers["p1"]._async_shards()
            pools = [t._pool for t in shards.transports]
            busy = [c for p in pools for c in p.connections if not (c.is_idle() or c.is_closed())]
            return r, shards.load, busy

    t0 = time.monotonic()
    r, load, busy = asyncio.run(run())
    _assert_timed_out_then_failed_over(r, time.monotonic() - t0, TOTAL)
    assert load == [0] * len(load) and busy == []


def test_the_happy_path_keeps_its_connection(mesh, servers):
    """Deadlines cost no connection: consecutive calls reuse one kept-alive socket."""
    for _ in range(3):
        assert mesh.complete("chat", "hi").model == "p1.m1"
        list(mesh.stream("chat", "hi"))
    ports = {r.client_port for r in servers[0].requests}
    assert len(ports) == 1
