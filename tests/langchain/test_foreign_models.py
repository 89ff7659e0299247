"""LangChain chat models the user already has as pool members (``from_models`` and
``type: langchain``): real ``langchain_openai.ChatOpenAI`` instances over real HTTP to the
fault server on 127.0.0.1, failing over between themselves and with native providers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from mesh_core._errors import BadRequestError
from mesh_core._events import Event, EventType
from mesh_core.testing import FaultServer, faults
from modelmesh_langchain import MeshChatModel

FAST = {"first_token": "1s", "stall": "1s", "total": "3s"}


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def chat(server: FaultServer, name: str, **kw: Any) -> ChatOpenAI:
    """A member the way users build one, with the SDK's own retries off (the mesh retries)."""
    return ChatOpenAI(
        model=name, base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10, **kw
    )


def pair(server: FaultServer, config: dict[str, Any] | None = None, **kw: Any) -> MeshChatModel:
    """Two foreign members, ``one.a`` before ``two.b``; no same-model retry."""
    base: dict[str, Any] = {
        "providers": {},
        "pools": {"default": {"retry": {"max_attempts": 1}}},
    }
    for key, value in (config or {}).items():
        base[key] = {**base.get(key, {}), **value}
    return MeshChatModel.from_models(
        {"one.a": chat(server, "a"), "two.b": chat(server, "b")}, config=base, **kw
    )


def answered_by(message: Any) -> str:
    return str(message.response_metadata["model_name"])


def attempts(message: Any) -> list[tuple[str, str]]:
    return [(a["model_id"], a["outcome"]) for a in message.response_metadata["mesh"]["attempts"]]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- failover between foreign models ------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fails_over_between_two_foreign_models(server: FaultServer, mode: str) -> None:
    llm = pair(server)
    server.set("a", faults.server_error(500))
    msg = llm.invoke("hello") if mode == "sync" else run(llm.ainvoke("hello"))
    assert answered_by(msg) == "two.b"
    assert msg.content == "Hello from b. You said: hello"
    assert attempts(msg) == [("one.a", "server_error"), ("two.b", "success")]
    first = msg.response_metadata["mesh"]["attempts"][0]
    assert first["status_code"] == 500 and first["provider_id"] == "one"
    assert server.count("a") == 1 and server.count("b") == 1
    stats = llm.mesh.stats()["models"]
    assert stats["one.a"]["failures"] == 1 and stats["two.b"]["requests"] == 1


def test_standby_and_recovery_show_in_stats_and_events(server: FaultServer) -> None:
    llm = pair(
        server,
        {"pools": {"default": {"deactivation": {"retry_limit": 1}, "recovery": {"cooldown": 0.3}}}},
    )
    seen: list[Event] = []
    llm.mesh.events.on(None, seen.append)
    server.set("a", faults.server_error(503))
    assert answered_by(llm.invoke("x")) == "two.b"
    assert llm.mesh.stats()["models"]["one.a"]["status"] == "standby"
    assert answered_by(llm.invoke("x")) == "two.b"  # a is not called while in standby
    assert server.count("a") == 1
    deactivated = [e for e in seen if e.event_type is EventType.MODEL_DEACTIVATED]
    assert [e.model_id for e in deactivated] == ["one.a"]
    server.set("a", faults.ok())
    deadline = time.monotonic() + 10
    while answered_by(llm.invoke("x")) != "one.a":  # the trial after the cooldown
        assert time.monotonic() < deadline, "one.a never came back"
        time.sleep(0.05)
    assert llm.mesh.stats()["models"]["one.a"]["status"] == "active"
    assert any(e.event_type is EventType.MODEL_REACTIVATED for e in seen)


def test_refused_credentials_put_the_model_in_standby(server: FaultServer) -> None:
    llm = pair(server)
    server.set("a", faults.unauthorized(401))
    msg = llm.invoke("x")
    assert answered_by(msg) == "two.b" and attempts(msg)[0] == ("one.a", "authentication")
    snapshot = llm.mesh.stats()["models"]["one.a"]
    assert snapshot["status"] == "standby" and "auth" in str(snapshot["reason"])


