"""Hostile embedding replies and hostile use of embedding pools, over real HTTP (the fault
server on 127.0.0.1): every answer is the vectors, in input order and in one space, or a
documented mesh error; never a raw Python exception, a hang, or vectors of another space."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mesh_core import (
    AllProvidersExhaustedError,
    EmbeddingRequest,
    Mesh,
    ModelMeshError,
    NoCapableModelError,
)
from mesh_core._errors import ConfigurationError, MalformedResponseError, NoAvailableModelError
from mesh_core._types import Usage
from mesh_core.providers import EmbeddingReply, ParsedEmbeddings, Timeouts
from mesh_core.providers._embeddings import parse_openai_embeddings
from mesh_core.testing import FaultServer, faults
from mesh_core.testing._embedding_wire import fake_vector
from tests.embedding_mesh import Meshes, config, model


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


@pytest.fixture
def make(server: FaultServer) -> Iterator[Meshes]:
    meshes = Meshes(server)
    yield meshes
    meshes.close()


def pair(make: Any) -> Mesh:
    """Two OpenAI members of one 8-dimension space: m1 first, m2 the failover."""
    return make({"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")})


def body(*items: Any) -> str:
    return json.dumps({"data": list(items)})


# --- hostile replies fail over, never reach the caller --------------------------------------

HOSTILE = {
    "ten million floats": '{"data": [{"index": 0, "embedding": [' + "0," * 9_999_999 + "0]}]}",
    "Infinity": '{"data": [{"index": 0, "embedding": [Infinity, 0, 0, 0, 0, 0, 0, 0]}]}',
    "-Infinity": '{"data": [{"index": 0, "embedding": [1, 0, 0, 0, 0, 0, 0, -Infinity]}]}',
    "huge int": '{"data": [{"index": 0, "embedding": [' + "9" * 400 + ", 0, 0, 0, 0, 0, 0, 0]}]}",
    "strings": body({"index": 0, "embedding": ["1", "2", "3", "4", "5", "6", "7", "8"]}),
    "booleans": body({"index": 0, "embedding": [True] * 8}),
    "nested": body({"index": 0, "embedding": [[0.1] * 8]}),
    "null items": body({"index": 0, "embedding": [None] * 8}),
    "object": body({"index": 0, "embedding": {"0": 1.0}}),
    "invalid base64": body({"index": 0, "embedding": "!!!not base64!!!"}),
    "valid base64": body({"index": 0, "embedding": "AACAPwAAgD8AAIA/AACAPw=="}),
    "fewer vectors": body(),
    "index too large": body({"index": 1, "embedding": [0.1] * 8}),
    "negative index": body({"index": -1, "embedding": [0.1] * 8}),
    "float index": body({"index": 0.0, "embedding": [0.1] * 8}),
    "data not a list": '{"data": {"0": [0.1]}}',
    "item not an object": '{"data": [[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}',
    "deeply nested": '{"data": ' + "[" * 100_000 + "]" * 100_000 + "}",
}


@pytest.mark.parametrize("reply", HOSTILE.values(), ids=list(HOSTILE))
def test_a_hostile_reply_is_malformed_and_fails_over(
    server: FaultServer, make: Any, reply: str
) -> None:
    mesh = pair(make)
    server.set("m1", faults.raw_body(reply))
    r = mesh.embed("emb", ["x"])
    assert r.model == "oa2.e" and r.vectors == [fake_vector("x", "m2", 8)]
    assert r.attempts[0].outcome == "malformed_response"


@pytest.mark.parametrize(
    "reply",
    [
        body({"index": 0, "embedding": [0.1] * 8}, {"index": 0, "embedding": [0.2] * 8}),
        body({"index": 1, "embedding": [0.1] * 8}, {"index": 1, "embedding": [0.2] * 8}),
        body(*({"index": i, "embedding": [0.1] * 8} for i in range(3))),
    ],
    ids=["duplicate 0", "duplicate 1", "more vectors than texts"],
)
def test_duplicate_or_surplus_vectors_are_refused(reply: str) -> None:
    request = EmbeddingRequest(model="emb", texts=["a", "b"])
    try:
        got = parse_openai_embeddings(reply.encode(), request)
    except MalformedResponseError:
        return
    # the only acceptable non-error: one distinct vector per text, by index
    pytest.fail(f"accepted {got.vectors!r}")


def test_out_of_order_indices_are_put_back_by_index_not_position() -> None:
    request = EmbeddingRequest(model="emb", texts=["a", "b", "c"])
    reply = body(
        {"index": 2, "embedding": [2.0, 2.0]},
        {"index": 0, "embedding": [0.0, 0.5]},
        {"index": 1, "embedding": [1.0, 1.0]},
    )
    got = parse_openai_embeddings(reply.encode(), request)
    assert got.vectors == [[0.0, 0.5], [1.0, 1.0], [2.0, 2.0]]


def test_every_member_hostile_is_exhausted_not_a_raw_error(server: FaultServer, make: Any) -> None:
    mesh = pair(make)
    server.set("m1", faults.raw_body(HOSTILE["strings"]))
    server.set("m2", faults.raw_body(HOSTILE["Infinity"]))
    with pytest.raises(AllProvidersExhaustedError) as info:
        mesh.embed("emb", ["x"])
    assert [a.outcome for a in info.value.attempts] == ["malformed_response"] * 2


# --- providers of one's own are held to the same checks -------------------------------------


class _Own:
    """A provider of one's own with ``embed``: answers ``vectors(texts)``."""

    def __init__(self, provider_id: str, vectors: Any) -> None:
        self.provider_id, self.vectors = provider_id, vectors

    def embed(self, name: str, request: EmbeddingRequest, t: Timeouts) -> EmbeddingReply:
        return EmbeddingReply(ParsedEmbeddings(self.vectors(request.texts), None))

    async def aembed(self, name: str, request: EmbeddingRequest, t: Timeouts) -> EmbeddingReply:
        return self.embed(name, request, t)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


