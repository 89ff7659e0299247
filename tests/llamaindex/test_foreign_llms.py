"""LlamaIndex LLMs the user already has as pool members: ``MeshLLM.from_models`` and
``type: llamaindex``, over LlamaIndex's real ``OpenAILike`` pointed at fault servers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    TextBlock,
)
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from mesh_core import Mesh
from mesh_core._errors import (
    ConfigurationError,
    ErrorKind,
)
from mesh_core.providers import ForeignProvider
from mesh_core.testing import faults
from modelmesh_llamaindex import MeshLLM
from tests.conftest import FAST
from tests.llamaindex.foreign_helpers import fast, like, user

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9a"
    "wAAAABJRU5ErkJggg=="
)


# --- failover between foreign LLMs ---------------------------------------------------------
@pytest.mark.parametrize("fault", [faults.server_error(503), faults.reset(), faults.unauthorized()])
def test_failover_between_two_foreign_llms(pair, servers, fault):
    servers[0].set("m1", fault)
    resp = pair.chat(user("hello"))
    assert resp.message.content == "Hello from m2. You said: hello"
    assert resp.raw["model"] == "b.m2"
    first = resp.raw["attempts"][0]
    assert first["model_id"] == "a.m1" and first["outcome"] != "success"
    assert "sk-test" not in str(resp.raw["attempts"])
    assert resp.raw["usage"]["completion_tokens"] > 0  # from the foreign reply's usage


def test_failover_between_foreign_llms_async(pair, servers):
    servers[0].set("m1", faults.server_error(500))

    async def run() -> tuple[Any, list[str]]:
        resp = await pair.achat(user("hi async"))
        gen = await pair.astream_chat(user("stream async"))
        return resp, [r.delta async for r in gen]

    resp, deltas = asyncio.run(run())
    assert resp.raw["model"] == "b.m2" and resp.message.content.endswith("You said: hi async")
    assert "".join(deltas) == "Hello from m2. You said: stream async"


def test_the_foreign_answer_is_passed_through(pair, servers):
    servers[0].enqueue("m1", faults.reply("Forty-two."))
    resp = pair.chat(user("question"), temperature=0.5, max_tokens=20)
    assert resp.message.content == "Forty-two."
    assert resp.raw["model"] == "a.m1" and resp.raw["attempts"][0]["outcome"] == "success"
    body = servers[0].requests[-1].body
    assert body["model"] == "m1" and body["temperature"] == 0.5 and body["max_tokens"] == 20
    assert body["messages"] == [{"role": "user", "content": "question"}]
    assert servers[0].requests[-1].authorization == "Bearer sk-test"


def test_a_conversation_with_images_reaches_the_foreign_llm_whole(servers, made):
    llm = MeshLLM.from_models(
        {"a.m1": like(servers[0], "m1")},
        config={"models": {"a.m1": {"features": {"vision": True}}}},  # LlamaIndex can't tell
    )
    made.append(llm)
    png = base64.b64decode(PNG)
    messages = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", blocks=[TextBlock(text="what is this"), ImageBlock(image=png)]),
    ]
    assert llm.chat(messages).message.content == "Hello from m1. You said: what is this"
    system, question = servers[0].requests[-1].body["messages"]
    assert system == {"role": "system", "content": "be brief"}
    assert question["content"][0] == {"type": "text", "text": "what is this"}
    image = question["content"][1]["image_url"]["url"]
    assert image.startswith("data:image/png;base64,") and base64.b64decode(image[22:]) == png


def test_usage_and_cost_come_from_the_foreign_reply(servers, made):
    pricing = {"input_per_1k": 1000.0, "output_per_1k": 2000.0}  # 1 and 2 per token
    llm = MeshLLM.from_models(
        {"a.m1": like(servers[0], "m1")}, config={"models": {"a.m1": {"pricing": pricing}}}
    )
    made.append(llm)
    raw = llm.chat(user("price this")).raw
    usage = raw["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert raw["cost"] == pytest.approx(usage["prompt_tokens"] + 2 * usage["completion_tokens"])


def test_an_unreadable_reply_is_malformed_and_fails_over(pair, servers):
    servers[0].set("m1", faults.raw_body('{"choices": []}'))  # OpenAI's integration: IndexError
    resp = pair.chat(user("hello"))
    assert resp.raw["model"] == "b.m2"
    assert resp.raw["attempts"][0]["outcome"] == ErrorKind.MALFORMED_RESPONSE.value


# --- mixed pools: native providers and foreign LLMs ------------------------------------------
def mixed(servers, native_first: bool) -> MeshLLM:
    config = fast("foreign.m2", "native.m1")
    config["providers"] = {"native": {"base_url": servers[0].base_url, "timeouts": FAST}}
    config["models"]["native.m1"] |= {"provider": "native", "name": "m1"}
    if native_first:
        config["pools"]["default"]["model_priority"] = ["native.m1", "foreign.m2"]
    return MeshLLM.from_models({"foreign.m2": like(servers[1], "m2")}, config=config)


@pytest.mark.parametrize("native_first", [True, False], ids=["native-first", "foreign-first"])
def test_mixed_pool_fails_over_both_ways(servers, made, native_first):
    llm = mixed(servers, native_first)
    made.append(llm)
    assert {m.id for m in llm.mesh.pool("default").models} == {"native.m1", "foreign.m2"}
    order = ["native.m1", "foreign.m2"] if native_first else ["foreign.m2", "native.m1"]
    assert llm.chat(user("one")).raw["model"] == order[0]
    failing = servers[0] if native_first else servers[1]
    failing.set("m1" if native_first else "m2", faults.server_error(503))
    resp = llm.chat(user("two"))
    assert resp.raw["model"] == order[1]
    assert resp.raw["attempts"][0]["model_id"] == order[0]
    assert resp.raw["attempts"][0]["outcome"] == "server_error"


# --- streaming -----------------------------------------------------------------------------
def test_streaming_fails_over_before_the_first_token(pair, servers):
    servers[0].set("m1", faults.slow_first_token(10))  # headers at once, then nothing
    responses = list(pair.stream_chat(user("stream me")))
    assert "".join(r.delta for r in responses) == "Hello from m2. You said: stream me"
    last = responses[-1]
    assert last.raw["model"] == "b.m2"
    assert last.raw["attempts"][0]["outcome"] == ErrorKind.TIMEOUT.value
    assert last.additional_kwargs["finish_reason"] == "stop"
    assert last.raw["usage"]["completion_tokens"] > 0  # include_usage asked for, and read


def test_a_stream_cut_midway_goes_on_on_the_other_foreign_llm(pair, servers):
    servers[0].set("m1", faults.cut(3))
    responses = list(pair.stream_chat(user("tell me a story")))
    assert responses[-1].raw["model"] == "b.m2"
    assert "".join(r.delta for r in responses).startswith("Hello from m1.")  # kept, then...
    prefill = servers[1].requests[-1].body["messages"][-1]  # ...continued by prefill
    assert prefill == {"role": "assistant", "content": "Hello from m1."}
    outcomes = [a["outcome"] for a in responses[-1].raw["attempts"]]
    assert outcomes[-2:] == ["stream_interrupted", "success"]


def test_async_streaming_fails_over_on_an_error_before_the_first_token(pair, servers):
    servers[0].set("m1", faults.rate_limited())

    async def run() -> list[Any]:
        return [r async for r in await pair.astream_chat(user("go"))]

    responses = asyncio.run(run())
    assert responses[-1].message.content == "Hello from m2. You said: go"
    assert responses[-1].raw["attempts"][0]["outcome"] == ErrorKind.RATE_LIMITED.value


# --- tools and structured output -------------------------------------------------------------
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Song(BaseModel):
    title: str
    year: int


def test_function_agent_over_foreign_members_with_failover(pair, servers):
    servers[0].set("m1", faults.server_error(503))
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=pair)

    async def run() -> Any:
        return await agent.run("What is 6 times 7? Use multiply.")

    assert str(asyncio.run(run())) == "The tool returned: 42"
    sent = servers[1].requests[-1].body  # the tool result went back to the foreign LLM
    assert sent["messages"][-1]["role"] == "tool" and sent["messages"][-1]["content"] == "42"
    call = sent["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "multiply" and call["id"]


def test_predict_and_call_and_chat_with_tools(pair, servers):
    tool = FunctionTool.from_defaults(fn=multiply)
    assert str(pair.predict_and_call([tool], user_msg="multiply 3 and 4")) == "12"
    resp = pair.chat_with_tools([tool], user_msg="multiply 5 and 9", tool_required=True)
    [call] = pair.get_tool_calls_from_response(resp)
    assert (call.tool_name, call.tool_kwargs) == ("multiply", {"a": 5, "b": 9})
    body = servers[0].requests[-1].body
    assert body["tool_choice"] == "required"  # the foreign LLM was told, in its own terms
    assert body["tools"][0]["function"]["parameters"]["properties"]["a"]["type"] == "integer"


def test_streamed_tool_call_through_a_foreign_member(pair):
    tool = FunctionTool.from_defaults(fn=multiply)
    *_, last = pair.stream_chat_with_tools([tool], user_msg="multiply 2 and 8")
    [call] = pair.get_tool_calls_from_response(last)
    assert (call.tool_name, call.tool_kwargs) == ("multiply", {"a": 2, "b": 8})
    assert last.additional_kwargs["finish_reason"] == "tool_calls"


def test_structured_output_over_foreign_members(pair, servers):
    servers[0].set("m1", faults.server_error(500))
    song = pair.structured_predict(
        Song, PromptTemplate("A song from {year}, titled 'Blue'"), year="1999"
    )
    assert song == Song(title="Blue", year=1999)
    out = pair.as_structured_llm(Song).chat(user("A song called 'Red' from 2001"))
    assert out.raw == Song(title="Red", year=2001)


def test_response_format_reaches_an_openai_family_llm(pair, servers):
    schema = Song.model_json_schema()
    fmt = {"type": "json_schema", "json_schema": {"name": "Song", "schema": schema}}
    resp = pair.mesh.complete("default", "A song called 'Gold' from 1984", response_format=fmt)
    assert Song.model_validate_json(resp.content or "") == Song(title="Gold", year=1984)
    assert servers[0].requests[-1].body["response_format"] == fmt


# --- YAML: ``type: llamaindex`` ---------------------------------------------------------------
YAML = """
providers:
  li:
    type: llamaindex
    class: "llama_index.llms.openai_like:OpenAILike"
    api_key: sk-from-yaml
    kwargs: {{model: m1, api_base: "{url}", is_chat_model: true, max_retries: 0}}
  backup: {{base_url: "{backup}"}}
