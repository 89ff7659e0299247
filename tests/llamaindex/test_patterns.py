"""LlamaIndex's documentation patterns, with MeshLLM and a failing primary.

Every test runs against fault servers whose first model answers 503, with an offline
``MockEmbedding`` (nothing is downloaded): the patterns must work, transparently, on
the second model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.selectors import PydanticSingleSelector
from llama_index.core.tools import FunctionTool, QueryEngineTool
from llama_index.core.workflow import Context
from pydantic import BaseModel

from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import faults
from modelmesh_llamaindex import MeshLLM
from tests.conftest import config_for

DOCS = [
    "The Eiffel Tower is in Paris and was finished in 1889.",
    "Owls are nocturnal birds that hunt small mammals at night.",
]


@pytest.fixture
def llm(servers) -> MeshLLM:
    servers[0].set("m1", faults.server_error(503))
    yield MeshLLM(pool="chat", config=config_for(servers, pool={"strategy": "priority-selection"}))
    forget_shared_meshes()


@pytest.fixture
def settings(llm):
    """``Settings.llm`` and an offline ``Settings.embed_model``, restored afterwards."""
    saved = (Settings._llm, Settings._embed_model)
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield Settings
    Settings._llm, Settings._embed_model = saved


@pytest.fixture
def index(settings) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])


def answered_by_m2(servers) -> None:
    assert servers[1].count("m2") > 0
    assert all(r.behaviour == "status:503" for r in servers[0].requests)


def test_query_engine_streaming(index, servers):
    response = index.as_query_engine(streaming=True, similarity_top_k=1).query("Owls?")
    pieces = list(response.response_gen)
    assert len(pieces) > 3 and "".join(pieces).startswith("Hello from m2.")
    answered_by_m2(servers)

    async def run() -> str:
        engine = index.as_query_engine(streaming=True, similarity_top_k=1)
        streamed = await engine.aquery("Paris?")
        return "".join([t async for t in streamed.async_response_gen()])

    assert asyncio.run(run()).startswith("Hello from m2.")


@pytest.mark.parametrize(
    "mode", ["simple", "context", "condense_question", "condense_plus_context", "best"]
)
def test_chat_engine_modes(index, servers, mode):
    chat = index.as_chat_engine(chat_mode=mode, similarity_top_k=1)
    first = chat.chat("Tell me about owls")
    assert str(first).startswith("Hello from m2.")
    streamed = chat.stream_chat("And when do they hunt?")
    text = "".join(streamed.response_gen)
    assert text.startswith("Hello from m2.")
    assert [m.role.value for m in chat.chat_history] == ["user", "assistant"] * 2
    assert chat.chat_history[-1].content == text
    answered_by_m2(servers)


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def test_function_agent_memory_across_runs_and_a_serialized_context(llm, servers):
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=llm)

    async def run() -> tuple[str, str, list[dict[str, Any]]]:
        ctx = Context(agent)
        first = await agent.run("What is 6 times 7? Use multiply.", ctx=ctx)
        saved = json.loads(json.dumps(ctx.to_dict()))  # e.g. into a database, and back
        restored = Context.from_dict(agent, saved)
        second = await agent.run("Thanks. What did I ask before?", ctx=restored)
        return str(first), str(second), servers[1].requests_for("m2")[-1].body["messages"]

    first, second, sent = asyncio.run(run())
    assert first == "The tool returned: 42"
    assert second.startswith("Hello from m2.")
    said = [m.get("content") for m in sent]
    assert "What is 6 times 7? Use multiply." in said  # the first run's memory came along
    assert "42" in said


def test_router_query_engine_with_a_pydantic_selector(index, llm, servers):
    owls = QueryEngineTool.from_defaults(
        index.as_query_engine(similarity_top_k=1), description="Facts about owls"
    )
    paris = QueryEngineTool.from_defaults(
        index.as_query_engine(similarity_top_k=1), description="Facts about Paris"
    )
    router = RouterQueryEngine(
        selector=PydanticSingleSelector.from_defaults(llm=llm), query_engine_tools=[owls, paris]
    )
    response = router.query("Tell me about owls")
    assert str(response).startswith("Hello from m2.")
    selection = servers[1].requests_for("m2")[0].body
    assert [t["function"]["name"] for t in selection["tools"]] == ["SingleSelection"]
    assert selection["tool_choice"] == "required"
    assert response.metadata["selector_result"].selections[0].index in (0, 1)


class Song(BaseModel):
    """A song."""

    title: str
    year: int


def test_structured_predict(llm, servers):
    song = llm.structured_predict(
        Song, PromptTemplate("A song from {year}, titled 'Blue'"), year=1999
    )
    assert song == Song(title="Blue", year=1999)
    sllm = llm.as_structured_llm(Song)
    out = sllm.chat([ChatMessage(role="user", content="A song called 'Red' from 2001")])
    assert out.raw == Song(title="Red", year=2001)
    answer = asyncio.run(
        llm.astructured_predict(Song, PromptTemplate("A song from {year}, titled 'Gold'"), year=1)
    )
    assert answer.title == "Gold"
    answered_by_m2(servers)
