"""``mesh.explain`` and ``modelmesh explain``: the routing decision as a dry run.

What matters: it tells the truth (the model it names is the model the next request
gets, whatever the strategy and state), it says why each other member is out, and it
changes nothing (no provider called, no state, counter, cursor or event moved).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
import yaml

from mesh_core import ManualClock, Mesh
from mesh_core._cli import main
from mesh_core._errors import InvalidRequestError, UnknownPoolError
from mesh_core._explain import Explanation
from mesh_core.testing import faults
from tests.conftest import config_for

STRATEGIES = [
    "stick-until-failure",
    "priority-selection",
    "round-robin",
    "cost-first",
    "latency-first",
    "session-stickiness",
    "rate-limit-aware",
    "load-balanced",
]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def three(servers, pool=None, models=None, clock=None) -> Mesh:
    cfg = config_for(servers, pool, models, n=3)
    return Mesh.from_config(cfg, clock=clock)


def frozen_view(mesh: Mesh) -> dict:
    """Everything explain must leave alone."""
    return {
        "states": {mid: m.state.to_dict() for mid, m in mesh.models.items()},
        "in_flight": {mid: m.in_flight for mid, m in mesh.models.items()},
        "pools": {
            pid: (p.total_requests, p.rotation_events, json.dumps(p.strategy.export_state()))
            for pid, p in mesh.pools.items()
        },
    }


def received(servers) -> int:
    return sum(len(s.requests) for s in servers)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explain_names_the_model_the_next_request_gets_and_changes_nothing(servers, strategy):
    models = {
        "p1.m1": {"pricing": {"input_per_1k": 3.0}},
        "p2.m2": {"pricing": {"input_per_1k": 1.0}},
        "p3.m3": {"pricing": {"input_per_1k": 2.0}},
    }
    pool = {"strategy": strategy, "retry": {"max_attempts": 1}}
    with three(servers, pool, models) as mesh:
        events = []
        mesh.on(None, events.append)
        for i in range(7):  # some history: latencies, a cursor, sessions, headroom
            mesh.complete("chat", f"warm {i}", session_id=f"s{i % 2}")
        for round_ in range(6):
            before, calls, seen = frozen_view(mesh), received(servers), len(events)
            why = mesh.explain("chat", "hello", session_id=f"s{round_ % 2}")
            assert frozen_view(mesh) == before  # no state, counter or cursor moved
            assert received(servers) == calls  # no provider was called
            assert len(events) == seen  # and no event fired
            assert isinstance(why, Explanation) and why.error is None
            assert set(why.order) == set(mesh.models)  # everyone is a candidate here
            served = mesh.complete("chat", "hello", session_id=f"s{round_ % 2}")
            assert served.model == why.chosen, (strategy, round_, str(why))


def test_standby_reason_time_to_recovery_and_the_failover_order(servers):
    clock = ManualClock(1_000_000.0)
    pool = {
        "strategy": "priority-selection",
        "model_priority": ["p1.m1", "p2.m2", "p3.m3"],
        "deactivation": {"retry_limit": 1},
        "recovery": {"cooldown": "30s"},
        "retry": {"max_attempts": 1},
    }
    with three(servers, pool, clock=clock) as mesh:
        servers[0].set("m1", faults.server_error(503))
        assert mesh.complete("chat", "hi").model == "p2.m2"
        mesh.deactivate("p3.m3")
        clock.advance(10)
        why = mesh.explain("chat")
        m1 = why.member("p1.m1")
        assert (m1.status, m1.reason, m1.rank) == ("standby", "error_threshold", None)
        assert m1.recovers_in == pytest.approx(20.0)
        assert "error_threshold" in m1.ruled_out and "20.0s" in m1.ruled_out
        m3 = why.member("p3.m3")
        assert m3.reason == "manual" and m3.recovers_in is None
        assert "mesh.recover()" in m3.ruled_out
        assert why.chosen == "p2.m2" and why.order == ("p2.m2",)
        assert why.member("p2.m2").inputs["priority"] == "model #2"
        assert why.member("p2.m2").rank == 1
        # the cooldown is over: the next request brings p1 back on trial, and explain says so
        # without doing it
        clock.advance(25)
        why = mesh.explain("chat")
        assert mesh.snapshot("p1.m1").status == "standby"  # untouched
        m1 = why.member("p1.m1")
        assert m1.status == "active" and m1.on_trial and "on trial" in m1.note
        assert why.chosen == "p1.m1" and why.order == ("p1.m1", "p2.m2")
        servers[0].set("m1", faults.ok())
        assert mesh.complete("chat", "hi").model == "p1.m1"


def test_what_rules_a_member_out_for_this_request(servers):
    models = {
        "p1.m1": {"features": {"tool_calling": False}},
        "p2.m2": {"context_window": 100},
        "p3.m3": {"features": {"structured_output": False}},
    }
    with three(servers, {"strategy": "priority-selection"}, models) as mesh:
        why = mesh.explain("chat", "x" * 800, tools=[TOOL], max_tokens=50)
        assert why.member("p1.m1").ruled_out == "does not support tool calling"
        assert "context window of 100 tokens" in why.member("p2.m2").ruled_out
        assert why.member("p3.m3").ruled_out is None
        assert why.chosen == "p3.m3" and why.order == ("p3.m3",)
        assert why.request["needs"] == ["tool calling"]
        assert why.request["max_tokens"] == 50
        assert why.request["tools"] == ["f"]
        assert why.request["tokens_needed"] == why.request["prompt_tokens"] + 50

        schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}
        why = mesh.explain("chat", "hi", response_format=schema)
        assert "structured output" in why.member("p3.m3").ruled_out
        assert why.chosen == "p1.m1"

        why = mesh.explain("chat", "hi", model="p2.m2")
        assert why.member("p1.m1").ruled_out == "not the pinned model 'p2.m2'"
        assert why.chosen == "p2.m2"

        # nothing can serve it: what the request would raise is reported, not raised
        why = mesh.explain("chat", "x" * 800, tools=[TOOL], response_format=schema)
        assert why.chosen is None and why.order == ()
        assert why.error.startswith("NoCapableModelError")
        assert "no model would serve it" in str(why)


def test_every_model_in_standby_says_when_the_first_returns_and_whether_it_would_wait(servers):
    clock = ManualClock(1_000_000.0)
    pool = {"deactivation": {"retry_limit": 1}, "recovery": {"cooldown": "40s"}}
    with three(servers, pool, clock=clock) as mesh:
        for mid in mesh.models:
            mesh.deactivate(mid)
        why = mesh.explain("chat")
        assert why.chosen is None and "none recovers by itself" in why.error
        mesh.recover("p2.m2")
        mesh.pool("chat").deactivate(mesh.model("p2.m2"), "error_threshold")
        why = mesh.explain("chat")
        assert why.error.startswith("NoAvailableModelError")
        assert "p2.m2, recovers in 40.0s" in why.error
    pool["wait_for_recovery"] = "1m"
    with three(servers, pool, clock=clock) as mesh:
        for mid in mesh.models:
            mesh.deactivate(mid)
        mesh.recover("p2.m2")
        mesh.pool("chat").deactivate(mesh.model("p2.m2"), "error_threshold")
        why = mesh.explain("chat")
        assert "would wait for p2.m2" in why.reason
        assert "wait_for_recovery: 60.0s" in why.notes


def test_an_open_maintenance_window_is_shown_before_the_next_request_applies_it(servers):
    start = datetime(2026, 6, 1, 12, 10, tzinfo=UTC).timestamp()
    clock = ManualClock(start)
    window = {"cron": "0 12 * * *", "duration": "30m"}
    with three(servers, {"deactivation": {"maintenance_window": window}}, clock=clock) as mesh:
        why = mesh.explain("chat")
        assert all(m.status == "standby" for m in why.members)
        assert {m.reason for m in why.members} == {"maintenance_window"}
        assert why.member("p1.m1").recovers_in == pytest.approx(20 * 60)
        assert why.chosen is None and "maintenance" in str(why)
        assert all(mesh.snapshot(mid).status == "active" for mid in mesh.models)


def test_a_trial_in_flight_is_ruled_out(servers):
    with three(servers) as mesh:
        model = mesh.model("p1.m1")
        model.state.probation = True
        model.in_flight = 1
        model.changed()
        why = mesh.explain("chat")
        assert "trial request is in flight" in why.member("p1.m1").ruled_out
        assert why.chosen == "p2.m2"
        model.in_flight = 0


def test_inputs_of_the_strategies_and_models_outside_the_pool(servers):
    cfg = config_for(servers, {"strategy": "cost-first"}, n=3)
    cfg["models"]["p1.m1"]["pricing"] = {"input_per_1k": 1.0, "output_per_1k": 3.0}
    cfg["models"]["p2.m2"]["pricing"] = {"input_per_1k": 0.5, "output_per_1k": 1.0}
    cfg["models"]["p3.img"] = {"provider": "p3", "capabilities": ["text-to-image"]}
    cfg["pools"]["chat"]["excluded_providers"] = ["p3"]
    with Mesh.from_config(cfg) as mesh:
        mesh.complete("chat", "hi")
        why = mesh.explain("chat")
        assert why.chosen == "p2.m2" and why.reason == "cheapest"
        assert why.member("p1.m1").inputs["price_per_1k"]["blended"] == pytest.approx(1.5)
        assert why.member("p2.m2").inputs["latency_samples"] == 1
        assert why.outside == {
            "p3.m3": "its provider 'p3' is in excluded_providers",
            "p3.img": "its provider 'p3' is in excluded_providers",
        }
        text = str(why)
        assert "$0.625/1k" in text and "not in this pool" in text and "a dry run" in text
        assert json.loads(json.dumps(why.to_dict()))["chosen"] == "p2.m2"


def test_latency_first_shows_latencies_and_its_exploration(servers):
    with three(servers, {"strategy": "latency-first"}) as mesh:
        mesh.complete("chat", "hi")
        why = mesh.explain("chat")
        assert why.chosen == "p1.m1"
        assert "latency_ms" in why.member("p1.m1").inputs
        assert "latency_ms" not in why.member("p2.m2").inputs
        assert "unmeasured" in str(why)
        for _ in range(9):  # the first choice (nothing measured yet) is not counted
            mesh.complete("chat", "hi")
        why = mesh.explain("chat")  # the tenth selection with an unmeasured candidate explores
        assert why.chosen == "p2.m2" and why.reason.startswith("exploring")
        assert mesh.complete("chat", "hi").model == "p2.m2"


def test_a_bad_pool_or_request_raises_as_complete_would(servers):
    with three(servers) as mesh:
        with pytest.raises(UnknownPoolError, match="did you mean 'chat'"):
            mesh.explain("chta")
        with pytest.raises(InvalidRequestError):
            mesh.explain("chat", [])
        with pytest.raises(InvalidRequestError):
            mesh.explain("chat", "hi", tools=[{"type": "function"}])


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def test_the_command_explains_on_the_persisted_state_without_secrets(tmp_path, servers):
    cfg = config_for(servers, {"strategy": "priority-selection"}, n=3)
    cfg["models"]["p3.m3"]["features"] = {"tool_calling": False}
    cfg["providers"]["p1"]["api_key"] = "${EXPLAIN_TEST_KEY}"
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp_path / "state.db")}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with Mesh.from_config(str(path), env={"EXPLAIN_TEST_KEY": "sk-test"}) as mesh:
        mesh.complete("chat", "hi")
        mesh.deactivate("p1.m1")
    calls = received(servers)
    code, text, err = run(
        "explain",
        "chat",
        "--config",
        str(path),
        "--messages",
        "What's the weather?",
        "--tools",
        "get_weather",
        "--max-tokens",
        "200",
    )
    assert code == 0, err
    assert "would be served by p2.m2" in text
    assert "in standby (manual)" in text
    assert "does not support tool calling" in text
    assert "max_tokens 200" in text
    assert received(servers) == calls
    code, text, _ = run("explain", "chat", "--config", str(path), "--json")
    data = json.loads(text)  # nothing but JSON
    assert data["chosen"] == "p2.m2" and data["members"][0]["reason"] == "manual"
    messages = json.dumps([{"role": "user", "content": "hi"}])
    code, text, _ = run("explain", "chat", "--config", str(path), "--messages", messages)
    assert code == 0 and "would be served by p2.m2" in text
    # the state was read, never written: a real mesh still finds p1 in manual standby
    with Mesh.from_config(str(path), env={"EXPLAIN_TEST_KEY": "sk-test"}) as mesh:
        assert mesh.snapshot("p1.m1").deactivation_reason == "manual"
        assert mesh.model("p2.m2").state.total_requests == 0


def test_json_output_is_only_json_even_with_nothing_persisted(tmp_path, servers):
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(config_for(servers)))  # memory storage
    code, text, _ = run("explain", "chat", "--config", str(path), "--json")
    assert code == 0 and json.loads(text)["chosen"] == "p1.m1"
    code, text, _ = run("explain", "chat", "--config", str(path))
    assert text.startswith("(storage: memory: no state is persisted")


def test_the_command_reports_bad_input_in_one_line(tmp_path, servers):
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(config_for(servers)))
    code, _, err = run("explain", "nope", "--config", str(path))
    assert code == 1 and err.startswith("modelmesh explain: unknown pool 'nope'")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run("explain", "chat", "--config", str(path), "--tools", "[not json")
    assert code == 1 and "--tools: not valid JSON" in err
    code, _, err = run("explain", "chat", "--config", str(path), "--messages", "@/nonexistent")
    assert code == 1 and "--messages: cannot read /nonexistent" in err
