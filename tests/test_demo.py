import io

from mesh_core import Mesh
from mesh_core._demo import run_demo, warm_up
from mesh_core.testing import FaultServer


def run() -> list[str]:
    out = io.StringIO()
    run_demo(requests=28, pace=0, out=out)
    return out.getvalue().splitlines()


def test_demo_shows_failover_standby_recovery_and_a_cut_stream():
    lines = run()
    text = "\n".join(lines)
    assert "failed over from alpha.fast: server_error" in text
    assert "beta.smart → standby (quota_exhausted" in text
    assert "back from standby" in text
    assert "alpha.fast broke mid-answer after 'Hello from fast.'" in text
    assert "took the answer over" in text
    hedged = next(line for line in lines if line.startswith("#10"))
    assert "alpha.fast's first token was late: hedged, gamma.backup answered first" in hedged
    assert "failed over" not in hedged  # slow is not a failure
    assert "beta.smart → standby (quota_exhausted, back in 4.0s)" in text  # a failed trial
    assert lines[-3].startswith("alpha.fast")
    assert lines[-5].split() == ["model", "status", "reason", "requests", "failures", "tokens"]


def test_each_standby_and_recovery_is_told_under_the_request_that_caused_it():
    lines = run()
    events = [i for i, line in enumerate(lines) if "→ standby" in line or "back from" in line]
    assert events
    for i in events:
        above = i - 1
        while "→ standby" in lines[above] or "back from" in lines[above]:
            above -= 1
        assert lines[above].startswith("#"), (lines[above], lines[i])
    # alpha's second 503 in a row (retry_limit 2) is what puts it in standby: the line
    # comes under that request, not above it
    first = next(i for i in events if "alpha.fast → standby" in lines[i])
    assert "failed over from alpha.fast: server_error" in lines[first - 1]
    assert lines[first - 1].startswith("#05")
    # a recovery happens when a request finds the cooldown over: under that request
    back = next(i for i in events if "alpha.fast back from standby" in lines[i])
    assert lines[back - 1].startswith("#09 complete → alpha.fast")


def test_warm_up_opens_each_connection_without_touching_the_mesh_state():
    with FaultServer() as server:
        config = {
            "providers": {"a": {"base_url": server.base_url}},
            "models": {"a.one": {"provider": "a"}, "a.two": {"provider": "a"}},
            "pools": {"p": {"capability": "chat-completion"}},
        }
        with Mesh.from_config(config) as mesh:
            seen = []
            mesh.on(None, seen.append)
            warm_up(mesh)
            assert sorted(r.model for r in server.requests) == ["one", "two"]
            assert seen == []  # no event, no counter, no latency: the story starts clean
            for mid in mesh.models:
                state = mesh.model(mid).state
                assert state.total_requests == 0 and state.latency_history == []
            # the demo's first request reuses the connection the warm-up opened
            mesh.complete("p", "hi")
            ports = {r.client_port for r in server.requests if r.model == "one"}
            assert len(ports) == 1


def test_the_demo_says_its_times_are_not_connection_set_up():
    lines = run()
    first = next(i for i, line in enumerate(lines) if line.startswith("#01"))
    assert "warm-up" in "\n".join(lines[:first])
