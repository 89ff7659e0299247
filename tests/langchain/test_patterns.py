"""LangChain's documentation patterns, with MeshChatModel and a failing primary.

Every test runs against fault servers whose first model answers 503: the patterns
must work, transparently, on the second. Scripted replies (``enqueue``) stand in for
a model where an answer's shape matters (structured output after a tool result).
"""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from typing import Any

import cloudpickle
import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import ModelAPIError, ModelRateLimitError
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import faults
from modelmesh_langchain import MeshChatModel
from tests.conftest import config_for

PROMPT = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{topic}")])


@pytest.fixture
def cfg(servers) -> dict[str, Any]:
    """Pool ``chat``: p1.m1 (answers 503) then p2.m2; pool ``backup``: p3.m3."""
    servers[0].set("m1", faults.server_error(503))
    config = config_for(servers, pool={"strategy": "priority-selection"}, n=3)
    config["pools"]["chat"] = {
        "models": ["p1.m1", "p2.m2"],
        "strategy": "priority-selection",
        "retry": {"initial_delay": "10ms"},
    }
    config["pools"]["backup"] = {"models": ["p3.m3"]}
    yield config
    forget_shared_meshes()


@pytest.fixture
def llm(cfg) -> MeshChatModel:
    return MeshChatModel(pool="chat", config=cfg)


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"It is sunny in {city}."


class WeatherReport(BaseModel):
    """A weather report."""

    city: str
    conditions: str


def test_lcel_batch(llm):
    chain = PROMPT | llm | StrOutputParser()
    topics = [{"topic": t} for t in ("owls", "tides", "moss")]
    assert chain.batch(topics) == [f"Hello from m2. You said: {t['topic']}" for t in topics]
    assert asyncio.run(chain.abatch(topics, config={"max_concurrency": 2}))[2].endswith("moss")
    streamed = "".join(chain.stream({"topic": "owls"}))
    assert streamed == "Hello from m2. You said: owls"


def test_create_agent_with_tools(llm, servers):
    agent = create_agent(llm, tools=[get_weather], system_prompt="Use tools.")
    out = agent.invoke({"messages": [HumanMessage("What is the weather in 'Paris'?")]})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert out["messages"][2].content == "It is sunny in Paris."
    assert out["messages"][-1].content == "The tool returned: It is sunny in Paris."
    assert out["messages"][-1].response_metadata["model_name"] == "p2.m2"


def test_create_agent_response_format_uses_the_provider_strategy(llm, servers):
    """The profile says the pool has structured output: the agent asks for a JSON schema."""
    report = {"city": "Paris", "conditions": "sunny"}
    servers[1].enqueue("m2", faults.ok(), faults.reply(json.dumps(report)))
    agent = create_agent(llm, tools=[get_weather], response_format=WeatherReport)
    out = agent.invoke({"messages": [HumanMessage("What is the weather in 'Paris'?")]})
    assert out["structured_response"] == WeatherReport(**report)
    last = servers[1].requests_for("m2")[-1].body
    assert last["response_format"]["type"] == "json_schema"
    assert last["response_format"]["json_schema"]["name"] == "WeatherReport"
    explicit = create_agent(llm, response_format=ProviderStrategy(WeatherReport))
    out = explicit.invoke({"messages": [HumanMessage("A report for 'Oslo'")]})
    assert out["structured_response"].city == "Oslo"


def test_create_agent_response_format_with_the_tool_strategy(llm, servers):
    report = {"city": "Paris", "conditions": "sunny"}
    servers[1].enqueue("m2", faults.ok(), faults.tool_call("WeatherReport", report))
    agent = create_agent(llm, tools=[get_weather], response_format=ToolStrategy(WeatherReport))
    out = agent.invoke({"messages": [HumanMessage("What is the weather in 'Paris'?")]})
    assert out["structured_response"] == WeatherReport(**report)
    bodies = [r.body for r in servers[1].requests_for("m2")]
    assert all(b["tool_choice"] == "required" for b in bodies[-2:])
    names = {t["function"]["name"] for t in bodies[-1]["tools"]}
    assert names == {"get_weather", "WeatherReport"}


