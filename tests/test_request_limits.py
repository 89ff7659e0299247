"""Per-request limits (``timeout``, ``max_retries``) are the mesh's, never the provider's;
and a request whose capable models are all down is told so, truthfully."""

from __future__ import annotations

import time

import pytest

from mesh_core import Mesh
from mesh_core._errors import AllProvidersExhaustedError, NoAvailableModelError
from mesh_core._mesh import InvalidRequestError
from mesh_core.testing import faults
from tests.conftest import MODES, complete, config_for

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def bodies(server, model):
    return [r.body for r in server.requests_for(model)]


@MODES
@pytest.mark.parametrize("name", ["timeout", "request_timeout"])
def test_timeout_caps_each_attempt_and_never_reaches_the_body(servers, mode, name):
    cfg = config_for(servers, pool={"retry": {"max_attempts": 1}})
    slow = {"connect": "2s", "first_token": "30s", "stall": "30s", "total": "30s"}
    cfg["providers"]["p1"]["timeouts"] = slow
    mesh = Mesh.from_config(cfg)
    servers[0].set("m1", faults.silent())  # a primary that never answers
    started = time.monotonic()
    r = complete(mesh, mode, "chat", "hi", **{name: 0.3})
    assert r.model == "p2.m2" and r.attempts[0].outcome == "timeout"
    assert time.monotonic() - started < 15  # 0.3 s applied, not the provider's 30 s
    mesh.close()
    for body in bodies(servers[0], "m1") + bodies(servers[1], "m2"):
        assert "timeout" not in body and "request_timeout" not in body


@MODES
def test_max_retries_zero_tries_a_failing_model_once(make_mesh, servers, mode):
    mesh = make_mesh(
        pool={
            "retry": {"max_attempts": 3},
            "strategy": "priority-selection",
            "deactivation": {"retry_limit": 10},
        }
    )
    servers[0].set("m1", faults.server_error(503))
    r = complete(mesh, mode, "chat", "hi", max_retries=0)
    assert r.model == "p2.m2" and servers[0].count("m1") == 1
    assert all("max_retries" not in b for b in bodies(servers[1], "m2"))
    servers[0].reset()
    servers[0].set("m1", faults.server_error(503))
    r = complete(mesh, mode, "chat", "hi", max_retries=2)
    assert servers[0].count("m1") == 3


@pytest.mark.parametrize(
    "params", [{"timeout": 0}, {"timeout": "soon"}, {"timeout": -1}, {"max_retries": -1}]
)
def test_bad_limits_are_the_callers_error(make_mesh, params):
    mesh = make_mesh()
    with pytest.raises(InvalidRequestError, match=next(iter(params))):
        mesh.complete("chat", "hi", **params)


def test_a_down_tool_model_is_not_reported_as_every_model_in_standby(make_mesh, servers):
    mesh = make_mesh(
        models={"p2.m2": {"features": {"tool_calling": False}}},
        pool={"deactivation": {"retry_limit": 1}, "retry": {"max_attempts": 1}},
    )
    servers[0].set("m1", faults.server_error(503))
    with pytest.raises(AllProvidersExhaustedError) as first:
        mesh.complete("chat", "weather?", tools=[TOOL])
    text = str(first.value)
    assert "that can serve this request failed: p1.m1" in text
    assert "not capable: p2.m2 (does not support tool calling)" in text
    with pytest.raises(NoAvailableModelError) as second:
        mesh.complete("chat", "weather?", tools=[TOOL])
    text = str(second.value)
    assert "every model" not in text
    assert "no capable model of pool 'chat' is available (p1.m1 in standby)" in text
    assert "recovers in" in text and "p2.m2: does not support tool calling" in text
    assert second.value.details["not_capable"] == {"p2.m2": "does not support tool calling"}
    # the model that cannot call tools still serves plain requests
    assert mesh.complete("chat", "hi").model == "p2.m2"