def test_a_bad_request_is_raised_without_failover(server: FaultServer) -> None:
    llm = pair(server)
    server.set("a", faults.error(400, "temperature is out of range", code="invalid_value"))
    with pytest.raises(BadRequestError, match="one: HTTP 400"):
        llm.invoke("x")
    assert server.count("b") == 0


def test_context_overflow_fails_over(server: FaultServer) -> None:
    llm = pair(server)
    server.set("a", faults.context_length_exceeded())
    msg = llm.invoke("x")
    assert attempts(msg) == [("one.a", "context_window_exceeded"), ("two.b", "success")]


def test_a_blocked_sync_call_is_abandoned_at_the_total_timeout(server: FaultServer) -> None:
    llm = pair(server, {"models": {"one.a": {"timeouts": {"total": "500ms"}}}})
    server.set("a", faults.ok(delay=5))
    msg = llm.invoke("x")
    assert attempts(msg) == [("one.a", "timeout"), ("two.b", "success")]


def test_api_key_never_shows_in_errors(server: FaultServer) -> None:
    with FaultServer(api_key="sk-right-key") as locked:
        wrong = ChatOpenAI(
            model="a", base_url=locked.base_url, api_key="sk-wrong-0123456789abcdef", max_retries=0
        )
        llm = MeshChatModel.from_models({"one.a": wrong, "two.b": chat(server, "b")})
        msg = llm.invoke("x")
    assert attempts(msg)[0] == ("one.a", "authentication")
    shown = json.dumps(msg.response_metadata) + repr(llm) + repr(llm.mesh.providers)
    assert "0123456789abcdef" not in shown


# --- mixed pools: native and foreign members ----------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_mixed_pool_fails_over_both_ways(server: FaultServer, mode: str) -> None:
    config = {
        "providers": {"native": {"base_url": server.base_url}},
        "models": {"native.n": {"provider": "native"}},
        "pools": {"default": {"retry": {"max_attempts": 1}}},
    }
    llm = MeshChatModel.from_models({"lc.f": chat(server, "f")}, config=config)
    assert [m.id for m in llm.mesh.pool("default").models] == ["lc.f", "native.n"]

    def ask() -> Any:
        return llm.invoke("x") if mode == "sync" else run(llm.ainvoke("x"))

    server.set("f", faults.server_error(500))
    msg = ask()
    assert attempts(msg) == [("lc.f", "server_error"), ("native.n", "success")]
    assert msg.content == "Hello from n. You said: x"
    server.set("f", faults.ok())
    server.set("n", faults.server_error(500))
    llm2 = MeshChatModel.from_models(
        {"lc.f": chat(server, "f")},
        config={
            **config,
            "pools": {
                "default": {"model_priority": ["native.n", "lc.f"], "retry": {"max_attempts": 1}}
            },
        },
    )
    msg = llm2.invoke("x") if mode == "sync" else run(llm2.ainvoke("x"))
    assert [a for a, _ in attempts(msg)] == ["native.n", "lc.f"]
    assert answered_by(msg) == "lc.f"


# --- streaming ------------------------------------------------------------------------------


async def _astream_text(llm: MeshChatModel, prompt: str) -> list[Any]:
    return [chunk async for chunk in llm.astream(prompt)]


