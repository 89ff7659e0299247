"""Routing behaviour over real HTTP: recovery, needs, strategies, concurrency, hygiene."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import pytest

from mesh_core import Mesh
from mesh_core._clock import ManualClock
from mesh_core._errors import (
    AllProvidersExhaustedError,
    NoAvailableModelError,
    NoCapableModelError,
    RoutingError,
    UnknownPoolError,
)
from mesh_core._events import EventType
from mesh_core._mesh import InvalidRequestError
from mesh_core.testing import faults
from tests.conftest import MODES, _close_loop_pools, complete, config_for

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_deactivation_trial_and_recovery_with_a_moved_clock(make_mesh, servers):
    clock = ManualClock()
    mesh = make_mesh(
        pool={
            "strategy": "priority-selection",
            "deactivation": {"retry_limit": 2},
            "recovery": {"cooldown": "30s"},
            "retry": {"max_attempts": 1},
        },
        clock=clock,
    )
    events = []
    mesh.on(None, events.append)
    servers[0].set("m1", faults.server_error(503))
    assert mesh.complete("chat", "1").model == "p2.m2"
    assert mesh.complete("chat", "2").model == "p2.m2"
    snap = mesh.snapshot("p1.m1")
    assert snap.status == "standby" and snap.deactivation_reason == "error_threshold"
    assert snap.cooldown_remaining == 30
    mesh.complete("chat", "3")
    assert servers[0].count("m1") == 2  # standby: not called
    clock.advance(30)
    servers[0].set("m1", faults.ok())
    r = mesh.complete("chat", "4")  # the trial request goes back to the preferred model
    assert r.model == "p1.m1"
    snap = mesh.snapshot("p1.m1")
    assert snap.status == "active" and not snap.probation
    kinds = [e.event_type for e in events]
    assert EventType.MODEL_DEACTIVATED in kinds and EventType.MODEL_REACTIVATED in kinds
    reactivated = next(e for e in events if e.event_type is EventType.MODEL_REACTIVATED)
    assert reactivated.metadata["trial"] is True


def test_failed_trial_doubles_the_cooldown(make_mesh, servers):
    clock = ManualClock()
    mesh = make_mesh(
        pool={
            "strategy": "priority-selection",
            "deactivation": {"retry_limit": 1},
            "recovery": {"cooldown": "10s"},
            "retry": {"max_attempts": 1},
        },
        clock=clock,
    )
    servers[0].set("m1", faults.server_error(503))
    mesh.complete("chat", "1")
    assert mesh.snapshot("p1.m1").cooldown_remaining == 10
    clock.advance(10)
    assert mesh.complete("chat", "trial").model == "p2.m2"  # the trial failed, m2 answered
    assert mesh.snapshot("p1.m1").cooldown_remaining == 20
    clock.advance(20)
    assert mesh.complete("chat", "trial 2").model == "p2.m2"
    assert mesh.snapshot("p1.m1").cooldown_remaining == 40


def test_no_available_model_says_pool_and_when(make_mesh, servers):
    clock = ManualClock()
    mesh = make_mesh(
        pool={
            "deactivation": {"retry_limit": 1},
            "recovery": {"cooldown": "45s"},
            "retry": {"max_attempts": 1},
        },
        clock=clock,
    )
    mesh.deactivate("p2.m2")
    servers[0].set("m1", faults.server_error(503))
    with pytest.raises(AllProvidersExhaustedError):
        mesh.complete("chat", "x")
    with pytest.raises(NoAvailableModelError) as ei:
        mesh.complete("chat", "y")
    assert ei.value.pool_name == "chat" and ei.value.recovers_at == clock.time() + 45
    assert "'chat'" in str(ei.value) and "45.0s" in str(ei.value)


@MODES
def test_waits_for_recovery_when_configured(make_mesh, servers, mode):
    mesh = make_mesh(
        n=1,
        pool={
            "deactivation": {"retry_limit": 1},
            "retry": {"max_attempts": 1},
            "recovery": {"cooldown": "300ms"},
            "wait_for_recovery": "2s",
        },
    )
    servers[0].enqueue("m1", faults.server_error(503))
    with pytest.raises(AllProvidersExhaustedError):
        complete(mesh, mode, "chat", "fails")
    r = complete(mesh, mode, "chat", "waits then answers")
    assert r.model == "p1.m1"


def test_tools_narrow_the_candidates_and_unservable_requests_say_why(make_mesh, servers):
    mesh = make_mesh(models={"p1.m1": {"features": {"tool_calling": False}}})
    servers[1].set("m2", faults.tool_call("get_weather", {"city": "Paris"}))
    r = mesh.complete("chat", "weather?", tools=[TOOL], tool_choice="auto")
    assert r.model == "p2.m2" and servers[0].count() == 0
    assert r.tool_calls[0].name == "get_weather"
    assert json.loads(r.tool_calls[0].arguments) == {"city": "Paris"}
    assert r.finish_reason == "tool_calls"
    mesh2 = make_mesh(
        models={
            "p1.m1": {"context_window": 50},
            "p2.m2": {"features": {"structured_output": False}},
        }
    )
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(NoCapableModelError) as ei:
        mesh2.complete("chat", "x" * 400, response_format=schema)
    reasons = ei.value.reasons
    assert "context window of 50" in reasons["p1.m1"]
    assert "structured output" in reasons["p2.m2"]


def test_parameters_pass_through_to_the_provider(make_mesh, servers):
    mesh = make_mesh()
    mesh.complete(
        "chat",
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        temperature=0.2,
        max_tokens=50,
        top_p=0.9,
        seed=7,
        stop="END",
        tools=[TOOL],
        tool_choice="auto",
        response_format={"type": "json_object"},
        frequency_penalty=0.5,
    )
    body = servers[0].requests_for("m1")[0].body
    assert body["model"] == "m1" and body["messages"][0]["role"] == "system"
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (
        0.2,
        50,
        0.9,
        7,
    )
    assert body["stop"] == ["END"] and body["tools"] == [TOOL] and body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert body["frequency_penalty"] == 0.5


def test_wire_headers_compression_and_unicode(servers):
    """Provider headers are sent; gzip replies are decoded; non-ASCII text survives both ways."""
    cfg = config_for(servers)
    cfg["providers"]["p1"]["headers"] = {"x-team": "search"}
    servers[0].enqueue("m1", faults.reply("naïve café ☕"))
    with Mesh.from_config(cfg) as mesh:
        r = mesh.complete("chat", "grüß dich")
    rec = servers[0].requests_for("m1")[0]
    assert rec.headers["x-team"] == "search"
    assert "gzip" in rec.headers["accept-encoding"]  # so the server compressed its reply
    assert rec.headers["content-type"] == "application/json"
    assert rec.headers["user-agent"].startswith("modelmesh-lite/")
    assert rec.body["messages"][0]["content"] == "grüß dich"
    assert r.content == "naïve café ☕"


def test_pinned_model_and_unknown_names(make_mesh, servers):
    mesh = make_mesh()
    assert mesh.complete("chat", "hi", model="p2.m2").model == "p2.m2"
    with pytest.raises(RoutingError, match="not a member"):
        mesh.complete("chat", "hi", model="p9.zz")
    with pytest.raises(UnknownPoolError, match="did you mean 'chat'"):
        mesh.complete("caht", "hi")


@pytest.mark.parametrize(
    "kwargs, where",
    [
        ({"messages": []}, "non-empty"),
        ({"messages": [{"content": "x"}]}, "messages[0]"),
        (
            {"messages": "hi", "tools": [{"type": "function", "function": {"parameters": {}}}]},
            "tools[0]",
        ),
        (
            {
                "messages": "hi",
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ],
            },
            "tools[0].function.parameters",
        ),
    ],
)
def test_bad_requests_fail_before_any_call(make_mesh, servers, kwargs, where):
    mesh = make_mesh()
    messages = kwargs.pop("messages")
    with pytest.raises(InvalidRequestError, match=where.replace("[", r"\[").replace("]", r"\]")):
        mesh.complete("chat", messages, **kwargs)
    assert servers[0].count() == 0


# --- strategies over real HTTP -------------------------------------------------------------


def served(servers) -> Counter:
    return Counter({f"m{i + 1}": s.count() for i, s in enumerate(servers)})


def test_round_robin_spreads_evenly(make_mesh, servers):
    mesh = make_mesh(n=3, pool={"strategy": "round-robin"})
    models = [mesh.complete("chat", str(i)).model for i in range(9)]
    assert models[:3] == ["p1.m1", "p2.m2", "p3.m3"]
    assert served(servers) == {"m1": 3, "m2": 3, "m3": 3}


def test_stick_until_failure_stays_after_recovery(make_mesh, servers):
    mesh = make_mesh(n=3, pool={"retry": {"max_attempts": 1}})
    assert mesh.complete("chat", "a").model == "p1.m1"
    servers[0].enqueue("m1", faults.server_error(503))
    assert mesh.complete("chat", "b").model == "p2.m2"
    assert [mesh.complete("chat", "c").model for _ in range(3)] == ["p2.m2"] * 3


def test_cost_first_sends_everything_to_the_cheapest(make_mesh, servers):
    mesh = make_mesh(
        n=3,
        pool={"strategy": "cost-first"},
        models={
            "p1.m1": {"pricing": {"input_per_1k": 3.0, "output_per_1k": 15.0}},
            "p2.m2": {"pricing": {"input_per_1k": 0.15, "output_per_1k": 0.6}},
            "p3.m3": {},
        },
    )
    r = None
    for i in range(5):
        r = mesh.complete("chat", str(i))
    assert served(servers) == {"m1": 0, "m2": 5, "m3": 0}
    expected = (r.usage.prompt_tokens * 0.15 + r.usage.completion_tokens * 0.6) / 1000
    assert r.cost == pytest.approx(expected)
    assert mesh.snapshot("p2.m2").cost_accumulated == pytest.approx(5 * expected, rel=0.2)


def test_latency_first_moves_to_the_faster_model(make_mesh, servers):
    mesh = make_mesh(pool={"strategy": "latency-first"})
    servers[0].set("m1", faults.ok(delay=0.15))
    first = [mesh.complete("chat", str(i), model=m).model for i, m in enumerate(["p1.m1", "p2.m2"])]
    assert first == ["p1.m1", "p2.m2"]
    assert [mesh.complete("chat", "x").model for _ in range(4)] == ["p2.m2"] * 4


def test_session_stickiness_keeps_each_session_on_its_model(make_mesh, servers):
    mesh = make_mesh(pool={"strategy": "session-stickiness", "retry": {"max_attempts": 1}})
    assert mesh.complete("chat", "a", session_id="s1").model == "p1.m1"
    servers[0].enqueue("m1", faults.server_error(503))
    assert mesh.complete("chat", "b", session_id="s1").model == "p2.m2"  # reassigned
    assert mesh.complete("chat", "c", session_id="s1").model == "p2.m2"  # and kept
    assert mesh.complete("chat", "d", session_id="s2").model == "p1.m1"


def test_rate_limit_aware_switches_on_provider_headers(make_mesh, servers):
    mesh = make_mesh(pool={"strategy": "rate-limit-aware", "rate_limit": {"threshold": 0.5}})
    servers[0].rate_limit("m1", limit=4)
    seq = [mesh.complete("chat", str(i)).model for i in range(4)]
    # m1 serves until its headers report half its allowance used, then m2 takes over
    assert seq == ["p1.m1", "p1.m1", "p2.m2", "p2.m2"]
    assert mesh.snapshot("p1.m1").requests_remaining == 2


def test_load_balanced_follows_headroom(make_mesh, servers):
    mesh = make_mesh(pool={"strategy": "load-balanced"})
    servers[0].set(
        "m1",
        faults.ok().with_headers(
            x_ratelimit_limit_requests="100", x_ratelimit_remaining_requests="75"
        ),
    )
    servers[1].set(
        "m2",
        faults.ok().with_headers(
            x_ratelimit_limit_requests="100", x_ratelimit_remaining_requests="25"
        ),
    )
    for i in range(2):  # learn both models' headroom
        mesh.complete("chat", "warm", model=f"p{i + 1}.m{i + 1}")
    before = served(servers)
    for i in range(40):
        mesh.complete("chat", str(i))
    after = served(servers) - before
    assert after == {"m1": 30, "m2": 10}


# --- concurrency and hygiene --------------------------------------------------------------


def test_hundreds_of_concurrent_requests_keep_exact_counters(servers):
    # The servers share this process (and its GIL): generous timeouts, so that only the
    # injected faults fail.
    cfg = config_for(servers, pool={"strategy": "round-robin"}, n=3)
    for prov in cfg["providers"].values():
        prov["timeouts"] = {"connect": "10s", "first_token": "10s", "total": "30s"}
    mesh = Mesh.from_config(cfg)
    servers[1].set("m2", faults.server_error(500))  # every request m2 gets fails

    async def many():
        try:
            return await asyncio.gather(*(mesh.acomplete("chat", str(i)) for i in range(200)))
        finally:
            await _close_loop_pools(mesh)

    results = asyncio.run(many())
    errors: list[BaseException] = []

    def worker():
        try:
            for i in range(25):
                results.append(mesh.complete("chat", f"t{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 400
    assert all(r.model != "p2.m2" for r in results)
    for i, s in enumerate(servers):
        snap = mesh.snapshot(f"p{i + 1}.m{i + 1}")
        ok = s.count(behaviour="ok")
        assert snap.total_requests == s.count()  # every call the server saw is counted once
        assert sum(r.model == f"p{i + 1}.m{i + 1}" for r in results) == ok
        assert mesh.model(f"p{i + 1}.m{i + 1}").in_flight == 0
    assert mesh.pool("chat").get_state().total_requests == 400


def test_api_key_is_sent_and_never_shown(servers):
    servers[0].api_key = "sk-test-SECRET-123"
    cfg = config_for(servers)
    cfg["providers"]["p1"]["api_key"] = "${MESH_TEST_KEY}"
    mesh = Mesh.from_config(cfg, env={"MESH_TEST_KEY": "sk-test-SECRET-123"})
    events = []
    mesh.on(None, events.append)
    assert mesh.complete("chat", "hi").model == "p1.m1"
    assert servers[0].requests[0].authorization == "Bearer sk-test-SECRET-123"
    servers[0].api_key = "sk-other"
    r = mesh.complete("chat", "hi")  # 401 now: fails over, provider out
    assert r.model == "p2.m2"
    shown = repr(mesh) + repr(mesh.config) + repr(mesh.providers) + repr(events) + repr(r)
    shown += repr(mesh.snapshot("p1.m1")) + json.dumps(mesh.model("p1.m1").state.to_dict())
    assert "SECRET" not in shown
    mesh.close()
