"""A pool of [OpenAI-compatible, Anthropic, Azure OpenAI, Gemini] models: failures move a request
across protocols, a tool-call round trip started on one protocol is continued on another,
structured output and streaming work on each, and each protocol's errors, refusals and
rate-limit headers mean the same thing to the mesh. One fault server speaks all four on
one port; assertions are on causality (which model answered, the attempts and their
kinds, what each provider received), never on timings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mesh_core import Mesh
from mesh_core._errors import ProviderError
from mesh_core.testing import FaultServer, faults
from tests.conftest import FAST

KEY = "sk-cross-SECRET-4242"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}


@pytest.fixture
def server():
    with FaultServer(api_key=KEY) as s:
        yield s


def config(server: FaultServer, pool: dict[str, Any] | None = None) -> dict[str, Any]:
    def provider(kind: str) -> dict[str, Any]:
        return {"type": kind, "base_url": server.url_for(kind), "api_key": KEY, "timeouts": FAST}

    return {
        "providers": {
            "oa": provider("openai-compatible"),
            "an": provider("anthropic"),
            "az": provider("azure-openai"),
            "ge": provider("gemini"),
        },
        "models": {
            "oa.m1": {"provider": "oa", "name": "m1"},
            "an.m2": {"provider": "an", "name": "m2"},
            "az.m3": {"provider": "az", "name": "m3"},
            "ge.m4": {"provider": "ge", "name": "m4"},
        },
        "pools": {
            "chat": {
                "capability": "chat-completion",
                "strategy": "priority-selection",
                "model_priority": ["oa.m1", "an.m2", "az.m3", "ge.m4"],
                "retry": {"max_attempts": 1},
                **(pool or {}),
            }
        },
    }


@pytest.fixture
def mesh(server):
    with Mesh.from_config(config(server)) as m:
        yield m


def call(mesh: Mesh, mode: str, *args: Any, **kw: Any):
    if mode == "sync":
        return mesh.complete(*args, **kw)

    async def run():
        try:
            return await mesh.acomplete(*args, **kw)
        finally:
            for provider in mesh.providers.values():
                await provider.aclose()

    return asyncio.run(run())


def streamed(mesh: Mesh, mode: str, *args: Any, **kw: Any) -> list[Any]:
    if mode == "sync":
        return list(mesh.stream(*args, **kw))

    async def run():
        try:
            return [chunk async for chunk in mesh.astream(*args, **kw)]
        finally:
            for provider in mesh.providers.values():
                await provider.aclose()

    return asyncio.run(run())


def dialects(server: FaultServer) -> list[tuple[str, str]]:
    return [(r.dialect, r.model) for r in server.requests]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failures_move_the_request_across_protocols(server, mesh, mode):
    server.set("m1", faults.server_error(503))
    server.set("m2", faults.overloaded())
    resp = call(mesh, mode, "chat", "hello")
    assert resp.model == "az.m3" and resp.content == "Hello from m3. You said: hello"
    assert [(a.model_id, a.outcome, a.status_code) for a in resp.attempts] == [
        ("oa.m1", "server_error", 503),
        ("an.m2", "server_error", 529),
        ("az.m3", "success", None),
    ]
    assert dialects(server) == [("openai", "m1"), ("anthropic", "m2"), ("azure-openai", "m3")]
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 6  # as reported


def test_each_protocol_sends_its_own_credentials_and_no_error_shows_the_key(server, mesh):
    server.set("m1", faults.rate_limited(retry_after=30))
    # a provider that echoes the key it was sent back into its error message
    server.set("m2", faults.error(401, f"invalid key: {KEY}", code="authentication_error"))
    resp = mesh.complete("chat", "hi")
    assert resp.model == "az.m3"
    assert [a.outcome for a in resp.attempts] == ["rate_limited", "authentication", "success"]
    oa, an, az = server.requests
    assert oa.headers["authorization"] == f"Bearer {KEY}"
    assert an.headers["authorization"] == f"Bearer {KEY}" and an.headers["anthropic-version"]
    assert az.headers["api-key"] == KEY and "authorization" not in az.headers
    shown = repr(resp) + repr(mesh.providers) + repr(mesh.snapshot("an.m2"))
    assert "SECRET" not in shown and "invalid key: ***" in resp.attempts[1].error
    assert mesh.snapshot("an.m2").status == "standby"  # the provider's auth failed: out


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tool_call_made_on_openai_is_continued_on_anthropic(server, mesh, mode):
    server.set("m1", faults.tool_call("get_weather", {"city": "Paris"}, id="call_abc"))
    first = call(mesh, mode, "chat", "weather in Paris?", tools=[WEATHER])
    assert first.model == "oa.m1" and first.finish_reason == "tool_calls"
    assert json.loads(first.tool_calls[0].arguments) == {"city": "Paris"}
    server.set("m1", faults.server_error(500))
    history = [
        {"role": "user", "content": "weather in Paris?"},
        first.message,
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny, 21C"},
    ]
    second = call(mesh, mode, "chat", history, tools=[WEATHER])
    assert second.model == "an.m2" and second.content == "The tool returned: sunny, 21C"
    sent = server.requests_for("m2")[-1].body  # passed the Messages API's own checks
    assert sent["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "call_abc"
    assert sent["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]


def test_a_tool_call_made_on_anthropic_is_continued_on_azure(server, mesh):
    server.set("m1", faults.server_error(500))
    server.set("m2", faults.tool_call("get_weather", {"city": "Oslo"}, id="toolu_01"))
    first = mesh.complete("chat", "weather in Oslo?", tools=[WEATHER])
    assert first.model == "an.m2" and first.finish_reason == "tool_calls"
    assert first.tool_calls[0].id == "toolu_01"
    server.set("m2", faults.overloaded())
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather in Oslo?"},
        first.message,
        {"role": "tool", "tool_call_id": "toolu_01", "content": "snow"},
    ]
    second = mesh.complete("chat", history, tools=[WEATHER])
    assert second.model == "az.m3" and second.content == "The tool returned: snow"
    assert server.requests_for("m3")[-1].body["messages"][2]["tool_calls"][0]["id"] == "toolu_01"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_streamed_tool_call_from_anthropic(server, mesh, mode):
    server.set("m1", faults.server_error(500))
    server.set("m2", faults.tool_call("get_weather", {"city": "Rome"}, id="toolu_9"))
    chunks = streamed(mesh, mode, "chat", "weather in Rome?", tools=[WEATHER])
    deltas = [d for c in chunks for d in c.tool_call_deltas]
    assert {d.id for d in deltas if d.id} == {"toolu_9"}
    assert json.loads("".join(d.arguments or "" for d in deltas)) == {"city": "Rome"}
    assert chunks[-1].model == "an.m2" and chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("first", ["m1", "m2", "m3", "m4"])
def test_structured_output_on_each_protocol(server, mesh, first):
    for other in {"m1", "m2", "m3", "m4"} - {first}:
        server.set(other, faults.server_error(500))
    resp = mesh.complete("chat", "Extract: 'Ada' is 36.", response_format=PERSON)
    assert json.loads(resp.content) == {"name": "Ada", "age": 36}
    assert resp.finish_reason == "stop" and not resp.tool_calls
    chunks = list(mesh.stream("chat", "Extract: 'Ada' is 36.", response_format=PERSON))
    assert json.loads("".join(c.content for c in chunks)) == {"name": "Ada", "age": 36}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_error_event_before_the_first_token_fails_over_across_protocols(server, mesh, mode):
    server.set("m1", faults.stream_error(after=0))
    server.set("m2", faults.stream_error(after=0))  # Anthropic's ``event: error``, in a 200
    chunks = streamed(mesh, mode, "chat", "hello")
    assert "".join(c.content for c in chunks) == "Hello from m3. You said: hello"
    last = chunks[-1]
    assert last.model == "az.m3" and last.finish_reason == "stop"
    assert [a.outcome for a in last.attempts] == ["server_error", "server_error", "success"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_anthropic_stream_gives_text_finish_and_reported_usage(server, mesh, mode):
    server.set("m1", faults.silent())  # no first token in time: fails over
    chunks = streamed(mesh, mode, "chat", "hello")
    assert "".join(c.content for c in chunks) == "Hello from m2. You said: hello"
    last = chunks[-1]
    assert last.model == "an.m2" and last.finish_reason == "stop"
    assert last.usage.completion_tokens == 6 and last.usage.prompt_tokens > 0
    assert [a.outcome for a in last.attempts] == ["timeout", "success"]


def test_an_anthropic_stream_cut_or_malformed_before_a_token_fails_over(server, mesh):
    server.set("m1", faults.server_error(500))
    server.enqueue("m2", faults.malformed_event(after=0))
    chunks = list(mesh.stream("chat", "hello"))
    assert chunks[-1].model == "az.m3"
    assert [a.outcome for a in chunks[-1].attempts][1] == "malformed_response"


def test_refusals_are_content_policy_errors_raised_at_once(server, mesh):
    server.set("m1", faults.server_error(500))
    server.set("m2", faults.refusal())
    with pytest.raises(ProviderError) as info:
        mesh.complete("chat", "something bad")
    assert info.value.kind.value == "content_policy"
    assert server.count("m3") == 0  # the caller's request, not the provider: not retried
    server.set("m2", faults.server_error(500))
    server.set("m3", faults.content_policy())  # Azure's filtered prompt
    with pytest.raises(ProviderError) as info:
        mesh.complete("chat", "something bad")
    assert info.value.kind.value == "content_policy"


def test_anthropic_context_overflow_and_credit_errors_move_on(server, mesh):
    server.set("m1", faults.server_error(500))
    server.set("m2", faults.context_length_exceeded())
    resp = mesh.complete("chat", "long")
    assert resp.model == "az.m3"
    assert resp.attempts[1].outcome == "context_window_exceeded"


def test_anthropic_rate_limit_headers_drive_the_rate_limit_strategy(server):
    cfg = config(
        server,
        {
            "strategy": "rate-limit-aware",
            "rate_limit": {"threshold": 0.5},
            "model_priority": ["an.m2", "oa.m1", "az.m3", "ge.m4"],
        },
    )
    server.rate_limit("m2", limit=4)
    with Mesh.from_config(cfg) as mesh:
        seq = [mesh.complete("chat", str(i)).model for i in range(4)]
        assert seq[:2] == ["an.m2", "an.m2"] and "an.m2" not in seq[2:]
        assert mesh.snapshot("an.m2").requests_remaining == 2


# --- Gemini ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_request_crosses_all_four_protocols(server, mesh, mode):
    server.set("m1", faults.server_error(503))
    server.set("m2", faults.overloaded())
    server.set("m3", faults.rate_limited(retry_after=20))
    resp = call(mesh, mode, "chat", "hello")
    assert resp.model == "ge.m4" and resp.content == "Hello from m4. You said: hello"
    assert [a.outcome for a in resp.attempts] == [
        "server_error",
        "server_error",
        "rate_limited",
        "success",
    ]
    assert [d for d, _ in dialects(server)] == ["openai", "anthropic", "azure-openai", "gemini"]
    assert server.requests[-1].headers["x-goog-api-key"] == KEY
    assert resp.usage.completion_tokens == 6


def gemini_first(server: FaultServer) -> Mesh:
    return Mesh.from_config(
        config(server, {"model_priority": ["ge.m4", "an.m2", "oa.m1", "az.m3"]})
    )


def test_a_gemini_tool_call_sends_its_thought_signature_back(server):
    server.set("m4", faults.tool_call("get_weather", {"city": "Lima"}))
    with gemini_first(server) as mesh:
        first = mesh.complete("chat", "weather in Lima?", tools=[WEATHER])
        assert first.model == "ge.m4" and first.finish_reason == "tool_calls"
        issued = server.requests_for("m4")[-1]  # the signature the fake issued, in its reply
        server.set("m4", faults.ok())
        history = [
            {"role": "user", "content": "weather in Lima?"},
            first.message,
            {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "fog"},
        ]
        second = mesh.complete("chat", history, tools=[WEATHER])
        assert second.model == "ge.m4" and second.content == "The tool returned: fog"
        sent = server.requests_for("m4")[-1].body["contents"]
        call_part = sent[1]["parts"][0]
        assert call_part["functionCall"] == {"name": "get_weather", "args": {"city": "Lima"}}
        assert call_part["thoughtSignature"] not in ("", None, "skip_thought_signature_validator")
        assert sent[2]["parts"][0]["functionResponse"]["name"] == "get_weather"
        assert issued.dialect == "gemini"
        # the same conversation, continued on Anthropic when Gemini fails
        server.set("m4", faults.server_error(503))
        third = mesh.complete("chat", history, tools=[WEATHER])
        assert third.model == "an.m2" and third.content == "The tool returned: fog"


def test_a_tool_call_from_anthropic_is_continued_on_gemini(server):
    server.set("m4", faults.server_error(500))
    server.set("m2", faults.tool_call("get_weather", {"city": "Kyiv"}, id="toolu_77"))
    with gemini_first(server) as mesh:
        first = mesh.complete("chat", "weather in Kyiv?", tools=[WEATHER])
        assert first.model == "an.m2"
        server.set("m4", faults.ok())
        history = [
            {"role": "user", "content": "weather in Kyiv?"},
            first.message,
            {"role": "tool", "tool_call_id": "toolu_77", "content": "rain"},
        ]
        second = mesh.complete("chat", history, tools=[WEATHER])
        assert second.model == "ge.m4" and second.content == "The tool returned: rain"
        part = server.requests_for("m4")[-1].body["contents"][1]["parts"][0]
        assert part["thoughtSignature"] == "skip_thought_signature_validator"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gemini_streams_and_fails_over_on_its_errors(server, mode):
    server.enqueue("m4", faults.stream_error(after=0))
    with gemini_first(server) as mesh:
        chunks = streamed(mesh, mode, "chat", "hello")
        assert chunks[-1].model == "an.m2"
        assert [a.outcome for a in chunks[-1].attempts] == ["server_error", "success"]
        chunks = streamed(mesh, mode, "chat", "hello")
        assert "".join(c.content for c in chunks) == "Hello from m4. You said: hello"
        assert chunks[-1].model == "ge.m4" and chunks[-1].finish_reason == "stop"
        assert chunks[-1].usage.completion_tokens == 6


def test_gemini_key_rejection_quota_and_safety(server):
    with gemini_first(server) as mesh:
        server.enqueue("m4", faults.quota_exhausted())
        resp = mesh.complete("chat", "a")
        assert resp.model == "an.m2" and resp.attempts[0].outcome == "quota_exhausted"
        assert resp.attempts[0].status_code == 429
    with gemini_first(server) as mesh:
        server.set("m4", faults.unauthorized())  # Gemini: 400 API_KEY_INVALID
        resp = mesh.complete("chat", "b")
        assert resp.attempts[0].outcome == "authentication"
        assert resp.attempts[0].status_code == 400
    with gemini_first(server) as mesh:
        server.set("m4", faults.refusal())
        with pytest.raises(ProviderError) as info:
            mesh.complete("chat", "c")
        assert info.value.kind.value == "content_policy"


def test_a_stream_cut_on_openai_is_continued_on_anthropic_by_prefill(server):
    cfg = config(server, {"stream_recovery": "continue"})
    server.set("m1", faults.cut(after=3))
    with Mesh.from_config(cfg) as mesh:
        chunks = list(mesh.stream("chat", "hello"))
    assert chunks[-1].model == "an.m2" and chunks[-1].finish_reason == "stop"
    assert [c.continued_from for c in chunks if c.continued_from] == ["oa.m1"]
    sent = server.requests_for("m2")[-1].body["messages"]
    assert sent[-1]["role"] == "assistant"  # the partial answer, as Anthropic's prefill
    assert sent[-1]["content"][-1]["text"] == "Hello from m1."  # trailing space removed


def test_anthropic_max_tokens_defaults_to_the_models_max_output_tokens(server):
    cfg = config(server)
    cfg["models"]["an.m2"]["max_output_tokens"] = 321
    server.set("m1", faults.server_error(503))
    with Mesh.from_config(cfg) as mesh:
        assert mesh.complete("chat", "hi").model == "an.m2"
        assert mesh.complete("chat", "hi", max_tokens=7).model == "an.m2"
    sent = [r.body["max_tokens"] for r in server.requests if r.dialect == "anthropic"]
    assert sent == [321, 7]  # the caller's own value wins
    openai_bodies = [r.body for r in server.requests if r.dialect == "openai"]
    assert "max_tokens" not in openai_bodies[0]  # other protocols get nothing added
