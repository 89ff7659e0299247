"""Embedding spaces over real HTTP (the fault server on 127.0.0.1): a request fails over
only between members of one space, never across one; replies of another dimension, count
or shape fail over within the space; a provider of one's own is held to the same rules."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mesh_core import AllProvidersExhaustedError, InvalidRequestError, Mesh
from mesh_core.testing import FaultServer, faults
from mesh_core.testing._embedding_wire import fake_vector
from tests.embedding_mesh import Meshes, config, embed, model


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


@pytest.fixture
def make(server: FaultServer) -> Iterator[Meshes]:
    meshes = Meshes(server)
    yield meshes
    meshes.close()


# --- failover within a space, never across one ----------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_fault_fails_over_to_a_member_of_the_same_space(
    server: FaultServer, make: Any, mode: str
) -> None:
    mesh = make(
        {
            "oa.e": model("oa", "te3", "openai/te3@8"),
            "az.e": model("az", "te3-deployment", "openai/te3@8"),
        }
    )
    server.set("te3", faults.server_error(503))
    r = embed(mesh, mode, "emb", ["x", "y"])
    assert r.model == "az.e" and r.space == "openai/te3@8"
    assert [(a.model_id, a.outcome) for a in r.attempts] == [
        ("oa.e", "server_error"),
        ("az.e", "success"),
    ]
    assert r.vectors == [fake_vector(t, "te3-deployment", 8) for t in ["x", "y"]]
    assert mesh.stats()["models"]["oa.e"]["failures"] == 1


@pytest.mark.parametrize("fault", ["reset", "rate_limited", "silent"])
def test_other_faults_fail_over_too(server: FaultServer, make: Any, fault: str) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")})
    server.set("m1", getattr(faults, fault)())
    r = mesh.embed("emb", ["x"], timeout=1.0)
    assert r.model == "oa2.e" and r.attempts[0].model_id == "oa.e"
    assert r.attempts[0].outcome != "success"


def mixed(make: Any) -> Mesh:
    """Space A (oa.a, az.a) first in the pool, then space B (gm.b, oa2.b)."""
    return make(
        {
            "oa.a": model("oa", "a1", "A@8"),
            "az.a": model("az", "a2", "A@8"),
            "gm.b": model("gm", "b1", "B@8"),
            "oa2.b": model("oa2", "b2", "B@8"),
        },
        mixed_embedding_spaces=True,
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failover_never_crosses_the_pinned_space(server: FaultServer, make: Any, mode: str) -> None:
    mesh = mixed(make)
    server.set("a1", faults.server_error(503))
    server.set("a2", faults.server_error(500))
    with pytest.raises(AllProvidersExhaustedError) as info:
        embed(mesh, mode, "emb", ["x"])
    assert {a.model_id for a in info.value.attempts} == {"oa.a", "az.a"}
    assert "in embedding space 'B@8', not 'A@8'" in str(info.value)
    assert server.count("b1") == server.count("b2") == 0  # space B was never asked


def test_an_explicit_space_rules_out_the_others(server: FaultServer, make: Any) -> None:
    mesh = mixed(make)
    r = mesh.embed("emb", ["x"], space="B@8")
    assert r.model == "gm.b" and r.space == "B@8"
    assert server.count("a1") == server.count("a2") == 0
    server.set("b1", faults.server_error(503))
    server.set("b2", faults.server_error(503))
    with pytest.raises(AllProvidersExhaustedError):
        mesh.embed("emb", ["x"], space="B@8")
    assert server.count("a1") == server.count("a2") == 0


def test_the_first_model_chosen_pins_the_space_of_later_batches(
    server: FaultServer, make: Any
) -> None:
    models = {
        "oa.a": model("oa", "a1", "A@8", max_batch_size=2),
        "gm.b": model("gm", "b1", "B@8", max_batch_size=2),
    }
    mesh = make(models, mixed_embedding_spaces=True)
    server.enqueue("a1", faults.ok(), faults.server_error(503))  # the second batch fails
    with pytest.raises(AllProvidersExhaustedError):
        mesh.embed("emb", ["1", "2", "3", "4"])
    assert server.count("b1") == 0  # not finished with vectors of another space


def test_space_a_down_from_the_start_serves_space_b_all_through(
    server: FaultServer, make: Any
) -> None:
    mesh = mixed(make)
    mesh.deactivate("oa.a")
    mesh.deactivate("az.a")
    r = mesh.embed("emb", ["x", "y"])
    assert r.space == "B@8" and r.model == "gm.b"  # a free choice, and a consistent one


def test_an_unknown_space_names_the_pools_spaces(make: Any) -> None:
    mesh = mixed(make)
    with pytest.raises(InvalidRequestError, match=r"'C@8' \(the pool's spaces: A@8, B@8\)"):
        mesh.embed("emb", ["x"], space="C@8")


def test_retries_events_and_standby_are_the_completions_own(server: FaultServer, make: Any) -> None:
    mesh = make(
        {"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")},
        retry={"max_attempts": 2, "initial_delay": "10ms"},
        deactivation={"retry_limit": 2},
    )
    seen: list[tuple[str, str | None]] = []
    mesh.on(None, lambda e: seen.append((e.event_type.value, e.model_id)))
    server.enqueue("m1", faults.rate_limited(retry_after=0))  # transient: retried in place
    r = mesh.embed("emb", ["x"])
    assert [(a.model_id, a.outcome) for a in r.attempts] == [
        ("oa.e", "rate_limited"),
        ("oa.e", "success"),
    ]
    assert ("retry.attempted", "oa.e") in seen and ("request.success", "oa.e") in seen
    seen.clear()
    server.set("m1", faults.server_error(500))
    r = mesh.embed("emb", ["x"])  # two failures in a row: standby, then the next model
    assert r.model == "oa2.e" and mesh.snapshot("oa.e").status == "standby"
    assert ("model.deactivated", "oa.e") in seen and ("model.rotated", "oa2.e") in seen
    server.reset()
    assert mesh.embed("emb", ["x"]).model == "oa2.e"  # oa.e stays out until it recovers


def test_closed_meshes_and_unknown_pools(make: Any) -> None:
    from mesh_core import MeshClosedError, UnknownPoolError

    mesh = make({"oa.e": model("oa", "m1", "s@8")})
    with pytest.raises(UnknownPoolError, match="did you mean 'emb'"):
        mesh.embed("embs", ["x"])
    mesh.close()
    with pytest.raises(MeshClosedError):
        mesh.embed("emb", ["x"])


# --- replies that do not fit the space ------------------------------------------------------


def test_a_dimension_mismatch_counts_against_the_model_and_fails_over(
    server: FaultServer, make: Any
) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8"), "az.e": model("az", "m2", "s@8")})
    server.embedding_dimensions["m1"] = 4  # m1 now answers with 4-dimensional vectors
    r = mesh.embed("emb", ["x"])
    assert r.model == "az.e" and len(r.vectors[0]) == 8
    first = r.attempts[0]
    assert first.model_id == "oa.e" and first.outcome == "malformed_response"
    assert "has 4 dimensions" in (first.error or "") and "'s@8' has 8" in (first.error or "")
    assert mesh.stats()["models"]["oa.e"]["failures"] == 1


def test_configured_dimensions_are_asked_for(server: FaultServer, make: Any) -> None:
    mesh = make(
        {
            "oa.e": model("oa", "m1", "s@4", dimensions=4),
            "gm.e": model("gm", "m2", "s@4", dimensions=4),
        }
    )
    assert len(mesh.embed("emb", ["x", "y"]).vectors[0]) == 4
    assert server.requests[-1].body["dimensions"] == 4
    mesh.deactivate("oa.e")
    assert len(mesh.embed("emb", ["x", "y"]).vectors[1]) == 4
    assert {r["outputDimensionality"] for r in server.requests[-1].body["requests"]} == {4}


MALFORMED = {
    "NaN": '{"data": [{"index": 0, "embedding": [NaN, 0, 0, 0, 0, 0, 0, 0]}]}',
    "too many": '{"data": [{"index": 0, "embedding": [1]}, {"index": 1, "embedding": [1]}]}',
    "not numbers": '{"data": [{"index": 0, "embedding": ["a", "b", "c", "d", "e", "f", "g"]}]}',
    "no data": '{"object": "list"}',
    "not json": "<html>",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_replies_fail_over(server: FaultServer, make: Any, body: str) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")})
    server.set("m1", faults.raw_body(body))
    r = mesh.embed("emb", ["x"])
    assert r.model == "oa2.e" and r.attempts[0].outcome == "malformed_response"


def test_a_reply_past_the_size_cap_fails_over(server: FaultServer, make: Any) -> None:
    mesh = make({"oa.e": model("oa", "m1", "s@8"), "oa2.e": model("oa2", "m2", "s@8")})
    server.set("m1", faults.gzip_bomb(64 << 20))
    r = mesh.embed("emb", ["x"])
    assert r.model == "oa2.e" and r.attempts[0].outcome == "malformed_response"


def test_a_provider_of_ones_own_can_embed_and_is_held_to_the_space(server: FaultServer) -> None:
    """The optional EmbeddingProvider protocol: a provider with embed/aembed (and its own
    batch limit) serves the pool; one that answers with the wrong count or dimension fails
    over to the next member of the space."""
    from mesh_core import EmbeddingRequest
    from mesh_core.providers import EmbeddingReply, ParsedEmbeddings, Timeouts

    class Local:
        max_embedding_batch = 2

        def __init__(self, provider_id: str, dims: int, drop: bool = False) -> None:
            self.provider_id, self.dims, self.drop, self.batches = provider_id, dims, drop, []

        def embed(self, name: str, request: EmbeddingRequest, t: Timeouts) -> EmbeddingReply:
            self.batches.append(list(request.texts))
            texts = request.texts[1:] if self.drop else request.texts
            vectors = [fake_vector(x, name, self.dims) for x in texts]
            return EmbeddingReply(ParsedEmbeddings(vectors, None))

        async def aembed(self, name: str, request: EmbeddingRequest, t: Timeouts) -> Any:
            return self.embed(name, request, t)

        def __getattr__(self, name: str) -> Any:  # complete/stream/close: not used here
            return lambda *a, **k: None

    models = {
        "oa.e": model("oa", "m1", "s@8"),
        "oa2.e": model("oa2", "m2", "s@8"),
        "az.e": model("az", "m3", "s@8"),
    }
    cfg = config(server, models)
    local, short, dropping = Local("oa", 8), Local("oa2", 4), Local("az", 8, drop=True)
    built = Mesh.from_config(cfg).config
    with Mesh(built, providers={"oa": local, "oa2": short, "az": dropping}) as mesh:  # type: ignore[dict-item]
        r = mesh.embed("emb", ["a", "b", "c"])
        assert local.batches == [["a", "b"], ["c"]] and r.model == "oa.e"
        assert r.vectors == [fake_vector(x, "m1", 8) for x in "abc"]
        assert r.usage.prompt_tokens == 3  # none reported: estimated
        mesh.deactivate("oa.e")
        with pytest.raises(AllProvidersExhaustedError) as info:
            asyncio.run(mesh.aembed("emb", ["a"]))
        attempts = info.value.attempts
        assert [(a.model_id, a.outcome) for a in attempts] == [
            ("oa2.e", "malformed_response"),
            ("az.e", "malformed_response"),
        ]
        assert "has 4 dimensions" in (attempts[0].error or "")
        assert "0 embedding vectors for 1 inputs" in (attempts[1].error or "")