@pytest.mark.parametrize(
    "vector",
    [[math.nan] * 8, [math.inf] + [0.0] * 7, ["a"] * 8, [None] * 8, [True] * 8, [[0.1]] * 8],
    ids=["NaN", "inf", "strings", "None", "booleans", "nested"],
)
def test_a_provider_of_ones_own_cannot_return_garbage(server: FaultServer, vector: Any) -> None:
    cfg = config(server, {"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")})
    built = Mesh.from_config(cfg).config
    bad = _Own("oa", lambda texts: [list(vector) for _ in texts])
    good = _Own("oa2", lambda texts: [fake_vector(t, "m2", 8) for t in texts])
    with Mesh(built, providers={"oa": bad, "oa2": good}) as mesh:  # type: ignore[dict-item]
        r = mesh.embed("emb", ["x", "y"])
        assert r.model == "oa2.e" and r.attempts[0].outcome == "malformed_response"
        assert all(isinstance(v, float) and math.isfinite(v) for vec in r.vectors for v in vec)


@pytest.mark.parametrize(
    "reply",
    [
        None,
        "vectors",
        EmbeddingReply(None),  # type: ignore[arg-type]
        EmbeddingReply(ParsedEmbeddings(None, None)),  # type: ignore[arg-type]
        EmbeddingReply(ParsedEmbeddings((v for v in [[0.1] * 8]), None)),  # type: ignore[arg-type]
    ],
    ids=["None", "a string", "no embeddings", "no vectors", "a generator"],
)
def test_a_provider_of_ones_own_answering_no_vectors_fails_over(
    server: FaultServer, reply: Any
) -> None:
    class Odd(_Own):
        def embed(self, name: str, request: EmbeddingRequest, t: Timeouts) -> Any:
            return reply

    cfg = config(server, {"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")})
    built = Mesh.from_config(cfg).config
    good = _Own("oa2", lambda texts: [fake_vector(t, "m2", 8) for t in texts])
    with Mesh(built, providers={"oa": Odd("oa", None), "oa2": good}) as mesh:  # type: ignore[dict-item]
        r = mesh.embed("emb", ["x"])
        assert r.model == "oa2.e" and r.attempts[0].outcome == "malformed_response"


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": 3}, Usage(-5, 0, -5), Usage("3", 0, 3)],  # type: ignore[arg-type]
    ids=["a dict", "negative", "a string"],
)
def test_unusable_usage_of_ones_own_provider_is_estimated(server: FaultServer, usage: Any) -> None:
    class Reporting(_Own):
        def embed(self, name: str, request: EmbeddingRequest, t: Timeouts) -> EmbeddingReply:
            vectors = [fake_vector(x, "m1", 8) for x in request.texts]
            return EmbeddingReply(ParsedEmbeddings(vectors, usage))

    cfg = config(server, {"oa.e": model("oa", "m1", "s@8", pricing={"input_per_1k": 1.0})})
    built = Mesh.from_config(cfg).config
    with Mesh(built, providers={"oa": Reporting("oa", None)}) as mesh:  # type: ignore[dict-item]
        r = mesh.embed("emb", ["some text here"])
        assert r.usage.prompt_tokens > 0 and r.cost > 0


