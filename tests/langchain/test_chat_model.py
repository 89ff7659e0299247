"""MeshChatModel in chains, tool loops, structured output and streaming, with failover."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import yaml
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd, load
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel

from mesh_core._errors import ConfigurationError, StreamInterruptedError, UnknownPoolError
from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import faults
from modelmesh_langchain import MeshChatModel
from tests.conftest import config_for


@pytest.fixture
def cfg(servers) -> dict[str, Any]:
    config = config_for(
        servers,
        models={"p1.m1": {"features": {"vision": True}}, "p2.m2": {"features": {"vision": True}}},
    )
    yield config
    forget_shared_meshes()


@pytest.fixture
def llm(cfg) -> MeshChatModel:
    return MeshChatModel(pool="chat", config=cfg)


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"It is sunny in {city}."


class Joke(BaseModel):
    """A joke."""

    setup: str
    punchline: str


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_chain_answers_and_fails_over(llm, servers, failing):
    if failing:
        servers[0].set("m1", faults.server_error(503))
    chain = ChatPromptTemplate.from_messages([("user", "Tell me about {topic}")]) | llm
    msg = chain.invoke({"topic": "owls"})
    expected = "p2.m2" if failing else "p1.m1"
    assert msg.content == f"Hello from m{expected[-1]}. You said: Tell me about owls"
    assert msg.response_metadata["model_name"] == expected
    assert msg.response_metadata["model_provider"] == "modelmesh"
    assert msg.response_metadata["finish_reason"] == "stop"
    mesh = msg.response_metadata["mesh"]
    assert mesh["pool"] == "chat" and mesh["attempts"][-1]["model_id"] == expected
    assert len(mesh["attempts"]) == (3 if failing else 1)
    assert msg.usage_metadata["total_tokens"] > 0
    assert (chain | StrOutputParser()).invoke({"topic": "owls"}).startswith("Hello from")


@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_streaming_chain_fails_over_before_the_first_token(llm, servers, failing):
    if failing:
        servers[0].set("m1", faults.reset())
    handler = Tokens()
    chunks = list(llm.stream("hi there", config={"callbacks": [handler]}))
    text = "".join(c.content for c in chunks)
    who = "m2" if failing else "m1"
    assert text == f"Hello from {who}. You said: hi there"
    assert "".join(handler.tokens) == text and len(handler.tokens) >= 6  # every token
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata["total_tokens"] > 0
    assert last.response_metadata["model_name"] == f"p{who[-1]}.{who}"
    whole = sum(chunks[1:], chunks[0])
    assert isinstance(whole, AIMessageChunk) and whole.usage_metadata["output_tokens"] > 0


def test_stream_cut_mid_answer_continues_on_the_next_model(llm, servers):
    servers[0].set("m1", faults.cut(after=2))
    got = [chunk.content for chunk in llm.stream("hi")]
    # m1's "Hello from", then m2 goes on from it (the fault server continues its own answer)
    assert "".join(got) == "Hello from m2. You said: hi"
    assert servers[1].requests[-1].body["messages"][-1] == {
        "role": "assistant",
        "content": "Hello from",
    }


def test_stream_cut_mid_answer_raises_when_recovery_is_off(cfg, servers):
    cfg["pools"]["chat"]["stream_recovery"] = "raise"
    servers[0].set("m1", faults.cut(after=2))
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as ei:
        for chunk in MeshChatModel(pool="chat", config=cfg).stream("hi"):
            got.append(chunk.content)
    assert "".join(got) == ei.value.partial_text == "Hello from"


def test_streaming_flag_streams_under_invoke(cfg, servers):
    handler = Tokens()
    msg = MeshChatModel(pool="chat", config=cfg, streaming=True).invoke(
        "hi", config={"callbacks": [handler]}
    )
    assert msg.content == "Hello from m1. You said: hi" and len(handler.tokens) > 3
    assert servers[0].requests[0].stream


@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_tool_calling_loop(llm, servers, failing):
    if failing:
        servers[0].set("m1", faults.server_error(500))
    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    history: list[Any] = [HumanMessage("What's the weather in 'Paris'?")]
    ai = bound.invoke(history)
    assert ai.tool_calls[0]["name"] == "get_weather"
    assert ai.tool_calls[0]["args"] == {"city": "Paris"}
    history += [
        ai,
        ToolMessage(
            get_weather.invoke(ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"]
        ),
    ]
    final = llm.bind_tools([get_weather]).invoke(history)
    assert final.content == "The tool returned: It is sunny in Paris."
    server = servers[1] if failing else servers[0]
    sent = server.requests[-1].body
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": ai.tool_calls[0]["id"],
        "content": "It is sunny in Paris.",
    }
    first = server.requests[-2].body
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert first["tools"][0]["function"]["name"] == "get_weather"


def test_tool_choice_forms_and_bad_tool_choice(llm, servers):
    llm.bind_tools([get_weather], tool_choice="any").invoke("hello")
    assert servers[0].requests[-1].body["tool_choice"] == "required"
    with pytest.raises(ValueError, match="names no bound tool"):
        llm.bind_tools([get_weather], tool_choice="nope")


def test_streamed_tool_calls_assemble(llm, servers):
    chunks = list(llm.bind_tools([get_weather], tool_choice="any").stream("weather in 'Oslo'"))
    whole = sum(chunks[1:], chunks[0])
    assert whole.tool_calls[0]["name"] == "get_weather"
    assert whole.tool_calls[0]["args"] == {"city": "Oslo"}


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_structured_output(llm, servers, method, failing):
    if failing:
        servers[0].set("m1", faults.server_error(503))
    prompt = "Tell me a joke about cats. Answer as JSON with 'setup' and 'punchline' keys."
    joke = llm.with_structured_output(Joke, method=method).invoke(prompt)
    assert isinstance(joke, Joke) and "cats" in joke.setup
    raw = llm.with_structured_output(Joke, method=method, include_raw=True).invoke(prompt)
    assert raw["parsing_error"] is None and isinstance(raw["parsed"], Joke)
    assert raw["raw"].response_metadata["model_name"] == ("p2.m2" if failing else "p1.m1")
    as_dict = llm.with_structured_output(Joke.model_json_schema(), method=method).invoke(prompt)
    assert set(as_dict) == {"setup", "punchline"}


def test_include_raw_keeps_the_raw_message_when_parsing_fails(llm, servers):
    servers[0].set("m1", faults.reply("not json at all"))
    out = llm.with_structured_output(Joke, method="json_mode", include_raw=True).invoke("x")
    assert out["parsed"] is None and out["parsing_error"] is not None
    assert out["raw"].content == "not json at all"


def test_parameters_reach_the_provider(cfg, servers):
    llm = MeshChatModel(
        pool="chat",
        config=cfg,
        temperature=0.3,
        max_tokens=12,
        top_p=0.5,
        seed=3,
        stop=["END"],
        model_kwargs={"user": "u1"},
    )
    llm.invoke("hi")
    body = servers[0].requests[-1].body
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (
        0.3,
        12,
        0.5,
        3,
    )
    assert body["stop"] == ["END"] and body["user"] == "u1"
    llm.invoke("hi", stop=["x"])
    assert servers[0].requests[-1].body["stop"] == ["x"]


def test_pinned_model_and_ls_params(cfg, servers):
    llm = MeshChatModel(pool="chat", config=cfg, temperature=0, max_tokens=5)
    assert llm.invoke("hi", model="p2.m2").response_metadata["model_name"] == "p2.m2"
    ls = llm._get_ls_params(stop=["s"])
    assert ls == {
        "ls_provider": "modelmesh",
        "ls_model_name": "chat",
        "ls_model_type": "chat",
        "ls_temperature": 0,
        "ls_max_tokens": 5,
        "ls_stop": ["s"],
    }
    assert llm._get_ls_params(model="p2.m2")["ls_model_name"] == "p2.m2"
    pinned = MeshChatModel(pool="chat", config=cfg, model="p1.m1")
    assert pinned._get_ls_params()["ls_model_name"] == "p1.m1"


def test_batch_abatch_ainvoke_astream_events(llm, servers):
    assert [m.content for m in llm.batch(["a", "b"])] == [
        "Hello from m1. You said: a",
        "Hello from m1. You said: b",
    ]

    async def run():
        msgs = await llm.abatch(["c", "d"])
        one = await llm.ainvoke("e")
        kinds = [e["event"] async for e in llm.astream_events("f", version="v2")]
        return msgs, one, kinds

    msgs, one, kinds = asyncio.run(run())
    assert [m.content for m in msgs] == ["Hello from m1. You said: c", "Hello from m1. You said: d"]
    assert one.content.endswith("e")
    assert kinds[0] == "on_chat_model_start" and kinds[-1] == "on_chat_model_end"
    assert kinds.count("on_chat_model_stream") >= 6


def test_async_failover(llm, servers):
    servers[0].set("m1", faults.silent())

    async def run():
        msg = await llm.ainvoke("hi")
        chunks = [c async for c in llm.astream("hi")]
        return msg, chunks

    msg, chunks = asyncio.run(run())
    assert msg.response_metadata["model_name"] == "p2.m2"
    assert chunks[-1].response_metadata["model_name"] == "p2.m2"


def test_instances_from_the_same_config_share_one_state(cfg, servers):
    a = MeshChatModel(pool="chat", config=cfg)
    b = MeshChatModel(pool="chat", config=json.loads(json.dumps(cfg)), temperature=1)
    assert a.mesh is b.mesh
    a.mesh.deactivate("p1.m1")
    assert b.invoke("hi").response_metadata["model_name"] == "p2.m2"


def test_config_from_environment_and_clear_errors(cfg, tmp_path, monkeypatch):
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MODELMESH_CONFIG", str(path))
    assert MeshChatModel(pool="chat").invoke("hi").content.startswith("Hello")
    with pytest.raises(UnknownPoolError, match="did you mean 'chat'"):
        MeshChatModel(pool="chta")
    monkeypatch.delenv("MODELMESH_CONFIG")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="MODELMESH_CONFIG"):
        MeshChatModel(pool="chat")


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
def test_serialization_round_trip(cfg, tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    llm = MeshChatModel(pool="chat", config=str(path), temperature=0.5)
    data = dumpd(llm)
    assert data["kwargs"] == {"pool": "chat", "config": str(path), "temperature": 0.5}
    back = load(data, allowed_objects=[MeshChatModel], valid_namespaces=["modelmesh_langchain"])
    assert isinstance(back, MeshChatModel) and back.mesh is llm.mesh
    assert back.invoke("hi").content.startswith("Hello from")
    assert "config" not in dumpd(MeshChatModel(pool="chat", config=cfg))["kwargs"]


def test_get_num_tokens_offline(llm):
    assert llm.get_num_tokens("Hello, world! How are you?") == 8
    assert llm.get_num_tokens_from_messages([HumanMessage("Hello there")]) > 2


def test_multimodal_blocks_reach_the_provider(llm, servers):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
    pdf = base64.b64encode(b"%PDF-1.4 tiny").decode()
    msg = HumanMessage(
        content=[
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            {
                "type": "file",
                "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{pdf}"},
            },
        ]
    )
    assert llm.invoke([msg]).content == "Hello from m1. You said: describe"
    parts = servers[0].requests[-1].body["messages"][0]["content"]
    assert parts[1]["image_url"]["url"].endswith(png)
    assert parts[2]["file"]["file_data"].endswith(pdf)
