"""``Mesh.stream(..., restart=False)``: what the adapters use, so that the chunks yielded
always join into one coherent answer (continued by prefill, or never broken)."""

from __future__ import annotations

import pytest

from mesh_core._errors import StreamInterruptedError
from mesh_core.testing import faults
from tests.conftest import MODES, stream

CONTINUE = {"strategy": "priority-selection", "stream_recovery": "continue"}


@MODES
def test_a_restart_after_a_chunk_raises_instead(make_mesh, servers, mode):
    mesh = make_mesh(n=3, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    servers[1].set("m2", faults.ok(reject_prefill=True))
    with pytest.raises(StreamInterruptedError) as ei:
        stream(mesh, mode, "chat", "hi", restart=False)
    assert ei.value.partial_text == "Hello from m1."
    assert servers[2].count() == 0  # no model was asked to start over


@MODES
def test_a_continuation_by_prefill_still_goes_on(make_mesh, servers, mode):
    mesh = make_mesh(n=3, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    chunks = stream(mesh, mode, "chat", "hi", restart=False)
    assert "".join(c.content for c in chunks) == "Hello from m1. You said: hi"
    assert not any(c.restarted for c in chunks)


@MODES
def test_a_tool_call_cut_midway_raises_instead_of_starting_over(make_mesh, servers, mode):
    mesh = make_mesh(n=2, pool=CONTINUE)
    servers[0].set("m1", faults.tool_call("get_weather", {"city": "Paris"}, cut_after=1))
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    with pytest.raises(StreamInterruptedError):
        stream(mesh, mode, "chat", "weather?", tools=tools, restart=False)
    assert servers[1].count() == 0


@MODES
def test_partial_text_is_everything_received_across_continuations(make_mesh, servers, mode):
    mesh = make_mesh(n=2, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    servers[1].set("m2", faults.cut(after=2))
    with pytest.raises(StreamInterruptedError) as ei:
        stream(mesh, mode, "chat", "hi")
    assert ei.value.partial_text.startswith("Hello from m1.")
    assert len(ei.value.partial_text) > len("Hello from m1.")  # m2's part too
