"""The fault catalogue, per dialect: each fault of mesh_core.testing.faults, served in each
provider's own wire shapes (its error bodies, its stream events), means the same thing to
the mesh whatever the protocol: the same error kind for the failed attempt, and a failover
to the next model (an OpenAI-compatible one) that answers."""

from __future__ import annotations

from typing import Any

import pytest

from mesh_core import Mesh
from mesh_core.testing import FaultServer, faults
from tests.conftest import FAST

DIALECTS = ("openai-compatible", "azure-openai", "anthropic", "gemini")


@pytest.fixture(scope="module")
def server():
    with FaultServer() as s:
        yield s


def mesh_for(server: FaultServer, kind: str) -> Mesh:
    def provider(k: str) -> dict[str, Any]:
        return {"type": k, "base_url": server.url_for(k), "api_key": "k", "timeouts": FAST}

    return Mesh.from_config(
        {
            "providers": {"primary": provider(kind), "backup": provider("openai-compatible")},
            "models": {
                "primary.first": {"provider": "primary", "name": f"first-{kind}"},
                "backup.second": {"provider": "backup", "name": "second"},
            },
            "pools": {
                "chat": {
                    "capability": "chat-completion",
                    "strategy": "priority-selection",
                    "model_priority": ["primary.first", "backup.second"],
                    "retry": {"max_attempts": 1},
                }
            },
        }
    )


PLAIN = [
    ("server_error", faults.server_error(503), "server_error"),
    ("rate_limited", faults.rate_limited(retry_after=1), "rate_limited"),
    ("quota_exhausted", faults.quota_exhausted(), "quota_exhausted"),
    ("unauthorized", faults.unauthorized(), "authentication"),
    ("context_length", faults.context_length_exceeded(), "context_window_exceeded"),
    ("reset", faults.reset(), "connection_error"),
    ("not_json", faults.raw_body("this is not json"), "malformed_response"),
]
STREAMED = [
    ("stream_error", faults.stream_error(after=0), "server_error"),
    ("malformed_event", faults.malformed_event(after=0), "malformed_response"),
    ("cut", faults.cut(after=0), "connection_error"),
    ("slow_first_token", faults.slow_first_token(5.0), "timeout"),
]


@pytest.mark.parametrize("kind", DIALECTS)
@pytest.mark.parametrize(("name", "fault", "outcome"), PLAIN, ids=[p[0] for p in PLAIN])
def test_a_plain_fault_means_the_same_in_every_dialect(server, kind, name, fault, outcome):
    server.set(f"first-{kind}", fault)
    with mesh_for(server, kind) as mesh:
        resp = mesh.complete("chat", "hello")
    assert resp.model == "backup.second"
    assert [a.outcome for a in resp.attempts] == [outcome, "success"]
    assert server.requests_for(f"first-{kind}")[-1].dialect == kind.replace("-compatible", "")


@pytest.mark.parametrize("kind", DIALECTS)
@pytest.mark.parametrize(("name", "fault", "outcome"), STREAMED, ids=[s[0] for s in STREAMED])
def test_a_stream_fault_before_the_first_token_means_the_same_in_every_dialect(
    server, kind, name, fault, outcome
):
    server.set(f"first-{kind}", fault)
    with mesh_for(server, kind) as mesh:
        chunks = list(mesh.stream("chat", "hello"))
    assert "".join(c.content for c in chunks) == "Hello from second. You said: hello"
    assert chunks[-1].model == "backup.second"
    assert [a.outcome for a in chunks[-1].attempts] == [outcome, "success"]


@pytest.mark.parametrize("kind", DIALECTS)
def test_tool_calls_and_refusals_in_every_dialect(server, kind):
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    server.set(f"first-{kind}", faults.tool_call("lookup", {"q": "x"}))
    with mesh_for(server, kind) as mesh:
        resp = mesh.complete("chat", "look it up", tools=[tool])
        assert resp.model == "primary.first" and resp.finish_reason == "tool_calls"
        assert resp.tool_calls[0].name == "lookup" and resp.tool_calls[0].arguments == '{"q": "x"}'
        chunks = list(mesh.stream("chat", "look it up", tools=[tool]))
        assert chunks[-1].finish_reason == "tool_calls"
        args = "".join(d.arguments or "" for c in chunks for d in c.tool_call_deltas)
        assert args == '{"q": "x"}'
        server.set(f"first-{kind}", faults.refusal())
        if kind == "openai-compatible":  # as before: an empty answer, content_filter
            assert mesh.complete("chat", "x").finish_reason == "content_filter"
        else:
            with pytest.raises(Exception) as info:
                mesh.complete("chat", "x")
            assert getattr(info.value, "kind", None).value == "content_policy"


@pytest.mark.parametrize("kind", DIALECTS)
def test_a_key_the_provider_echoes_never_shows(server, kind):
    key = "sk-echoed-SECRET-9876"
    server.set(f"first-{kind}", faults.error(403, f"key {key} has no access", code="denied"))
    # the primary's own key is the one its provider echoes
    with Mesh.from_config(
        {
            "providers": {
                "primary": {
                    "type": kind,
                    "base_url": server.url_for(kind),
                    "api_key": key,
                    "timeouts": FAST,
                },
                "backup": {"base_url": server.base_url, "timeouts": FAST},
            },
            "models": {
                "primary.first": {"provider": "primary", "name": f"first-{kind}"},
                "backup.second": {"provider": "backup", "name": "second"},
            },
            "pools": {
                "chat": {
                    "capability": "chat-completion",
                    "strategy": "priority-selection",
                    "model_priority": ["primary.first", "backup.second"],
                    "retry": {"max_attempts": 1},
                }
            },
        }
    ) as mesh:
        resp = mesh.complete("chat", "hello")
    assert resp.model == "backup.second" and resp.attempts[0].outcome == "authentication"
    assert "SECRET" not in repr(resp) and "key *** has no access" in resp.attempts[0].error
