"""MeshEmbeddings: LangChain's standard embeddings suites, one space per instance, failover
within it, vector stores and retrievers, copies, typed errors; over real fault servers."""

from __future__ import annotations

import asyncio
import copy
import pickle
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cloudpickle
import pytest
import yaml
from langchain_core.exceptions import ModelAPIError, ModelInvalidRequestError, ModelRateLimitError
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from mesh_core import _errors as errors
from mesh_core._errors import UnknownPoolError
from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import FaultServer, faults
from modelmesh_langchain import MeshEmbeddings
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
    return embedding_config(servers)


@pytest.fixture
def emb(cfg) -> MeshEmbeddings:
    return MeshEmbeddings(pool="embeddings", config=cfg)


# --- LangChain's standard suites ---------------------------------------------------------
_SERVERS: list[FaultServer] = []

# Unit tests make no calls: a static configuration in a file, so that initialization
# from $MODELMESH_CONFIG is exercised too.
_UNIT_CONFIG_PATH = Path(tempfile.mkdtemp(prefix="modelmesh-")) / "modelmesh.yaml"
_NOWHERE = SimpleNamespace(base_url="http://127.0.0.1:9/v1")
_UNIT_CONFIG_PATH.write_text(yaml.safe_dump(embedding_config([_NOWHERE] * 3)))  # type: ignore[list-item]


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    while _SERVERS:
        _SERVERS.pop().stop()


class TestMeshEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[MeshEmbeddings]:
        return MeshEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"pool": "embeddings", "config": str(_UNIT_CONFIG_PATH)}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"MODELMESH_CONFIG": str(_UNIT_CONFIG_PATH)},
            {"pool": "embeddings", "space": SPACE_A},
            {"pool": "embeddings", "space": SPACE_A, "pinned_space": SPACE_A},
        )


class TestMeshEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[MeshEmbeddings]:
        return MeshEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        if not _SERVERS:
            _SERVERS.extend(FaultServer().start() for _ in range(3))
        return {"pool": "embeddings", "config": embedding_config(_SERVERS)}


# --- vectors -------------------------------------------------------------------------------
def test_vectors_are_deterministic_unit_length_and_in_input_order(emb, cfg, servers):
    docs = emb.embed_documents(["alpha", "beta", "alpha"])
    assert len(docs) == 3 and all(len(v) == 8 and is_unit(v) for v in docs)
    assert docs[0] == docs[2] and docs[0] != docs[1]
    assert emb.embed_query("beta") == docs[1]  # a query lands in the documents' space
    forget_shared_meshes()  # a new mesh, new connections: the same vectors
    assert MeshEmbeddings(pool="embeddings", config=cfg).embed_documents(["beta"]) == [docs[1]]
    assert inputs_sent(servers[0])[0] == ["alpha", "beta", "alpha"]  # one request for the batch
    assert emb.embed_documents([]) == []


def test_the_first_call_pins_the_space(servers):
    emb = MeshEmbeddings(pool="embeddings", config=embedding_config(servers, ["p3.eb", "p1.ea"]))
    assert emb.pinned_space is None and emb.embed_documents([]) == []
    assert emb.pinned_space is None  # nothing was embedded: nothing pinned
    assert len(emb.embed_query("x")) == 16
    assert emb.pinned_space == SPACE_B


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failover_stays_in_the_pinned_space(servers, mode):
    # p1.ea first; p3.eb (another space) comes before p2.ea in priority.
    cfg = embedding_config(servers, ["p1.ea", "p3.eb", "p2.ea"])
    emb = MeshEmbeddings(pool="embeddings", config=cfg)

    def embed(texts: list[str]) -> list[list[float]]:
        if mode == "sync":
            return emb.embed_documents(texts)
        return asyncio.run(emb.aembed_documents(texts))

    healthy = embed(DOCS)
    assert emb.pinned_space == SPACE_A
    servers[0].set("emb-a", faults.server_error(503))
    assert embed(DOCS) == healthy  # p2.ea, the same model elsewhere: the same vectors
    assert inputs_sent(servers[1]) == [DOCS] and not servers[2].requests
    servers[1].set("emb-a", faults.rate_limited())
    with pytest.raises(ModelRateLimitError) as info:  # never p3.eb's vectors instead
        embed(DOCS)
    assert isinstance(info.value, errors.AllProvidersExhaustedError)
    assert not servers[2].requests


def test_a_given_space_is_kept_from_the_start(servers):
    cfg = embedding_config(servers, ["p1.ea", "p3.eb"])
    emb = MeshEmbeddings(pool="embeddings", config=cfg, space=SPACE_B)
    assert emb.pinned_space == SPACE_B
    assert [len(v) for v in emb.embed_documents(["a", "b"])] == [16, 16]
    assert not servers[0].requests
    servers[2].set("emb-b", faults.server_error(500))
    with pytest.raises(ModelAPIError):
        emb.embed_query("a")
    assert not servers[0].requests  # space A could serve, but is another space