# --- batches and texts ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_2049_texts_are_split_and_reassembled_in_order(
    server: FaultServer, make: Any, mode: str
) -> None:
    mesh = pair(make)
    texts = [f"text number {i}" for i in range(2049)]
    r = mesh.embed("emb", texts) if mode == "sync" else asyncio.run(mesh.aembed("emb", texts))
    assert len(r.vectors) == 2049
    assert r.vectors[0] == fake_vector(texts[0], "m1", 8)
    assert r.vectors[2047] == fake_vector(texts[2047], "m1", 8)
    assert r.vectors[2048] == fake_vector(texts[2048], "m1", 8)
    sizes = [len(q.body["input"]) for q in server.requests]
    assert sizes == [2048, 1]


def test_a_batch_failing_midway_keeps_order_across_members(server: FaultServer, make: Any) -> None:
    mesh = pair(make)
    texts = [f"t{i}" for i in range(2049)]
    server.enqueue("m1", faults.ok(), faults.server_error(503))  # 1st batch ok, 2nd fails over
    r = mesh.embed("emb", texts)
    assert r.vectors[:2048] == [fake_vector(t, "m1", 8) for t in texts[:2048]]
    assert r.vectors[2048] == fake_vector(texts[2048], "m2", 8)


def test_empty_strings_among_texts_are_a_clear_bad_request(server: FaultServer, make: Any) -> None:
    mesh = pair(make)
    with pytest.raises(ModelMeshError, match="empty string") as info:
        mesh.embed("emb", ["a", "", "b"])
    assert type(info.value).__name__ == "BadRequestError"
    assert server.count("m2") == 0


def test_a_one_megabyte_text_is_embedded(server: FaultServer, make: Any) -> None:
    mesh = pair(make)
    text = "word " * 200_000
    r = mesh.embed("emb", [text, "short"])
    assert r.vectors == [fake_vector(text, "m1", 8), fake_vector("short", "m1", 8)]


# --- concurrency with faults ----------------------------------------------------------------


