"""Streams that are never iterated or dropped half-way release their model; recovery keeps
the caller's request intact and within its max_tokens."""

from __future__ import annotations

import asyncio
import gc
import time

from mesh_core.testing import faults
from tests.conftest import MODES, _close_loop_pools, stream

CONTINUE = {"strategy": "priority-selection", "stream_recovery": "continue"}


def in_flight(mesh) -> list[int]:
    return [m.in_flight for m in mesh.models.values()]


def test_streams_never_iterated_hold_nothing(make_mesh):
    mesh = make_mesh()
    dropped = [mesh.stream("chat", f"q{i}") for i in range(3)]
    assert in_flight(mesh) == [0, 0]  # nothing is chosen before the first next()
    del dropped
    gc.collect()
    assert in_flight(mesh) == [0, 0]
    started = time.monotonic()
    mesh.close(timeout=2)
    assert time.monotonic() - started < 1.5  # nothing to wait for


def test_a_stream_dropped_half_way_releases_its_model(make_mesh):
    mesh = make_mesh()
    with mesh.stream("chat", "one two three four") as chunks:
        first = next(chunks)
        assert first.content and in_flight(mesh) == [1, 0]
    assert in_flight(mesh) == [0, 0]
    half = mesh.stream("chat", "again")
    next(half)
    half.close()
    assert in_flight(mesh) == [0, 0]
    abandoned = mesh.stream("chat", "and again")
    next(abandoned)
    del abandoned
    gc.collect()
    assert in_flight(mesh) == [0, 0]


def test_async_streams_have_the_same_contract(make_mesh):
    mesh = make_mesh()

    async def main():
        never = [mesh.astream("chat", f"q{i}") for i in range(3)]
        assert in_flight(mesh) == [0, 0]
        del never
        async with mesh.astream("chat", "one two three") as chunks:
            first = await anext(chunks)
            assert first.content and in_flight(mesh) == [1, 0]
        assert in_flight(mesh) == [0, 0]
        whole = [c async for c in mesh.astream("chat", "hi")]
        assert whole[-1].finish_reason == "stop"
        await _close_loop_pools(mesh)

    asyncio.run(main())
    gc.collect()
    assert in_flight(mesh) == [0, 0]


@MODES
def test_a_restart_resends_the_callers_request_untouched(make_mesh, servers, mode):
    """The caller's own last message is an assistant prefill; the break is inside a tool call,
    so the answer starts over: the caller's messages go out exactly as they were given."""
    mesh = make_mesh(pool=CONTINUE)
    servers[0].set("m1", faults.tool_call("lookup", {"q": "x" * 40}, cut_after=1))
    messages = [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": "Sure, let me"},
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    chunks = stream(mesh, mode, "chat", [dict(m) for m in messages], tools=tools, restart=True)
    assert any(c.restarted for c in chunks)
    assert servers[1].requests[-1].body["messages"] == messages


@MODES
def test_a_continuation_respects_max_tokens_across_models(make_mesh, servers, mode):
    mesh = make_mesh(pool=CONTINUE)
    prompt = " ".join(f"w{i}" for i in range(30))
    servers[0].set("m1", faults.cut(after=4))
    chunks = stream(mesh, mode, "chat", prompt, max_tokens=10)
    pieces = [c for c in chunks if c.content]
    assert len(pieces) <= 10  # 4 from the first model, at most 6 from the second
    assert servers[1].requests[-1].body["max_tokens"] == 6
    assert chunks[-1].finish_reason == "length"
    assert any(c.continued_from == "p1.m1" for c in chunks)
