"""Embedding pools over real HTTP (the fault server on 127.0.0.1): every dialect, sync and
async; vectors deterministic and in input order across batches; usage and cost; retries,
events and standby; requests that cannot be served; concurrency. Embedding spaces (failover
within one, never across) are in test_embedding_spaces.py."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mesh_core import (
    EmbeddingResponse,
    InvalidRequestError,
    Mesh,
    NoCapableModelError,
)
from mesh_core.testing import FaultServer, faults
from mesh_core.testing._embedding_wire import fake_vector
from tests.embedding_mesh import DIALECTS, Meshes, config, embed, model, provider_of


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


@pytest.fixture
def make(server: FaultServer) -> Iterator[Meshes]:
    meshes = Meshes(server)
    yield meshes
    meshes.close()


# --- every dialect, sync and async --------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_each_dialect_embeds_deterministically_in_order(
    server: FaultServer, make: Any, dialect: str, mode: str
) -> None:
    p = provider_of(dialect)
    mesh = make({f"{p}.e": model(p, "emb-1", "space@8")})
    texts = ["alpha", "beta", "gamma"]
    first = embed(mesh, mode, "emb", texts)
    assert first.vectors == [fake_vector(t, "emb-1", 8) for t in texts]
    assert first.model == f"{p}.e" and first.provider == p and first.pool == "emb"
    assert first.space == "space@8" and first.dimensions == 8
    assert [a.outcome for a in first.attempts] == ["success"]
    again = embed(mesh, mode, "emb", ["gamma", "alpha"])
    assert again.vectors == [first.vectors[2], first.vectors[0]]  # same text, same vector
    recorded = server.requests[-1]
    assert recorded.dialect == f"{DIALECTS[dialect]}-embeddings" and recorded.model == "emb-1"
    one = embed(mesh, mode, "emb", "alpha")  # a string: one vector
    assert one.vectors == [first.vectors[0]]
    if dialect == "gemini":
        assert "content" in server.requests[-1].body  # embedContent for one text


def test_a_single_gemini_text_uses_embed_content_and_several_the_batch(
    server: FaultServer, make: Any
) -> None:
    mesh = make({"gm.e": model("gm", "text-embedding-004", "google/text-embedding-004@768")})
    assert len(mesh.embed("emb", ["one"]).vectors[0]) == 768  # the real model's dimension
    mesh.embed("emb", ["one", "two"])
    single, batch = server.requests
    assert single.body["content"] == {"parts": [{"text": "one"}]}
    assert [r["model"] for r in batch.body["requests"]] == ["models/text-embedding-004"] * 2


# --- batching ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_batches_keep_input_order(server: FaultServer, make: Any, mode: str) -> None:
    mesh = make({"oa.e": model("oa", "emb-1", "s@8", max_batch_size=3)})
    texts = [f"text number {i}" for i in range(8)]
    r = embed(mesh, mode, "emb", texts)
    assert r.vectors == [fake_vector(t, "emb-1", 8) for t in texts]
    assert [req.body["input"] for req in server.requests] == [texts[0:3], texts[3:6], texts[6:8]]
    assert [a.outcome for a in r.attempts] == ["success"] * 3


def test_provider_batch_limits_apply_by_default(server: FaultServer, make: Any) -> None:
    mesh = make(
        {"gm.e": model("gm", "g", "g@8"), "oa.e": model("oa", "o", "o@8")},
        mixed_embedding_spaces=True,
    )
    texts = [f"t{i}" for i in range(250)]
    r = mesh.embed("emb", texts, space="g@8")
    assert [len(q.body["requests"]) for q in server.requests] == [100, 100, 50]
    assert r.vectors == [fake_vector(t, "g", 8) for t in texts]
    server.reset()
    many = [f"t{i}" for i in range(2049)]
    r = mesh.embed("emb", many, space="o@8")
    assert [len(q.body["input"]) for q in server.requests] == [2048, 1]
    assert r.vectors[-1] == fake_vector("t2048", "o", 8) and len(r.vectors) == 2049


def test_empty_input_calls_nobody(server: FaultServer, make: Any) -> None:
    mesh = make({"oa.e": model("oa", "e", "s@8")})
    r = mesh.embed("emb", [])
    assert r.vectors == [] and r.space == "s@8" and r.dimensions == 8 and r.attempts == []
    assert server.requests == []


# --- usage and cost ----------------------------------------------------------------------


def test_usage_is_reported_or_estimated_and_priced(server: FaultServer, make: Any) -> None:
    price = {"pricing": {"input_per_1k": 0.5}}
    mesh = make(
        {
            "oa.e": model("oa", "e", "o@8", max_batch_size=2, **price),
            "gm.e": model("gm", "g", "g@8", **price),
        },
        mixed_embedding_spaces=True,
    )
    texts = ["a" * 40, "b" * 40, "c" * 40]  # the fault server counts 10 tokens each
    r = mesh.embed("emb", texts, space="o@8")
    assert r.usage.prompt_tokens == 30 and r.usage.completion_tokens == 0
    assert r.usage.total_tokens == 30
    assert math.isclose(r.cost, 30 * 0.5 / 1000)
    g = mesh.embed("emb", texts, space="g@8")  # Gemini reports none: estimated
    assert g.usage.prompt_tokens == 30 and math.isclose(g.cost, 30 * 0.5 / 1000)
    stats = mesh.stats()["models"]
    assert stats["oa.e"]["tokens"] == 30 and stats["oa.e"]["requests"] == 2  # two batches
    assert math.isclose(stats["gm.e"]["cost"], g.cost)


# --- requests that cannot be served ----------------------------------------------------------


def test_a_pool_that_cannot_embed_says_why(make: Any) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8")})
    with pytest.raises(NoCapableModelError, match="not an embedding model"):
        mesh.embed("chat", ["x"])
    with pytest.raises(NoCapableModelError):
        mesh.embed("chat", [])


def test_a_provider_without_embed_is_ruled_out(server: FaultServer) -> None:
    from mesh_core.providers import OpenAICompatibleProvider

    class ChatOnly:
        """A provider written before embeddings: complete/stream only."""

        def __init__(self) -> None:
            self.inner = OpenAICompatibleProvider("oa", base_url=server.base_url)
            self.provider_id = "oa"

        def __getattr__(self, name: str) -> Any:
            if name in ("embed", "aembed"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    cfg = config(server, {"oa.e": model("oa", "m1", "s@8")})
    mesh = Mesh(Mesh.from_config(cfg).config, providers={"oa": ChatOnly()})  # type: ignore[dict-item]
    with pytest.raises(NoCapableModelError, match="provider 'oa' cannot embed"):
        mesh.embed("emb", ["x"])
    assert server.requests == []


@pytest.mark.parametrize(
    ("texts", "kw", "why"),
    [
        (["a", 3], {}, r"texts\[1\] must be a string, got int"),
        (b"bytes", {}, "texts must be a string or a sequence of strings"),
        ({"a": 1}, {}, "texts must be a string or a sequence"),
        (["a"], {"timeout": -1}, "timeout must be a positive number"),
        (["a"], {"space": ""}, "space must be a non-empty string"),
    ],
)
def test_bad_arguments_say_what_is_wrong(make: Any, texts: Any, kw: Any, why: str) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8")})
    with pytest.raises(InvalidRequestError, match=why):
        mesh.embed("emb", texts, **kw)


def test_a_bad_request_is_the_callers_error(server: FaultServer, make: Any) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")})
    with pytest.raises(Exception, match="empty string") as info:
        mesh.embed("emb", ["fine", ""])  # OpenAI refuses an empty input
    assert type(info.value).__name__ == "BadRequestError"
    assert server.count("m2") == 0 and mesh.stats()["models"]["oa.e"]["failures"] == 0


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_calls_from_threads(server: FaultServer, make: Any) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8"), "az.e": model("az", "m2", "s@8")})
    server.set("m1", faults.server_error(503))  # every call fails over, from every thread
    results: dict[int, EmbeddingResponse] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = mesh.embed("emb", [f"text {i}", f"other {i}"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, r in results.items():
        assert r.vectors == [fake_vector(t, "m2", 8) for t in (f"text {i}", f"other {i}")]
    assert len(results) == 16
    assert all(m.in_flight == 0 for m in mesh.models.values())


def test_concurrent_tasks(server: FaultServer, make: Any) -> None:
    mesh = make({"gm.e": model("gm", "g", "s@8", max_batch_size=2)})

    async def main() -> list[EmbeddingResponse]:
        try:
            return await asyncio.gather(
                *(mesh.aembed("emb", [f"{i}-{j}" for j in range(5)]) for i in range(20))
            )
        finally:
            await mesh.providers["gm"].aclose()

    for i, r in enumerate(asyncio.run(main())):
        assert r.vectors == [fake_vector(f"{i}-{j}", "g", 8) for j in range(5)]
    assert server.count("g") == 60  # three batches each
    assert mesh.models["gm.e"].in_flight == 0


def test_a_cancelled_task_releases_the_model(server: FaultServer, make: Any) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8")})
    server.set("m1", faults.silent())

    async def main() -> None:
        task = asyncio.create_task(mesh.aembed("emb", ["x"]))
        while server.count("m1") == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await mesh.providers["oa"].aclose()

    asyncio.run(main())
    assert mesh.models["oa.e"].in_flight == 0


def test_keys_are_sent_in_each_dialects_header_and_a_wrong_one_shuts_the_provider_out() -> None:
    with FaultServer(api_key="sk-right") as keyed:
        cfg = config(
            keyed,
            {
                "oa.e": model("oa", "m1", "s@8"),
                "az.e": model("az", "m2", "s@8"),
                "gm.e": model("gm", "m3", "s@8"),
            },
        )
        for pid in ("oa", "az", "gm"):
            cfg["providers"][pid]["api_key"] = "sk-right"
        cfg["providers"]["oa"]["api_key"] = "sk-wrong"
        with Mesh.from_config(cfg) as mesh:
            r = mesh.embed("emb", ["x"])
            assert r.model == "az.e" and r.attempts[0].outcome == "authentication"
            assert "sk-wrong" not in str(r.attempts[0].error)
            assert mesh.snapshot("oa.e").status == "standby"
            assert keyed.requests_for("m2")[-1].headers["api-key"] == "sk-right"
            mesh.deactivate("az.e")
            assert mesh.embed("emb", ["x"]).model == "gm.e"
            assert keyed.requests_for("m3")[-1].headers["x-goog-api-key"] == "sk-right"