def test_a_space_the_pool_lacks_is_a_clear_error_at_once(cfg, servers):
    with pytest.raises(errors.InvalidRequestError, match="test/nope@8") as info:
        MeshEmbeddings(pool="embeddings", config=cfg, space="test/nope@8")
    assert SPACE_A in str(info.value)  # the pool's spaces
    emb = MeshEmbeddings(pool="embeddings", config=cfg)
    with pytest.raises(errors.InvalidRequestError, match="test/nope@8"):
        emb.model_copy(update={"space": "test/nope@8"})
    assert not any(s.requests for s in servers)  # checked without calling anybody


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_concurrent_first_calls_pin_one_space(servers, mode):
    """Round robin over two spaces: concurrent first calls land on both, yet every
    vector that comes back belongs to the one space that was pinned first."""
    cfg = embedding_config(servers, ["p1.ea", "p3.eb"], strategy="round-robin")
    emb = MeshEmbeddings(pool="embeddings", config=cfg)
    texts = [f"text {i}" for i in range(8)]
    if mode == "threads":
        with ThreadPoolExecutor(8) as pool:
            vectors = list(pool.map(emb.embed_query, texts))
    else:

        async def run() -> list[list[float]]:
            return list(await asyncio.gather(*(emb.aembed_query(t) for t in texts)))

        vectors = asyncio.run(run())
        # every task chose its model before any reply came: both spaces were asked
        assert servers[0].requests and servers[2].requests
    dim = 8 if emb.pinned_space == SPACE_A else 16
    assert emb.pinned_space in (SPACE_A, SPACE_B)
    assert [len(v) for v in vectors] == [dim] * len(texts)
    assert vectors == emb.embed_documents(texts)  # and the same vectors as a later batch


@pytest.mark.parametrize("field", ["timeout", "request_timeout"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_timeout_caps_each_attempt_and_is_not_sent(servers, field, mode):
    servers[0].set("emb-a", faults.silent())
    emb = MeshEmbeddings(pool="embeddings", config=slow(embedding_config(servers)), **{field: 0.5})
    start = time.monotonic()
    vector = emb.embed_query("x") if mode == "sync" else asyncio.run(emb.aembed_query("x"))
    assert time.monotonic() - start < 5.0  # 0.5 s attempts on p1.ea, not 10 s ones
    assert len(vector) == 8 and inputs_sent(servers[1]) == [["x"]]
    assert not any("timeout" in r.body for s in servers for r in s.requests)


# --- vector stores and retrievers -------------------------------------------------------------
def test_in_memory_vector_store_finds_the_document(emb, servers):
    store = InMemoryVectorStore(embedding=emb)
    store.add_texts(DOCS)
    assert [d.page_content for d in store.similarity_search(DOCS[1], k=1)] == [DOCS[1]]
    servers[0].set("emb-a", faults.server_error(503))  # the query embeds elsewhere, same space
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert [d.page_content for d in retriever.invoke(DOCS[2])] == [DOCS[2]]

    async def search() -> list[str]:
        return [d.page_content for d in await store.asimilarity_search(DOCS[0], k=1)]

    assert asyncio.run(search()) == [DOCS[0]]


# --- copies --------------------------------------------------------------------------------
COPIES = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "cloudpickle": lambda m: cloudpickle.loads(cloudpickle.dumps(m)),
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_share_the_mesh_and_keep_the_pinned_space(servers, how):
    cfg = embedding_config(servers, ["p3.eb", "p1.ea"])
    emb = MeshEmbeddings(pool="embeddings", config=cfg, timeout=5)
    vector = emb.embed_query("x")  # pins space B
    twin = COPIES[how](emb)
    assert twin.mesh is emb.mesh and twin.config == cfg and twin.timeout == 5
    assert twin.pinned_space == SPACE_B
    emb.mesh.deactivate("p3.eb")  # one state: the copy sees it, and keeps to its space
    with pytest.raises(errors.NoAvailableModelError):
        twin.embed_query("x")
    emb.mesh.recover("p3.eb")
    assert twin.embed_query("x") == vector


def test_model_copy_with_a_new_pool_or_space_starts_over(servers):
    cfg = embedding_config(servers, ["p1.ea", "p3.eb"])
    emb = MeshEmbeddings(pool="embeddings", config=cfg)
    emb.embed_query("x")
    assert emb.model_copy().pinned_space == SPACE_A
    assert emb.model_copy(update={"timeout": 3}).pinned_space == SPACE_A
    assert emb.model_copy(update={"space": SPACE_B}).pinned_space == SPACE_B
    with pytest.raises(UnknownPoolError, match="did you mean 'embeddings'"):
        emb.model_copy(update={"pool": "embedings"})


# --- errors and secrets -------------------------------------------------------------------
def test_a_wrong_pool_fails_at_construction(cfg):
    with pytest.raises(UnknownPoolError, match="did you mean 'embeddings'"):
        MeshEmbeddings(pool="embedings", config=cfg)


def test_a_pool_that_cannot_embed_fails_at_construction(cfg):
    with pytest.raises(
        errors.NoCapableModelError, match=r"pool 'chat'.*p1\.chat: not an embedding"
    ):
        MeshEmbeddings(pool="chat", config=cfg)


def test_request_errors_are_langchain_typed_errors(servers):
    cfg = embedding_config(servers, ["p3.eb"])
    emb = MeshEmbeddings(pool="embeddings", config=cfg)
    servers[2].set("emb-b", faults.error(400, "bad input"))
    with pytest.raises(ModelInvalidRequestError) as info:
        emb.embed_query("x")
    assert isinstance(info.value, errors.BadRequestError)
    with pytest.raises(ModelInvalidRequestError, match="texts\\[1\\] must be a string"):
        emb.embed_documents(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ModelInvalidRequestError, match="use embed_query"):
        emb.embed_documents("one text")  # type: ignore[arg-type]


def test_the_configuration_is_never_shown(servers):
    cfg = embedding_config(servers)
    cfg["providers"]["p1"]["api_key"] = "sk-literal-secret-789"
    emb = MeshEmbeddings(pool="embeddings", config=cfg)
    assert "sk-literal-secret-789" not in repr(emb) + str(emb.model_dump())
    assert b"sk-literal-secret-789" not in pickle.dumps(emb)