def _stream(llm: MeshChatModel, mode: str, prompt: str = "one two three") -> list[Any]:
    return list(llm.stream(prompt)) if mode == "sync" else run(_astream_text(llm, prompt))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "fault",
    [faults.server_error(500), faults.slow_first_token(5), faults.stream_error(after=0)],
    ids=["error", "stall-before-first-token", "error-event"],
)
def test_stream_fails_over_before_the_first_token(
    server: FaultServer, mode: str, fault: faults.Behaviour
) -> None:
    llm = pair(server, {"models": {"one.a": {"timeouts": FAST}}})
    server.set("a", fault)
    chunks = _stream(llm, mode)
    text = "".join(str(c.content) for c in chunks)
    assert text == "Hello from b. You said: one two three"
    last = chunks[-1].response_metadata
    assert last["model_name"] == "two.b" and last["finish_reason"] == "stop"
    assert [a["model_id"] for a in last["mesh"]["attempts"]] == ["one.a", "two.b"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_broken_after_the_first_token_continues_by_prefill(
    server: FaultServer, mode: str
) -> None:
    llm = pair(server)
    server.set("a", faults.cut(after=2))
    chunks = _stream(llm, mode)
    continued = [c for c in chunks if c.response_metadata.get("mesh", {}).get("continued_from")]
    assert len(continued) == 1
    assert continued[0].response_metadata["mesh"]["continued_from"] == "one.a"
    sent = server.requests_for("b")[-1].body["messages"]
    assert sent[-1]["role"] == "assistant" and sent[-1]["content"] == "Hello from"
    assert chunks[-1].response_metadata["model_name"] == "two.b"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stall_after_the_first_token_continues_on_the_next_model(
    server: FaultServer, mode: str
) -> None:
    llm = pair(server, {"models": {"one.a": {"timeouts": {**FAST, "adaptive": False}}}})
    server.set("a", faults.stall(after=2, seconds=5))
    chunks = _stream(llm, mode)
    marks = [c.response_metadata.get("mesh", {}).get("continued_from") for c in chunks]
    assert "one.a" in marks
    assert chunks[-1].response_metadata["model_name"] == "two.b"
    assert "".join(str(c.content) for c in chunks).startswith("Hello from")


def test_state_persists_across_meshes(server: FaultServer, tmp_path: Any) -> None:
    storage = {"storage": {"backend": "json", "path": str(tmp_path / "state.json")}}
    llm = pair(server, {**storage, "pools": {"default": {"deactivation": {"retry_limit": 1}}}})
    server.set("a", faults.server_error(503))
    assert llm.invoke("x").response_metadata["model_name"] == "two.b"
    llm.mesh.close()
    again = pair(server, storage)  # a new process would do the same
    assert again.mesh.stats()["models"]["one.a"]["status"] == "standby"
    assert again.invoke("x").response_metadata["model_name"] == "two.b"
    assert server.count("a") == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_usage_and_cost_come_from_usage_metadata(server: FaultServer, mode: str) -> None:
    pricing = {"input_per_1k": 1.0, "output_per_1k": 2.0}
    members = {"one.a": chat(server, "a", stream_usage=True)}
    llm = MeshChatModel.from_models(members, config={"models": {"one.a": {"pricing": pricing}}})
    chunks = _stream(llm, mode, "count these words")
    usage = chunks[-1].usage_metadata
    direct = None
    for chunk in members["one.a"].stream("count these words"):
        direct = chunk if direct is None else direct + chunk
    assert direct is not None and direct.usage_metadata is not None
    assert usage["input_tokens"] == direct.usage_metadata["input_tokens"] > 0
    assert usage["output_tokens"] == direct.usage_metadata["output_tokens"] > 0
    cost = chunks[-1].response_metadata["mesh"]["cost"]
    expected = usage["input_tokens"] / 1000 * 1.0 + usage["output_tokens"] / 1000 * 2.0
    assert cost == pytest.approx(expected)


def test_invoke_usage_and_cost(server: FaultServer) -> None:
    pricing = {"input_per_1k": 1.0, "output_per_1k": 2.0, "per_request": 0.5}
    llm = MeshChatModel.from_models(
        {"one.a": chat(server, "a")}, config={"models": {"one.a": {"pricing": pricing}}}
    )
    msg = llm.invoke("hi")
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == 1 and msg.usage_metadata["output_tokens"] == 6
    assert msg.response_metadata["mesh"]["cost"] == pytest.approx(0.001 + 0.012 + 0.5)
    assert msg.response_metadata["provider_model"] == "a"
    assert llm.mesh.stats()["models"]["one.a"]["tokens"] == 7


# --- tools and structured output --------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


class Joke(BaseModel):
    """A joke."""

    setup: str
    punchline: str


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tools_are_bound_on_the_foreign_model(server: FaultServer, mode: str) -> None:
    llm = pair(server).bind_tools([get_weather], tool_choice="get_weather")
    server.set("a", faults.tool_call("get_weather", {"city": "Paris"}))
    msg = llm.invoke("weather?") if mode == "sync" else run(llm.ainvoke("weather?"))
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    body = server.requests_for("a")[-1].body
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_streamed_tool_calls_pass_through(server: FaultServer) -> None:
    llm = pair(server).bind_tools([get_weather])
    server.set("a", faults.tool_call("get_weather", {"city": "Oslo"}))
    joined = None
    for chunk in llm.stream("weather?"):
        joined = chunk if joined is None else joined + chunk
    assert joined is not None
    assert [(c["name"], c["args"]) for c in joined.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_structured_output_over_foreign_members(server: FaultServer, method: str) -> None:
    llm = pair(server)
    joke = {"setup": "Why?", "punchline": "Because."}
    if method == "function_calling":
        server.set("a", faults.server_error(500))
        server.set("b", faults.tool_call("Joke", joke))
    else:
        server.set("a", faults.reply(json.dumps(joke)))
    result = llm.with_structured_output(Joke, method=method).invoke("tell me a joke")
    assert result == Joke(**joke)
    if method == "json_schema":
        sent = server.requests_for("a")[-1].body["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Joke"


# --- async: a new event loop per call -----------------------------------------------------------


def test_a_new_event_loop_per_call_neither_fails_over_nor_leaks(server: FaultServer) -> None:
    llm = pair(server)
    llm.invoke("warm up")
    before = len(_workers())
    for _ in range(3):
        assert answered_by(run(llm.ainvoke("x"))) == "one.a"
        assert run(_astream_text(llm, "y"))[-1].response_metadata["model_name"] == "one.a"
    assert llm.mesh.stats()["models"]["one.a"]["failures"] == 0
    assert server.count("b") == 0
    assert len(_workers()) <= before, "the async path starts no thread"


def _workers() -> list[threading.Thread]:
    """The mesh's worker threads for foreign sync calls. (The fault server's request threads
    may linger: ChatOpenAI keeps its connections of a closed event loop open, as it does
    when called directly.)"""
    return [t for t in threading.enumerate() if t.name == "mesh-foreign-worker"]


def test_sync_calls_reuse_their_worker_threads(server: FaultServer) -> None:
    llm = pair(server)
    llm.invoke("warm up")
    before = len(_workers())
    for _ in range(5):
        llm.invoke("x")
        list(llm.stream("y"))
    assert 1 <= len(_workers()) <= before + 1  # not one per call


def test_from_models_says_what_is_wrong_with_its_input(server: FaultServer) -> None:
    with pytest.raises(TypeError, match=r"models\['one.a'\] is a str, not a LangChain chat model"):
        MeshChatModel.from_models({"one.a": "gpt-4o"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one model"):
        MeshChatModel.from_models({})
    llm = MeshChatModel.from_models(
        {"openai.a": chat(server, "a"), "openai.b": chat(server, "b")}, temperature=0
    )
    providers = {m.id: m.provider_id for m in llm.mesh.pool("default").models}
    assert providers == {"openai.a": "openai.a", "openai.b": "openai.b"}  # a shared prefix
    assert llm.temperature == 0 and llm.invoke("x").response_metadata["model_name"] == "openai.a"
    assert server.requests_for("a")[-1].body["temperature"] == 0