def test_a_checkpointer_keeps_the_conversation_across_three_turns(llm, servers):
    agent = create_agent(llm, tools=[get_weather], checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t-1"}}
    for turn in ("My name is Ada.", "What is the weather in 'Rome'?", "And my name?"):
        out = agent.invoke({"messages": [HumanMessage(turn)]}, thread)
    contents = [m.content for m in out["messages"]]
    assert contents[0] == "My name is Ada." and contents[-1].endswith("And my name?")
    assert "It is sunny in Rome." in contents
    sent = servers[1].requests_for("m2")[-1].body["messages"]
    assert sent[0]["content"] == "My name is Ada." and len(sent) == len(out["messages"]) - 1
    other = agent.invoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "2"}})
    assert len(other["messages"]) == 2  # another thread starts afresh


def test_callbacks_see_the_run(llm):
    class Record(BaseCallbackHandler):
        def __init__(self) -> None:
            self.events: list[str] = []
            self.tokens: list[str] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
            self.events.append(f"start:{kw['invocation_params']['pool']}")

        def on_llm_new_token(self, token: str, **kw: Any) -> None:
            self.tokens.append(token)

        def on_llm_end(self, response: Any, **kw: Any) -> None:
            info = response.generations[0][0].generation_info or {}
            self.events.append(f"end:{info.get('model_name')}")

    record = Record()
    chain = PROMPT | llm | StrOutputParser()
    chain.invoke({"topic": "owls"}, config={"callbacks": [record]})
    text = "".join(chain.stream({"topic": "bees"}, config={"callbacks": [record]}))
    assert record.events == ["start:chat", "end:p2.m2", "start:chat", "end:p2.m2"]
    assert "".join(record.tokens) == text


def test_with_fallbacks(cfg, servers):
    servers[1].set("m2", faults.server_error(503))  # the whole pool fails
    primary = MeshChatModel(pool="chat", config=cfg, max_retries=0)
    backup = MeshChatModel(pool="backup", config=cfg)
    chain = PROMPT | primary.with_fallbacks([backup], exceptions_to_handle=(ModelAPIError,))
    msg = chain.invoke({"topic": "owls"})
    assert msg.response_metadata["model_name"] == "p3.m3"


def test_with_retry_on_langchains_rate_limit_error(cfg, servers):
    servers[1].enqueue("m2", faults.rate_limited(), faults.rate_limited())
    llm = MeshChatModel(pool="chat", config=cfg, max_retries=0)
    retrying = llm.with_retry(
        retry_if_exception_type=(ModelRateLimitError,),
        stop_after_attempt=3,
        wait_exponential_jitter=False,
    )
    assert retrying.invoke("hi").response_metadata["model_name"] == "p2.m2"
    assert servers[1].count("m2") == 3


def test_configurable_fields(llm, servers):
    configurable = llm.configurable_fields(
        temperature=ConfigurableField(id="temperature"), pool=ConfigurableField(id="pool")
    )
    configurable.with_config(configurable={"temperature": 0.9}).invoke("hi")
    assert servers[1].requests_for("m2")[-1].body["temperature"] == 0.9
    msg = configurable.with_config(configurable={"pool": "backup"}).invoke("hi")
    assert msg.response_metadata["model_name"] == "p3.m3"


@pytest.mark.parametrize(
    "duplicate",
    [
        copy.deepcopy,
        lambda r: pickle.loads(pickle.dumps(r)),
        lambda r: cloudpickle.loads(cloudpickle.dumps(r)),
    ],
    ids=["deepcopy", "pickle", "cloudpickle"],
)
def test_chains_and_agents_survive_copies(llm, duplicate):
    chain = duplicate(PROMPT | llm | StrOutputParser())
    assert chain.invoke({"topic": "owls"}) == "Hello from m2. You said: owls"
    bound = duplicate(llm.bind_tools([get_weather]))
    msg = bound.invoke("What is the weather in 'Lima'?")
    assert isinstance(msg, AIMessage) and msg.tool_calls[0]["args"] == {"city": "Lima"}
    history = [HumanMessage("hi"), AIMessage("hello"), ToolMessage("x", tool_call_id="1")]
    assert duplicate(history) == history