models:
  li.m1: {{provider: li}}
  backup.m2: {{provider: backup}}
pools:
  chat:
    capability: chat-completion
    strategy: priority-selection
    retry: {{initial_delay: 10ms}}
"""


def test_yaml_llamaindex_provider_loads_and_answers(servers, tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text(YAML.format(url=servers[0].base_url, backup=servers[1].base_url))
    mesh = Mesh.from_config(path)
    try:
        assert isinstance(mesh.providers["li"], ForeignProvider)
        resp = mesh.complete("chat", "hello yaml")
        assert (resp.model, resp.content) == ("li.m1", "Hello from m1. You said: hello yaml")
        assert servers[0].requests[-1].authorization == "Bearer sk-from-yaml"
        servers[0].set("m1", faults.server_error(503))
        assert mesh.complete("chat", "again").model == "backup.m2"
    finally:
        mesh.close()


def test_yaml_errors_name_the_provider_and_hide_the_key(servers, tmp_path):
    path = tmp_path / "mesh.yaml"
    text = YAML.format(url=servers[0].base_url, backup=servers[1].base_url)
    path.write_text(text.replace("openai_like:OpenAILike", "openai_like:Nope"))
    with pytest.raises(ConfigurationError, match=r"providers\.li\.class"):
        Mesh.from_config(path)
    path.write_text(text.replace("llama_index.llms.openai_like:OpenAILike", "pathlib:Path"))
    with pytest.raises(ConfigurationError, match=r"providers\.li\.class.*not a LlamaIndex LLM"):
        Mesh.from_config(path)
    path.write_text(text.replace("max_retries: 0", "max_retries: [not, a, number]"))
    with pytest.raises(ConfigurationError, match=r"providers\.li\.kwargs") as caught:
        Mesh.from_config(path)
    assert "sk-from-yaml" not in str(caught.value)


def test_from_models_names_providers_pools_and_strategies(servers, made):
    native = {"providers": {"a": {"base_url": servers[2].base_url}}}
    llm = MeshLLM.from_models(
        {"openai.m1": like(servers[0], "m1"), "openai.m2": like(servers[1], "m2")},
        pool="rr",
        strategy="round-robin",
    )
    made.append(llm)
    assert sorted(llm.mesh.providers) == ["openai.m1", "openai.m2"]  # one prefix, two LLMs
    assert llm.mesh.config.pools["rr"].strategy == "round-robin"
    assert {llm.chat(user("x")).raw["model"] for _ in range(4)} == {"openai.m1", "openai.m2"}
    other = MeshLLM.from_models({"a.m1": like(servers[0], "m1")}, config=native)
    made.append(other)
    assert sorted(other.mesh.providers) == ["a", "a.m1"]  # "a" was the configuration's


def test_from_models_refuses_what_is_not_a_llamaindex_llm():
    with pytest.raises(ConfigurationError, match=r"models\.x\.y.*LlamaIndex LLM"):
        MeshLLM.from_models({"x.y": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one"):
        MeshLLM.from_models({})
