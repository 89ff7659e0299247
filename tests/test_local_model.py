"""The real-model tier: llama.cpp serving SmolLM2 on 127.0.0.1, with real faults."""

from __future__ import annotations

import os
import time

import pytest

from mesh_core import Mesh
from mesh_core._local_model import LocalModelServer, LocalModelUnavailable, model_path

try:
    model_path()
except LocalModelUnavailable as exc:  # pragma: no cover - CI installs both
    if os.environ.get("CI"):
        raise
    pytest.skip(f"real local model not installed: {exc}", allow_module_level=True)


@pytest.fixture
def two_servers():
    servers = [LocalModelServer().start(), LocalModelServer().start()]
    yield servers
    for s in servers:
        s.stop()


def mesh_over(servers, **timeouts) -> Mesh:
    limits = {"connect": "1s", "first_token": "3s", "stall": "3s", "total": "20s", **timeouts}
    return Mesh.from_config(
        {
            "providers": {
                f"p{i}": {"base_url": s.base_url, "timeouts": limits} for i, s in enumerate(servers)
            },
            "models": {
                f"p{i}.smollm2": {"provider": f"p{i}", "context_window": 2048}
                for i in range(len(servers))
            },
            "pools": {
                "chat": {
                    "capability": "chat-completion",
                    "strategy": "priority-selection",
                    "retry": {"max_attempts": 1},
                }
            },
        }
    )


def test_real_answers_plain_and_streamed(two_servers):
    with mesh_over(two_servers) as mesh:
        r = mesh.complete("chat", "What is 2 + 2?", temperature=0, max_tokens=30)
        assert r.model == "p0.smollm2" and "4" in r.content
        assert r.usage.prompt_tokens > 5 and r.usage.completion_tokens > 0
        chunks = list(mesh.stream("chat", "What is 2 + 2?", temperature=0, max_tokens=30))
        assert "".join(c.content for c in chunks) == r.content  # deterministic at temperature 0
        assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].usage.total_tokens


def test_killed_provider_fails_over(two_servers):
    with mesh_over(two_servers) as mesh:
        assert mesh.complete("chat", "Hi", max_tokens=5).model == "p0.smollm2"
        two_servers[0].kill()
        r = mesh.complete("chat", "What is 2 + 2?", temperature=0, max_tokens=30)
        assert r.model == "p1.smollm2" and "4" in r.content
        assert r.attempts[0].outcome == "connection_error"


def test_hung_provider_fails_over_within_the_timeout(two_servers):
    # The paused server is cut at its first-token deadline; the total is the default 20 s,
    # so the real model behind it has time to answer on a loaded machine.
    with mesh_over(two_servers, first_token="1500ms") as mesh:
        mesh.complete("chat", "Hi", max_tokens=5)  # warm the connection pool
        two_servers[0].pause()
        try:
            t0 = time.perf_counter()
            chunks = list(mesh.stream("chat", "What is 2 + 2?", temperature=0, max_tokens=30))
            assert time.perf_counter() - t0 < 30  # generous: the cause is asserted below
            assert chunks[-1].model == "p1.smollm2"
            assert chunks[-1].attempts[0].outcome == "timeout"
        finally:
            two_servers[0].resume()


def test_langchain_chain_on_a_real_model(two_servers):
    from langchain_core.output_parsers import StrOutputParser

    from modelmesh_langchain import MeshChatModel

    mesh = mesh_over(two_servers)
    llm = MeshChatModel(pool="chat", config=mesh, temperature=0, max_tokens=30)
    assert "4" in (llm | StrOutputParser()).invoke("What is 2 + 2?")
    mesh.close()