def test_sixteen_threads_with_faults_get_their_own_vectors(server: FaultServer, make: Any) -> None:
    mesh = pair(make)
    server.enqueue("m1", *([faults.server_error(503), faults.ok()] * 8))
    results: dict[int, list[list[float]]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            texts = [f"thread {i} text {j}" for j in range(5)]
            r = mesh.embed("emb", texts)
            model_name = "m1" if r.model == "oa.e" else "m2"
            assert r.vectors == [fake_vector(t, model_name, 8) for t in texts]
            results[i] = r.vectors
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 16


def test_sixteen_tasks_with_faults_get_their_own_vectors(server: FaultServer, make: Any) -> None:
    mesh = pair(make)
    server.enqueue("m1", *([faults.server_error(500), faults.ok()] * 8))

    async def one(i: int) -> None:
        texts = [f"task {i} text {j}" for j in range(5)]
        r = await mesh.aembed("emb", texts)
        model_name = "m1" if r.model == "oa.e" else "m2"
        assert r.vectors == [fake_vector(t, model_name, 8) for t in texts]

    async def main() -> None:
        try:
            await asyncio.gather(*(one(i) for i in range(16)))
        finally:
            for provider in mesh.providers.values():
                await provider.aclose()

    asyncio.run(main())


# --- spaces ---------------------------------------------------------------------------------


def test_a_pinned_space_all_in_standby_is_clear_and_never_the_other_space(
    server: FaultServer, make: Any
) -> None:
    mesh = make(
        {
            "oa.a": model("oa", "m1", "A@8"),
            "oa2.a": model("oa2", "m2", "A@8"),
            "az.b": model("az", "m3", "B@8"),
        },
        mixed_embedding_spaces=True,
    )
    mesh.deactivate("oa.a")
    mesh.deactivate("oa2.a")
    with pytest.raises(NoAvailableModelError) as info:
        mesh.embed("emb", ["x"], space="A@8")
    assert "oa.a, oa2.a in standby" in str(info.value)
    assert "az.b: in embedding space 'B@8', not 'A@8'" in str(info.value)
    assert server.count("m3") == 0


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_a_pinned_embedder_never_leaves_its_space(server: FaultServer, framework: str) -> None:
    from modelmesh_langchain import MeshEmbeddings
    from modelmesh_llamaindex import MeshEmbedding

    cfg = config(
        server,
        {"oa.a": model("oa", "m1", "A@8"), "az.b": model("az", "m3", "B@8")},
        mixed_embedding_spaces=True,
    )
    with Mesh.from_config(cfg) as mesh:
        if framework == "langchain":
            embed = MeshEmbeddings(pool="emb", config=mesh, space="A@8").embed_documents
        else:
            embed = MeshEmbedding(pool="emb", config=mesh, space="A@8").get_text_embedding_batch
        assert embed(["x"]) == [fake_vector("x", "m1", 8)]
        mesh.deactivate("oa.a")
        with pytest.raises(Exception) as info:
            embed(["x"])
        assert "A@8" in str(info.value) and "standby" in str(info.value)
        assert server.count("m3") == 0


@pytest.mark.parametrize(
    ("space", "dims"), [("s@8", 16), ("s@8", 0), ("s", None), ("s@0", None), ("s@99999999", None)]
)
def test_dimension_disagreements_are_configuration_errors(
    server: FaultServer, space: str, dims: int | None
) -> None:
    extra = {} if dims is None else {"dimensions": dims}
    cfg = config(server, {"oa.e": model("oa", "m1", space, **extra)})
    with pytest.raises(ConfigurationError, match=r"models\.oa\.e"):
        Mesh.from_config(cfg)


def test_a_vector_of_the_wrong_dimension_for_dimensions_n(server: FaultServer, make: Any) -> None:
    """``dimensions: 4`` asks the provider for 4; one that answers its default size anyway
    is malformed for the space and fails over."""
    mesh = make(
        {
            "oa.e": model("oa", "m1", "s@4", dimensions=4),
            "oa2.e": model("oa2", "m2", "s@4", dimensions=4),
        }
    )
    server.set("m1", faults.raw_body(body({"index": 0, "embedding": [0.5] * 8})))
    r = mesh.embed("emb", ["x"])
    assert r.model == "oa2.e" and len(r.vectors[0]) == 4


# --- mixed pools: chat and embedding models ---------------------------------------------------


def mixed_config(server: FaultServer) -> dict[str, Any]:
    cfg = config(server, {"oa.e": model("oa", "m1", "s@8")})
    cfg["models"]["oa.chat"] = {"provider": "oa", "name": "gpt-4o"}
    cfg["pools"]["both"] = {"models": ["oa.chat", "oa.e"], "retry": {"max_attempts": 1}}
    cfg["pools"]["emb"]["models"] = ["oa.e"]
    return cfg


def test_an_embed_request_never_goes_to_a_chat_model(server: FaultServer) -> None:
    with Mesh.from_config(mixed_config(server)) as mesh:
        for _ in range(3):
            r = mesh.embed("both", ["x"])
            assert r.model == "oa.e"
        assert server.count("gpt-4o") == 0
        server.set("m1", faults.server_error(500))
        with pytest.raises(AllProvidersExhaustedError):
            mesh.embed("both", ["x"])
        assert server.count("gpt-4o") == 0


def test_a_completion_never_goes_to_an_embedding_model(server: FaultServer) -> None:
    with Mesh.from_config(mixed_config(server)) as mesh:
        for _ in range(3):
            resp = mesh.complete("both", [{"role": "user", "content": "hi"}])
            assert resp.model == "oa.chat"
        assert server.count("m1") == 0
        with pytest.raises(NoCapableModelError) as info:
            mesh.complete("emb", [{"role": "user", "content": "hi"}])
        assert "oa.e" in str(info.value)
        assert server.count("m1") == 0


def test_a_model_declaring_chat_and_embeddings_serves_both(server: FaultServer) -> None:
    cfg = mixed_config(server)
    cfg["models"]["oa.e"]["capabilities"] = ["chat-completion", "text-embeddings"]
    cfg["pools"]["both"]["models"] = ["oa.e", "oa.chat"]
    with Mesh.from_config(cfg) as mesh:
        assert mesh.complete("both", [{"role": "user", "content": "hi"}]).model == "oa.e"
        assert mesh.embed("both", ["x"]).model == "oa.e"
