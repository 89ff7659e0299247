"""MeshLLM behaves like LlamaIndex's own LLMs where issue 15 found it did not.

Per-call limits applied and never sent, streamed deltas that never garble an answer,
copies (pickle, cloudpickle, deepcopy, model_copy) that share the mesh, and chat
histories that survive a persist/load round trip with the pydantic this installs.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import time
from typing import Any

import cloudpickle
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.storage.chat_store import SimpleChatStore

from mesh_core._errors import StreamInterruptedError, UnknownPoolError
from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import faults
from modelmesh_llamaindex import MeshLLM
from tests.conftest import config_for

SLOW = {"connect": "5s", "first_token": "10s", "stall": "10s", "total": "10s"}
CONTINUE = {"strategy": "priority-selection", "stream_recovery": "continue"}
LIMIT_KEYS = {"timeout", "request_timeout", "max_retries"}
HI = [ChatMessage(role="user", content="hi")]


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_shared_meshes()


@pytest.fixture
def cfg(servers) -> dict[str, Any]:
    return config_for(servers, pool={"strategy": "priority-selection"})


def sent_bodies(servers) -> list[dict[str, Any]]:
    return [r.body for s in servers for r in s.requests]


# --- bug 1: timeout and max_retries are applied, never sent -------------------------------
@pytest.mark.parametrize("mode", ["chat", "achat", "stream_chat"])
def test_timeout_caps_each_attempt_and_is_not_sent(servers, mode):
    cfg = config_for(servers, pool={"strategy": "priority-selection"})
    for provider in cfg["providers"].values():
        provider["timeouts"] = dict(SLOW)
    servers[0].set("m1", faults.silent() if mode != "stream_chat" else faults.slow_first_token(8))
    llm = MeshLLM(pool="chat", config=cfg, timeout=0.5)
    start = time.monotonic()
    if mode == "chat":
        resp = llm.chat(HI)
    elif mode == "achat":
        resp = asyncio.run(llm.achat(HI))
    else:
        resp = list(llm.stream_chat(HI))[-1]
    assert time.monotonic() - start < 5.0  # 0.5 s attempts on m1, not 10 s ones
    assert resp.raw["model"] == "p2.m2"
    for body in sent_bodies(servers):
        assert not LIMIT_KEYS & set(body), body


def test_max_retries_zero_tries_a_failing_model_once(cfg, servers):
    servers[0].set("m1", faults.server_error(503))
    assert MeshLLM(pool="chat", config=cfg, max_retries=0).chat(HI).raw["model"] == "p2.m2"
    assert servers[0].count("m1") == 1  # the pool's retry.max_attempts is 2
    MeshLLM(pool="chat", config=cfg).complete("hi", max_retries=0)
    assert servers[0].count("m1") == 2
    for body in sent_bodies(servers):
        assert not LIMIT_KEYS & set(body)


# --- bug 2: a restarted stream never garbles the answer ------------------------------------
@pytest.fixture
def recovering(servers) -> dict[str, Any]:
    """m1 cuts its stream after three chunks; m2 rejects prefill; m3 is healthy."""
    servers[0].set("m1", faults.cut(after=3))
    servers[1].set("m2", faults.ok(reject_prefill=True))
    return config_for(servers, pool=CONTINUE, n=3)


def test_deltas_never_carry_two_answers(recovering):
    llm = MeshLLM(pool="chat", config=recovering)
    deltas: list[str] = []
    with pytest.raises(StreamInterruptedError) as ei:
        for resp in llm.stream_chat(HI):
            deltas.append(resp.delta or "")
            assert resp.message.content == "".join(deltas)
    assert "".join(deltas) == ei.value.partial_text == "Hello from m1."


def test_async_deltas_never_carry_two_answers(recovering):
    llm = MeshLLM(pool="chat", config=recovering)

    async def run() -> tuple[list[str], BaseException | None]:
        deltas: list[str] = []
        try:
            async for resp in await llm.astream_complete("hi"):
                deltas.append(resp.delta or "")
        except StreamInterruptedError as exc:
            return deltas, exc
        return deltas, None

    deltas, err = asyncio.run(run())
    assert err is not None and "".join(deltas) == err.partial_text == "Hello from m1."


def test_a_streaming_query_engine_never_shows_a_garbled_answer(recovering):
    index = VectorStoreIndex.from_documents(
        [Document(text="Owls hunt at night.")], embed_model=MockEmbedding(embed_dim=8)
    )
    engine = index.as_query_engine(
        llm=MeshLLM(pool="chat", config=recovering), streaming=True, similarity_top_k=1
    )
    pieces: list[str] = []
    with pytest.raises(StreamInterruptedError) as ei:
        for piece in engine.query("When do owls hunt?").response_gen:
            pieces.append(piece)
    assert "".join(pieces) == ei.value.partial_text == "Hello from m1."


def test_a_continuation_by_prefill_joins_into_one_answer(servers):
    servers[0].set("m1", faults.cut(after=3))
    llm = MeshLLM(pool="chat", config=config_for(servers, pool=CONTINUE, n=3))
    responses = list(llm.stream_chat(HI))
    assert "".join(r.delta or "" for r in responses) == "Hello from m1. You said: hi"
    assert responses[-1].message.content == "Hello from m1. You said: hi"
    assert responses[-1].raw["model"] == "p2.m2"


# --- bug 3: pickle, cloudpickle, deepcopy -----------------------------------------------------
COPIES = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "cloudpickle": lambda m: cloudpickle.loads(cloudpickle.dumps(m)),
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_share_the_mesh_and_log_nothing(cfg, how, caplog):
    llm = MeshLLM(pool="chat", config=cfg, temperature=0.2, additional_kwargs={"user": "u"})
    with caplog.at_level(logging.DEBUG):
        twin = COPIES[how](llm)
        COPIES[how](llm)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert twin.mesh is llm.mesh and twin.config == cfg
    assert (twin.temperature, twin.additional_kwargs) == (0.2, {"user": "u"})
    llm.mesh.deactivate("p1.m1")
    assert twin.chat(HI).raw["model"] == "p2.m2"


def test_a_literal_secret_is_never_pickled(servers):
    cfg = config_for(servers)
    cfg["providers"]["p1"]["api_key"] = "sk-literal-secret-456"
    llm = MeshLLM(pool="chat", config=cfg)
    data = pickle.dumps(llm)
    assert b"sk-literal-secret-456" not in data
    back = pickle.loads(data)
    assert back.config is cfg and back.mesh is llm.mesh  # in this process: the same objects


# --- bug 4: model_copy ------------------------------------------------------------------------
def test_model_copy_takes_a_new_config_and_validates_the_pool(cfg, servers):
    llm = MeshLLM(pool="chat", config=cfg)
    other = config_for(servers)  # a pool of p2.m2 alone
    other["models"] = {"p2.m2": {"provider": "p2"}}
    other["providers"] = {"p2": other["providers"]["p2"]}
    twin = llm.model_copy(update={"config": other})
    assert twin.mesh is not llm.mesh and twin.chat(HI).raw["model"] == "p2.m2"
    assert llm.chat(HI).raw["model"] == "p1.m1"
    with pytest.raises(UnknownPoolError, match="did you mean 'chat'"):
        llm.model_copy(update={"pool": "chta"})
    assert llm.model_copy(update={"model": "p2.m2"}).metadata.model_name == "p2.m2"


# --- dependency floors: chat histories survive a persist/load round trip -----------------
def test_chat_store_round_trip_keeps_the_history(tmp_path):
    """pydantic 2.14 breaks llama-index-core's chat-store serializer (its WrapSerializer
    passes ``info`` where pydantic now checks an index key): pyproject excludes it."""
    store = SimpleChatStore()
    memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="user-1")
    memory.put(ChatMessage(role="user", content="my name is Ada"))
    memory.put(ChatMessage(role="assistant", content="hello Ada"))
    path = tmp_path / "chat.json"
    store.persist(str(path))
    back = SimpleChatStore.from_persist_path(str(path))
    assert [m.content for m in back.get_messages("user-1")] == ["my name is Ada", "hello Ada"]
