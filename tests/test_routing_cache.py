"""The request path decides over cached state: a change is seen by the very next selection.

The pool keeps its members' snapshots until their state moves, the default strategy's
usual answer is taken without a snapshot, and deactivation is judged on the state itself
(bench/routing.py). These tests would catch a cache that went stale: every change below
(a model deactivated, recovered, on trial, failing, slower, a policy or strategy
replaced, a member added) must be seen by the next request, from threads and tasks alike.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from mesh_core import Mesh
from mesh_core._clock import ManualClock
from mesh_core._config import load_config
from mesh_core._errors import (
    AllProvidersExhaustedError,
    ErrorKind,
    NoAvailableModelError,
    provider_error,
)
from mesh_core._evaluators import DeactivationEvaluator, DeactivationPolicy
from mesh_core._pool import Model
from mesh_core._state import ModelSnapshot, ModelState
from mesh_core.providers._base import ProviderReply
from mesh_core.providers._wire import parse_completion
from mesh_core.strategies import StickUntilFailureStrategy

_BODY = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
)


class Provider:
    """Answers at once; the models named in ``failing`` answer 503 instead."""

    provider_id = "p"

    def __init__(self) -> None:
        self.reply = ProviderReply(parse_completion(_BODY), None)
        self.failing: set[str] = set()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def complete(self, name: str, *args: object) -> ProviderReply:
        with self._lock:
            self.calls.append(name)
        if name in self.failing:
            raise provider_error(ErrorKind.SERVER_ERROR, "down", status_code=503)
        return self.reply

    async def acomplete(self, name: str, *args: object) -> ProviderReply:
        return self.complete(name, *args)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def mesh_of(n: int = 3, clock: ManualClock | None = None, **pool: object) -> tuple[Mesh, Provider]:
    config = load_config(
        {
            "providers": {"p": {"base_url": "http://127.0.0.1:9/v1"}},
            "models": {f"p.m{i}": {"provider": "p"} for i in range(1, n + 1)},
            "pools": {
                "chat": {
                    "capability": "chat-completion",
                    "retry": {"max_attempts": 1},
                    **pool,
                }
            },
        }
    )
    provider = Provider()
    return Mesh(config, clock=clock or ManualClock(), providers={"p": provider}), provider


def served(mesh: Mesh) -> str:
    return mesh.complete("chat", "hi").model


def test_a_deactivated_current_model_is_left_at_the_next_request():
    mesh, _ = mesh_of()
    assert served(mesh) == served(mesh) == "p.m1"
    mesh.deactivate("p.m1")
    assert served(mesh) == "p.m2"
    mesh.recover("p.m1")  # stick-until-failure: m2 keeps the traffic
    assert served(mesh) == "p.m2"
    mesh.deactivate("p.m2")
    assert served(mesh) == "p.m3"  # the next after m2 in pool order


def test_a_recovered_model_takes_traffic_back_at_once_under_priority():
    mesh, _ = mesh_of(strategy="priority-selection")
    assert served(mesh) == "p.m1"
    mesh.deactivate("p.m1")
    assert served(mesh) == "p.m2"
    mesh.recover("p.m1")
    assert served(mesh) == "p.m1"


def test_a_failure_deactivates_from_the_state_and_the_next_request_goes_elsewhere():
    mesh, provider = mesh_of(deactivation={"retry_limit": 2})
    assert served(mesh) == "p.m1"
    provider.failing.add("m1")
    assert served(mesh) == "p.m2"  # m1 failed once, the request failed over
    assert mesh.snapshot("p.m1").status == "active"
    mesh.recover("p.m1")  # not in standby: nothing to do
    assert served(mesh) == "p.m2"
    assert mesh.snapshot("p.m1").failure_count == 1


def test_a_model_back_on_trial_serves_one_request_at_a_time_even_when_current():
    clock = ManualClock()
    mesh, provider = mesh_of(
        2, clock, deactivation={"retry_limit": 1}, recovery={"cooldown": "10s"}
    )
    provider.failing.update({"m1", "m2"})
    with pytest.raises(AllProvidersExhaustedError):
        served(mesh)
    assert {mesh.snapshot(m).status for m in ("p.m1", "p.m2")} == {"standby"}
    clock.advance(11)
    provider.failing.clear()
    pool, router = mesh.pool("chat"), mesh._router
    first = pool.choose(mesh_request())[0]  # the strategy's current model, on trial
    assert first.state.probation
    first.in_flight += 1  # its trial is under way
    try:
        second = pool.choose(mesh_request())[0]
        assert second is not first  # the trial model is not chosen twice
        first.in_flight -= 1
        router.succeeded(pool, first, None, 0.01, None, release=False)
        assert not first.state.probation
        assert pool.choose(mesh_request())[0] is second  # the strategy rotated to it
    finally:
        first.in_flight = 0


def mesh_request():
    from mesh_core._types import CompletionRequest

    return CompletionRequest(model="chat", messages=[{"role": "user", "content": "hi"}])


def test_a_latency_change_is_seen_by_the_next_selection():
    mesh, _ = mesh_of(2, strategy="latency-first")
    pool, router = mesh.pool("chat"), mesh._router
    m1, m2 = mesh.model("p.m1"), mesh.model("p.m2")
    for model, latency in ((m1, 0.5), (m2, 0.1)):
        model.in_flight += 1
        router.succeeded(pool, model, None, latency, None)
    assert pool.choose(mesh_request())[0] is m2
    for _ in range(5):  # m2 slows down: its snapshot must be rebuilt
        m2.in_flight += 1
        router.succeeded(pool, m2, None, 2.0, None)
    assert pool.choose(mesh_request())[0] is m1


def test_a_replaced_deactivation_policy_is_used_by_the_next_failure():
    mesh, provider = mesh_of(deactivation={"retry_limit": 5})
    provider.failing.add("m1")
    served(mesh)
    assert mesh.snapshot("p.m1").status == "active"
    deact = mesh.pool("chat").rotation_policy.deactivation
    deact.policy = DeactivationPolicy(retry_limit=2)
    mesh.pool("chat").strategy.current = "p.m1"  # back to m1 for the next request
    served(mesh)
    assert mesh.snapshot("p.m1").status == "standby"


def test_a_replaced_strategy_is_asked_by_the_next_selection():
    mesh, _ = mesh_of()
    assert served(mesh) == "p.m1"
    asked = []

    class Last(StickUntilFailureStrategy):
        def select(self, candidates, request):
            asked.append([c.model_id for c in candidates])
            return self._result(candidates[-1], 1.0, "last")

    pool = mesh.pool("chat")
    strategy = Last()
    strategy.bind("chat", [m.id for m in pool.models])
    strategy.current = "p.m1"  # a subclass is never answered for: its select decides
    pool.rotation_policy.strategy = strategy
    assert served(mesh) == "p.m3"
    assert asked == [["p.m1", "p.m2", "p.m3"]]


def test_an_evaluator_subclass_is_given_snapshots():
    seen = []

    class Watching(DeactivationEvaluator):
        def get_reason(self, snapshot):
            seen.append(type(snapshot))
            return super().get_reason(snapshot)

    mesh, _ = mesh_of()
    pool = mesh.pool("chat")
    pool.rotation_policy.deactivation = Watching(pool.rotation_policy.deactivation.policy)
    served(mesh)
    assert seen == [ModelSnapshot]


def test_judging_a_state_is_judging_its_snapshot():
    """The router gives the evaluator a state, not a snapshot: same fields, same verdict."""
    policy = DeactivationPolicy(
        retry_limit=3, error_rate_min_requests=4, request_limit=10, token_limit=500, budget_limit=2
    )
    deact = DeactivationEvaluator(policy, ManualClock())
    verdicts = set()
    for case in itertools.product(
        (0, 1, 3),  # failures
        (0, 2, 6),  # successes
        (False, True),  # on trial
        (None, "quota_exhausted", "server_error"),
        (0, 10),  # requests this quota period
        (0, 500),  # tokens
        (0.0, 2.0),  # cost
    ):
        failures, successes, probation, kind, quota, tokens, cost = case
        st = ModelState(window_size=8)
        for _ in range(successes):
            st.record_success(0.1, 0, 0.0, now=1.0)
        for _ in range(failures):
            st.record_failure(RuntimeError("x"), now=1.0)
        st.probation, st.last_error_kind = probation, kind
        st.quota_used, st.tokens_used, st.cost_accumulated = quota, tokens, cost
        verdict = deact.get_reason(st)  # type: ignore[arg-type]
        assert verdict == deact.get_reason(st.snapshot("m", "p", 1.0)), case
        verdicts.add(verdict)
    assert len(verdicts) == 6  # every reason but maintenance, and None


def test_a_member_added_later_counts_in_the_smallest_window():
    mesh, _ = mesh_of(2)
    pool = mesh.pool("chat")
    assert pool.min_context_window is None
    pool.add_model(Model("p.small", "p", "small", context_window=1000))
    assert pool.min_context_window == 1000
    pool.remove_model(mesh.pools["chat"].models[-1])
    assert pool.min_context_window is None


def test_a_snapshot_is_the_state_at_the_time_it_was_taken():
    st = ModelState()
    st.record_success(0.25, 7, 0.5, now=1_700_000_000.0)
    snap = st.snapshot("m", "p", 1_700_000_000.0, input_price=1.0, output_price=2.0)
    assert type(snap) is ModelSnapshot
    assert snap == ModelSnapshot(
        model_id="m",
        provider_id="p",
        status="active",
        failure_count=0,
        error_rate=0.0,
        cooldown_remaining=0.0,
        quota_used=1,
        tokens_used=7,
        cost_accumulated=0.5,
        latency_history=(0.25,),
        last_request=snap.last_request,
        window_requests=1,
        total_requests=1,
        input_price=1.0,
        output_price=2.0,
        latency_mean=0.25,
    )
    assert snap.last_request is not None and snap.last_request.timestamp() == 1_700_000_000.0
    with pytest.raises(AttributeError):
        snap.status = "standby"  # type: ignore[misc]
    st.record_success(1.0, 1, 0.0, now=1_700_000_001.0)
    assert snap.quota_used == 1 and snap.latency_history == (0.25,)


def test_threads_and_tasks_see_every_deactivation_and_leave_nothing_in_flight():
    mesh, provider = mesh_of(4, deactivation={"retry_limit": 1}, recovery={"cooldown": "1h"})
    errors: list[BaseException] = []
    served_by: list[str] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(200):
            if i == 0 and j == 50:
                provider.failing.add("m1")
            if i == 1 and j == 100:
                mesh.deactivate("p.m2")
            try:
                served_by.append(served(mesh))
            except NoAvailableModelError as exc:  # pragma: no cover - would be a bug
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def tasks() -> list[str]:
        return [
            r.model
            for r in await asyncio.gather(*(mesh.acomplete("chat", "hi") for _ in range(100)))
        ]

    after = asyncio.run(tasks())
    assert errors == []
    assert len(served_by) == 1600
    assert mesh.snapshot("p.m1").status == "standby"
    assert mesh.snapshot("p.m2").status == "standby"
    assert set(after) <= {"p.m3", "p.m4"}
    assert all(m.in_flight == 0 for m in mesh.models.values())
    state = mesh.pool("chat").get_state()
    assert (state.active_count, state.standby_count) == (2, 2)
