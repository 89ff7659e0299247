"""stream_recovery: continue (the default) — a stream cut after its first token goes on
elsewhere; ``raise`` hands the break to the caller."""

from __future__ import annotations

import pytest

from mesh_core._errors import StreamInterruptedError
from mesh_core.testing import faults
from tests.conftest import MODES, stream

CONTINUE = {"strategy": "priority-selection", "stream_recovery": "continue"}


@MODES
def test_continues_on_the_next_model_from_the_partial_answer(make_mesh, servers, mode):
    mesh = make_mesh(n=3, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    chunks = stream(mesh, mode, "chat", "hi")
    text = "".join(c.content for c in chunks)
    assert text == "Hello from m1. You said: hi"  # m1's start, m2's continuation
    flagged = [c for c in chunks if c.continued_from]
    assert len(flagged) == 1 and flagged[0].continued_from == "p1.m1"
    assert not any(c.restarted for c in chunks)
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.model == "p2.m2"
    assert [(a.model_id, a.outcome) for a in last.attempts] == [
        ("p1.m1", "success"),
        ("p1.m1", "stream_interrupted"),
        ("p2.m2", "success"),
    ]
    sent = servers[1].requests[-1].body["messages"]
    assert sent[-1] == {"role": "assistant", "content": "Hello from m1."}


@MODES
def test_a_model_rejecting_prefill_starts_over_and_says_so(make_mesh, servers, mode):
    mesh = make_mesh(n=3, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    servers[1].set("m2", faults.ok(reject_prefill=True))
    chunks = stream(mesh, mode, "chat", "hi", restart=True)
    restarted = [i for i, c in enumerate(chunks) if c.restarted]
    assert len(restarted) == 1
    after = "".join(c.content for c in chunks[restarted[0] :])
    assert after == "Hello from m2. You said: hi"  # a whole answer, from the restart on
    assert servers[1].requests[-1].body["messages"][-1]["role"] == "user"


@MODES
def test_with_no_model_left_the_break_is_raised(make_mesh, servers, mode):
    mesh = make_mesh(n=1, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    with pytest.raises(StreamInterruptedError) as ei:
        stream(mesh, mode, "chat", "hi")
    assert ei.value.partial_text == "Hello from m1."


@MODES
def test_a_model_rejecting_prefill_raises_unless_restarts_are_allowed(make_mesh, servers, mode):
    mesh = make_mesh(n=3, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    servers[1].set("m2", faults.ok(reject_prefill=True))
    with pytest.raises(StreamInterruptedError) as ei:
        stream(mesh, mode, "chat", "hi")
    assert ei.value.partial_text == "Hello from m1."  # nothing delivered twice
    assert servers[2].count() == 0  # no start-over the consumer did not ask for


def test_the_default_continues(make_mesh, servers):
    mesh = make_mesh(n=2, pool={"strategy": "priority-selection"})
    servers[0].set("m1", faults.cut(after=3))
    chunks = list(mesh.stream("chat", "hi"))
    assert "".join(c.content for c in chunks) == "Hello from m1. You said: hi"
    assert [c.continued_from for c in chunks if c.continued_from] == ["p1.m1"]
    assert chunks[-1].model == "p2.m2" and chunks[-1].finish_reason == "stop"


def test_raise_mode_hands_the_break_to_the_caller(make_mesh, servers):
    mesh = make_mesh(n=2, pool={"strategy": "priority-selection", "stream_recovery": "raise"})
    servers[0].set("m1", faults.cut(after=3))
    with pytest.raises(StreamInterruptedError):
        list(mesh.stream("chat", "hi"))
    assert servers[1].count() == 0


def test_adapters_continue_and_never_restart_after_yielding(make_mesh, servers):
    from llama_index.core.base.llms.types import ChatMessage

    from modelmesh_langchain import MeshChatModel
    from modelmesh_llamaindex import MeshLLM

    mesh = make_mesh(n=3, pool=CONTINUE)
    servers[0].set("m1", faults.cut(after=3))
    chunks = list(MeshChatModel(pool="chat", config=mesh).stream("hi"))
    assert "".join(c.content for c in chunks) == "Hello from m1. You said: hi"
    assert any(c.response_metadata.get("mesh", {}).get("continued_from") == "p1.m1" for c in chunks)
    # A framework joins every delta into its answer and cannot take one back: where the
    # core would start over, the adapters raise instead of yielding a second answer.
    servers[1].set("m2", faults.ok(reject_prefill=True))
    deltas: list[str] = []
    llm = MeshLLM(pool="chat", config=mesh)
    with pytest.raises(StreamInterruptedError) as ei:
        for r in llm.stream_chat([ChatMessage(role="user", content="hi")]):
            deltas.append(r.delta or "")
    assert "".join(deltas) == ei.value.partial_text == "Hello from m1."
