"""MeshEmbedding: batches, one space per instance, failover within it, an index built and
queried through the mesh (MeshEmbedding + MeshLLM), events, copies; over real fault servers."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import time
from typing import Any

import cloudpickle
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.embedding import EmbeddingStartEvent

from mesh_core import _errors as errors
from mesh_core._errors import UnknownPoolError
from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import faults
from modelmesh_llamaindex import MeshEmbedding, MeshLLM
from tests.embedding_pools import (
    SPACE_A,
    SPACE_B,
    embedding_config,
    inputs_sent,
    is_unit,
    slow,
)

DOCS = [
    "The Eiffel Tower is in Paris and was finished in 1889.",
    "Owls are nocturnal birds that hunt small mammals at night.",
    "ModelMesh routes every request to a healthy model of a capability pool.",
]


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_shared_meshes()


@pytest.fixture
def cfg(servers) -> dict[str, Any]:
    config = embedding_config(servers)
    # a chat pool over p2 too, for the query engine
    config["models"]["p2.chat"] = {"provider": "p2", "name": "m2"}
    config["pools"]["chat"]["models"] = ["p1.chat", "p2.chat"]
    config["pools"]["chat"]["strategy"] = "priority-selection"
    return config


@pytest.fixture
def emb(cfg) -> MeshEmbedding:
    return MeshEmbedding(pool="embeddings", config=cfg)


def test_vectors_are_deterministic_and_batched_by_embed_batch_size(cfg, servers):
    emb = MeshEmbedding(pool="embeddings", config=cfg, embed_batch_size=2)
    texts = ["alpha", "beta", "gamma", "alpha", "delta"]
    vectors = emb.get_text_embedding_batch(texts)
    assert inputs_sent(servers[0]) == [["alpha", "beta"], ["gamma", "alpha"], ["delta"]]
    assert all(len(v) == 8 and is_unit(v) for v in vectors)
    assert vectors[0] == vectors[3] and vectors[0] != vectors[1]
    assert emb.get_query_embedding("gamma") == vectors[2] == emb.get_text_embedding("gamma")

    async def again() -> list[list[float]]:
        return await emb.aget_text_embedding_batch(texts)

    assert asyncio.run(again()) == vectors
    assert emb.model_name == "embeddings" and emb.pinned_space == SPACE_A
    assert MeshEmbedding(pool="embeddings", config=cfg, space=SPACE_A).model_name == SPACE_A


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failover_stays_in_the_pinned_space(servers, mode):
    cfg = embedding_config(servers, ["p1.ea", "p3.eb", "p2.ea"])
    emb = MeshEmbedding(pool="embeddings", config=cfg)

    def embed(texts: list[str]) -> list[list[float]]:
        if mode == "sync":
            return emb.get_text_embedding_batch(texts)
        return asyncio.run(emb.aget_text_embedding_batch(texts))

    healthy = embed(DOCS)
    servers[0].set("emb-a", faults.server_error(503))
    assert embed(DOCS) == healthy and emb.pinned_space == SPACE_A
    assert not servers[2].requests  # p3.eb, another space, was never asked
    servers[1].set("emb-a", faults.server_error(502))
    with pytest.raises(errors.AllProvidersExhaustedError):
        embed(DOCS)
    assert not servers[2].requests


def test_a_given_space_is_kept(servers):
    cfg = embedding_config(servers, ["p1.ea", "p3.eb"])
    emb = MeshEmbedding(pool="embeddings", config=cfg, space=SPACE_B)
    assert [len(v) for v in emb.get_text_embedding_batch(["a", "b"])] == [16, 16]
    assert not servers[0].requests


def test_concurrent_batches_pin_one_space(servers):
    """``aget_text_embedding_batch`` sends its batches at once; round robin spreads them
    over two spaces, yet every vector belongs to the space pinned first."""
    cfg = embedding_config(servers, ["p1.ea", "p3.eb"], strategy="round-robin")
    emb = MeshEmbedding(pool="embeddings", config=cfg, embed_batch_size=1, num_workers=4)
    texts = [f"text {i}" for i in range(8)]
    vectors = asyncio.run(emb.aget_text_embedding_batch(texts))
    assert servers[0].requests and servers[2].requests  # the batches went to both spaces
    dim = 8 if emb.pinned_space == SPACE_A else 16
    assert [len(v) for v in vectors] == [dim] * len(texts)
    assert vectors == emb.get_text_embedding_batch(texts)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_timeout_caps_each_attempt_and_is_not_sent(servers, mode):
    servers[0].set("emb-a", faults.silent())
    emb = MeshEmbedding(pool="embeddings", config=slow(embedding_config(servers)), timeout=0.5)
    start = time.monotonic()
    if mode == "sync":
        vector = emb.get_query_embedding("x")
    else:
        vector = asyncio.run(emb.aget_query_embedding("x"))
    assert time.monotonic() - start < 5.0  # 0.5 s attempts on p1.ea, not 10 s ones
    assert len(vector) == 8 and inputs_sent(servers[1]) == [["x"]]
    assert not any("timeout" in r.body for s in servers for r in s.requests)


# --- an index built and queried through the mesh ------------------------------------------
@pytest.mark.parametrize("failing", [False, True], ids=["healthy", "failover"])
def test_vector_store_index_with_mesh_embedding_and_mesh_llm(cfg, servers, failing):
    emb = MeshEmbedding(pool="embeddings", config=cfg)
    llm = MeshLLM(pool="chat", config=cfg)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=emb)
    if failing:  # both the query's embedding and the answer fail over to p2
        servers[0].set("emb-a", faults.server_error(503))
        servers[0].set("m1", faults.server_error(503))
    engine = index.as_query_engine(llm=llm, similarity_top_k=1)
    response = engine.query(DOCS[1])
    who = "m2" if failing else "m1"
    assert str(response).startswith(f"Hello from {who}.")
    chat = [r for r in servers[1 if failing else 0].requests if "messages" in r.body]
    prompt = " ".join(str(m.get("content")) for m in chat[-1].body["messages"])
    assert DOCS[1] in prompt and DOCS[0] not in prompt  # the nearest document was retrieved

    async def aquery() -> str:
        return str(await engine.aquery(DOCS[2]))

    assert asyncio.run(aquery()).startswith(f"Hello from {who}.")


def test_settings_embed_model(cfg):
    previous = Settings._embed_model
    try:
        Settings.embed_model = MeshEmbedding(pool="embeddings", config=cfg)
        index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
        nodes = index.as_retriever(similarity_top_k=1).retrieve(DOCS[0])
        assert [n.get_content() for n in nodes] == [DOCS[0]]
    finally:
        Settings._embed_model = previous


def test_embedding_events_name_the_pool_and_the_space(emb):
    seen: list[dict[str, Any]] = []

    class Handler(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, EmbeddingStartEvent):
                seen.append(event.model_dict)

    handler = Handler()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        emb.get_text_embedding("x")
    finally:
        dispatcher.event_handlers.remove(handler)
    assert seen and seen[-1]["class_name"] == "MeshEmbedding"
    assert (seen[-1]["pool"], seen[-1]["model_name"]) == ("embeddings", "embeddings")
    assert "config" not in seen[-1]


# --- copies --------------------------------------------------------------------------------
COPIES = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "cloudpickle": lambda m: cloudpickle.loads(cloudpickle.dumps(m)),
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_share_the_mesh_keep_the_space_and_log_nothing(servers, how, caplog):
    cfg = embedding_config(servers, ["p3.eb", "p1.ea"])
    emb = MeshEmbedding(pool="embeddings", config=cfg, embed_batch_size=4)
    vector = emb.get_query_embedding("x")  # pins space B
    with caplog.at_level(logging.DEBUG):
        twin = COPIES[how](emb)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert twin.mesh is emb.mesh and twin.config == cfg and twin.embed_batch_size == 4
    assert twin.pinned_space == SPACE_B and twin.get_query_embedding("x") == vector


def test_model_copy_and_errors(servers):
    cfg = embedding_config(servers, ["p1.ea", "p3.eb"])
    cfg["providers"]["p1"]["api_key"] = "sk-literal-secret-246"
    emb = MeshEmbedding(pool="embeddings", config=cfg)
    emb.get_query_embedding("x")
    moved = emb.model_copy(update={"space": SPACE_B})
    assert (moved.pinned_space, moved.model_name) == (SPACE_B, SPACE_B)
    named = MeshEmbedding(pool="embeddings", config=cfg, model_name="mine")
    assert named.model_copy(update={"space": SPACE_B}).model_name == "mine"
    assert emb.model_copy(update={"embed_batch_size": 3}).pinned_space == SPACE_A
    with pytest.raises(UnknownPoolError, match="did you mean 'embeddings'"):
        emb.model_copy(update={"pool": "embedings"})
    with pytest.raises(UnknownPoolError):
        MeshEmbedding(pool="embedings", config=cfg)
    with pytest.raises(errors.NoCapableModelError, match="not an embedding model"):
        MeshEmbedding(pool="chat", config=cfg)
    with pytest.raises(errors.InvalidRequestError, match="the pool's spaces"):
        MeshEmbedding(pool="embeddings", config=cfg, space="test/nope@8")
    assert "sk-literal-secret-246" not in repr(emb) + str(emb.to_dict())
    assert b"sk-literal-secret-246" not in pickle.dumps(emb)
