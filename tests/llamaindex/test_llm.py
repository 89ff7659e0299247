"""MeshLLM as a query engine, chat engine and agent LLM, over real fault servers."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
)
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import faults
from modelmesh_llamaindex import MeshLLM
from tests.conftest import config_for

DOCS = [
    "The Eiffel Tower is in Paris and was finished in 1889.",
    "Owls are nocturnal birds that hunt small mammals at night.",
    "ModelMesh routes every request to a healthy model of a capability pool.",
]


class HashEmbedding(BaseEmbedding):
    """Offline bag-of-words embedding: each word hashed into one of 64 dimensions."""

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * 64
        for word in re.findall(r"[a-z]+", text.lower()):
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)


@pytest.fixture
def cfg(servers) -> dict[str, Any]:
    config = config_for(
        servers,
        models={
            "p1.m1": {"context_window": 16000},
            "p2.m2": {"context_window": 8000, "features": {"vision": True}},
        },
    )
    config["models"]["p1.m1"]["features"] = {"vision": True}
    yield config
    forget_shared_meshes()


@pytest.fixture
def llm(cfg) -> MeshLLM:
    return MeshLLM(pool="chat", config=cfg)


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(text=t) for t in DOCS], embed_model=HashEmbedding()
    )


def last_prompt(server) -> str:
    return " ".join(str(m.get("content")) for m in server.requests[-1].body["messages"])


@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_query_engine_answers_from_the_index(index, llm, servers, failing):
    if failing:
        servers[0].set("m1", faults.server_error(503))
    engine = index.as_query_engine(llm=llm, similarity_top_k=1)
    response = engine.query("Where is the Eiffel Tower?")
    who = "m2" if failing else "m1"
    assert str(response).startswith(f"Hello from {who}.")
    server = servers[1] if failing else servers[0]
    assert "finished in 1889" in last_prompt(server)  # the retrieved context reached the model
    assert "Owls" not in last_prompt(server)


@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_streaming_query_engine(index, llm, servers, failing):
    if failing:
        servers[0].set("m1", faults.reset())
    engine = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=1)
    response = engine.query("What do owls hunt?")
    pieces = list(response.response_gen)
    assert len(pieces) > 3
    assert "".join(pieces).startswith("Hello from m2." if failing else "Hello from m1.")


def test_async_query_and_chat_engine(index, llm, servers):
    servers[0].set("m1", faults.silent())

    async def run():
        engine = index.as_query_engine(llm=llm, similarity_top_k=1)
        answer = await engine.aquery("What does ModelMesh do?")
        chat = index.as_chat_engine(chat_mode="context", llm=llm)
        first = await chat.achat("Tell me about owls")
        second = await chat.achat("And at what time?")
        return answer, first, second

    answer, first, second = asyncio.run(run())
    assert str(answer).startswith("Hello from m2.")
    assert str(first).startswith("Hello from m2.") and str(second).startswith("Hello from m2.")
    history = servers[1].requests[-1].body["messages"]
    assert [m["role"] for m in history][-3:] == ["user", "assistant", "user"]


def test_sync_chat_engine_streams(index, llm, servers):
    chat = index.as_chat_engine(chat_mode="context", llm=llm)
    streamed = chat.stream_chat("Tell me about Paris")
    assert "".join(streamed.response_gen).startswith("Hello from m1.")


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_function_agent_calls_a_tool(llm, servers, failing):
    if failing:
        servers[0].set("m1", faults.server_error(503))
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=llm)

    async def run():
        return await agent.run("What is 6 times 7? Use multiply.")

    result = asyncio.run(run())
    assert str(result) == "The tool returned: 42"
    server = servers[1] if failing else servers[0]
    tool_msg = server.requests[-1].body["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["content"] == "42" and tool_msg["tool_call_id"]
    call = server.requests[-1].body["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "multiply"


def test_chat_with_tools_predict_and_call_and_tool_calls(llm, servers):
    tool = FunctionTool.from_defaults(fn=multiply)
    resp = llm.chat_with_tools([tool], user_msg="multiply 3 and 5", tool_required=True)
    calls = llm.get_tool_calls_from_response(resp)
    assert calls[0].tool_name == "multiply" and calls[0].tool_kwargs == {"a": 3, "b": 5}
    assert servers[0].requests[-1].body["tool_choice"] == "required"
    out = llm.predict_and_call([tool], user_msg="multiply 2 and 9")
    assert str(out) == "18"
    plain = llm.chat([ChatMessage(role="user", content="no tools here")])
    assert llm.get_tool_calls_from_response(plain, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="tool call"):
        llm.get_tool_calls_from_response(plain)


class Song(BaseModel):
    """A song."""

    title: str
    year: int


def test_structured_predict_and_structured_llm(llm, servers):
    from llama_index.core.prompts import PromptTemplate

    song = llm.structured_predict(
        Song, PromptTemplate("A song from {year}, titled 'Blue'"), year="1999"
    )
    assert song == Song(title="Blue", year=1999)
    sllm = llm.as_structured_llm(Song)
    out = sllm.chat([ChatMessage(role="user", content="A song called 'Red' from 2001")])
    assert out.raw == Song(title="Red", year=2001)


def test_metadata_tells_the_truth_about_the_pool(cfg, llm):
    meta = llm.metadata
    assert meta.context_window == 8000  # every model can honour it
    assert meta.is_chat_model and meta.is_function_calling_model
    assert meta.model_name == "chat"
    for m in cfg["models"].values():
        m.setdefault("features", {})["tool_calling"] = False
    no_tools = MeshLLM(pool="chat", config=cfg, max_tokens=77)
    assert not no_tools.metadata.is_function_calling_model
    assert no_tools.metadata.num_output == 77
    assert MeshLLM(pool="chat", config=cfg, model="p1.m1").metadata.context_window == 16000


def test_responses_say_who_answered_and_what_was_tried(llm, servers):
    servers[0].set("m1", faults.server_error(503))
    resp = llm.chat([ChatMessage(role="user", content="hi")])
    assert resp.raw["model"] == "p2.m2" and resp.raw["pool"] == "chat"
    assert [a["outcome"] for a in resp.raw["attempts"]] == [
        "server_error",
        "server_error",
        "success",
    ]
    assert resp.additional_kwargs["model"] == "p2.m2"
    assert resp.additional_kwargs["total_tokens"] > 0
    last = list(llm.stream_chat([ChatMessage(role="user", content="hi")]))[-1]
    assert last.raw["model"] == "p2.m2" and last.raw["attempts"][-1]["outcome"] == "success"


def test_instrumentation_events_fire(llm, servers):
    seen: list[str] = []

    class Collect(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "Collect"

        def handle(self, event: Any, **kwargs: Any) -> None:
            seen.append(type(event).__name__)

    dispatcher = get_dispatcher()
    handler = Collect()
    dispatcher.add_event_handler(handler)
    try:
        llm.chat([ChatMessage(role="user", content="hi")])
        list(llm.stream_chat([ChatMessage(role="user", content="hi")]))
        asyncio.run(llm.acomplete("hi"))
    finally:
        dispatcher.event_handlers.remove(handler)
    assert seen.count(LLMChatStartEvent.__name__) >= 2
    assert seen.count(LLMChatEndEvent.__name__) >= 2
    assert LLMChatInProgressEvent.__name__ in seen
    assert "LLMCompletionStartEvent" in seen and "LLMCompletionEndEvent" in seen


def test_shares_state_with_the_langchain_adapter(cfg, servers):
    from modelmesh_langchain import MeshChatModel

    li = MeshLLM(pool="chat", config=cfg)
    lc = MeshChatModel(pool="chat", config=cfg)
    assert li.mesh is lc.mesh
    servers[0].set("m1", faults.quota_exhausted())
    assert lc.invoke("hi").response_metadata["model_name"] == "p2.m2"
    assert li.chat([ChatMessage(role="user", content="hi")]).raw["model"] == "p2.m2"
    assert servers[0].count("m1") == 1  # the LlamaIndex call saw m1 already in standby


def test_image_blocks_reach_the_provider(llm, servers):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    msg = ChatMessage(
        role="user",
        blocks=[TextBlock(text="what is this"), ImageBlock(image=png, image_mimetype="image/png")],
    )
    assert llm.chat([msg]).message.content == "Hello from m1. You said: what is this"
    parts = servers[0].requests[-1].body["messages"][0]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
