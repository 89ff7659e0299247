"""The fault server is as strict as the providers it stands for, and says what it rejects."""

from __future__ import annotations

import json

import httpx
import pytest

from mesh_core.testing import FaultServer, faults
from mesh_core.testing.faults import Behaviour

TOOL = {
    "type": "function",
    "function": {
        "name": "answer",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def post(server: FaultServer, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=10)


def test_an_unknown_request_field_is_a_400_as_openai_answers_it(server):
    r = post(server, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "timeout": 3})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Unrecognized request argument supplied: timeout"
    ok = post(server, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u"})
    assert ok.status_code == 200


def test_a_forced_tool_choice_is_honoured_after_a_tool_result(server):
    messages = [
        {"role": "user", "content": "weather in 'Paris' for 3 days"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "answer", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    base = {"model": "m", "messages": messages, "tools": [TOOL]}
    auto = post(server, base).json()["choices"][0]["message"]
    assert auto["content"] == "The tool returned: sunny" and not auto.get("tool_calls")
    for choice in ("required", {"type": "function", "function": {"name": "answer"}}):
        forced = post(server, {**base, "tool_choice": choice}).json()["choices"][0]["message"]
        call = forced["tool_calls"][0]["function"]
        assert call["name"] == "answer"
        assert set(json.loads(call["arguments"])) == {"city", "days"}


def test_unknown_behaviours_are_refused_naming_the_valid_ones(server):
    control = f"http://127.0.0.1:{server.port}/_control/behaviour"
    bad_kind = httpx.post(control, json={"model": "m", "behaviour": {"kind": "explode"}})
    assert bad_kind.status_code == 400
    message = bad_kind.json()["error"]["message"]
    assert "unknown behaviour kind 'explode'" in message and "status" in message
    bad_field = httpx.post(control, json={"model": "m", "behaviour": {"stall_afterr": 2}})
    assert bad_field.status_code == 400
    assert "stall_afterr" in bad_field.json()["error"]["message"]
    good = httpx.post(control, json={"model": "m", "behaviour": faults.server_error().to_dict()})
    assert good.json() == {"ok": True}
    with pytest.raises(ValueError, match="unknown behaviour kind"):
        Behaviour(kind="explode")
