from collections import Counter

import pytest

from mesh_core._clock import ManualClock
from mesh_core._errors import NoAvailableModelError, SessionModelUnavailableError
from mesh_core.strategies import (
    SHIPPED_STRATEGIES,
    BalanceMode,
    SelectionStrategy,
    StrategyContext,
    create_strategy,
    register_strategy,
    resolve_strategy_id,
)
from tests.helpers import req, snap

IDS = ["a", "b", "c", "d"]


CONTEXT = ("model_priority", "provider_priority", "clock")


def make(name, ids=IDS, **opts):
    """The strategy with these options (validated by its options model) and context."""
    context = StrategyContext(**{k: opts.pop(k) for k in CONTEXT if k in opts})
    s = create_strategy(name, opts, context)
    s.bind("pool", ids)
    return s


def pick(strategy, cands, **kw):
    return strategy.select(cands, req(**kw)).model_id


def cands(*ids, **kw):
    return [snap(i, **kw) for i in ids]


def test_all_eight_are_registered_under_their_ids():
    ids = {cls.strategy_id for cls in SHIPPED_STRATEGIES}
    assert ids == {
        "modelmesh.stick-until-failure.v1",
        "modelmesh.priority-selection.v1",
        "modelmesh.round-robin.v1",
        "modelmesh.cost-first.v1",
        "modelmesh.latency-first.v1",
        "modelmesh.session-stickiness.v1",
        "modelmesh.rate-limit-aware.v1",
        "modelmesh.load-balanced.v1",
    }
    assert resolve_strategy_id("round-robin") == "modelmesh.round-robin.v1"
    assert resolve_strategy_id("rotation.modelmesh.cost-first.v1") == "modelmesh.cost-first.v1"
    with pytest.raises(KeyError, match="did you mean"):
        resolve_strategy_id("round-robbin")


@pytest.mark.parametrize("cls", SHIPPED_STRATEGIES)
def test_every_strategy_raises_on_no_candidates(cls):
    s = cls()
    s.bind("pool", IDS)
    with pytest.raises(NoAvailableModelError):
        s.select([], req())


def test_stick_until_failure_keeps_current_and_does_not_move_back():
    s = make("stick-until-failure")
    assert pick(s, cands("a", "b", "c")) == "a"
    assert pick(s, cands("a", "b", "c")) == "a"
    assert pick(s, cands("b", "c")) == "b"  # a failed / went to standby
    assert pick(s, cands("a", "b", "c")) == "b"  # a recovered: b keeps traffic
    assert pick(s, cands("a", "c")) == "c"  # b failed: next after b in pool order
    assert pick(s, cands("a", "b")) == "a"  # c failed: wrap around


def test_stick_until_failure_first_choice_follows_priority():
    s = make("stick-until-failure", model_priority=("c",))
    assert pick(s, cands("a", "b", "c")) == "c"


def test_priority_selection_returns_at_once_to_recovered_model():
    s = make("priority-selection", model_priority=("c", "a"))
    assert pick(s, cands("a", "b", "c")) == "c"
    assert pick(s, cands("a", "b")) == "a"
    assert pick(s, cands("a", "b", "c")) == "c"


def test_priority_selection_provider_priority_then_fallback():
    s = make("priority-selection", provider_priority=("y", "x"))
    c = [snap("a", "x"), snap("b", "y"), snap("c", "z")]
    assert pick(s, c) == "b"
    assert pick(s, [c[0], c[2]]) == "a"
    # none of the listed providers: round-robin fallback over what is left
    rest = [snap("c", "z"), snap("d", "z")]
    assert [pick(s, rest) for _ in range(4)] == ["c", "d", "c", "d"]


def test_priority_selection_error_fallback():
    s = make("priority-selection", model_priority=("a",), fallback_strategy="error")
    with pytest.raises(NoAvailableModelError):
        pick(s, cands("b", "c"))


def test_priority_selection_without_lists_uses_pool_order():
    s = make("priority-selection")
    assert pick(s, cands("b", "c")) == "b"


def test_round_robin_skips_standby_and_rejoins_at_position():
    s = make("round-robin")
    all4 = cands(*IDS)
    assert [pick(s, all4) for _ in range(5)] == ["a", "b", "c", "d", "a"]
    without_c = cands("a", "b", "d")
    assert [pick(s, without_c) for _ in range(3)] == ["b", "d", "a"]
    assert [pick(s, all4) for _ in range(4)] == ["b", "c", "d", "a"]  # c back in its slot


def test_cost_first_ranks_by_blended_price_and_unpriced_last():
    s = make("cost-first", output_ratio=0.5)
    c = [
        snap("a"),
        snap("b", input_price=1.0, output_price=3.0),
        snap("c", input_price=0.5, output_price=3.0),
        snap("d", input_price=1.5, output_price=2.0),
    ]
    # blended: b=2.0, c=1.75, d=1.75 -> tie between c and d goes to pool order
    assert pick(s, c) == "c"
    assert pick(s, [c[0], c[1]]) == "b"
    assert pick(s, [c[0]]) == "a"


def test_latency_first_prefers_fast_and_does_not_blindly_prefer_unknown():
    s = make("latency-first")
    c = [
        snap("a", latency_history=(0.5, 0.7)),
        snap("b", latency_history=(0.2,)),
        snap("c"),
        snap("d", latency_history=(0.9,)),
    ]
    assert pick(s, c) == "b"
    # with b gone, the fastest measured model wins; unmeasured c is not given a latency
    assert pick(s, [c[0], c[2], c[3]]) == "a"
    assert pick(s, [c[2], c[3]]) == "d"
    assert pick(make("latency-first"), [snap("x"), snap("y")]) == "x"  # nothing known: order


def test_latency_first_gives_unmeasured_models_a_bounded_share():
    # The case that starved before: the unmeasured model would get the median of the
    # others, tie with the slowest at best, and lose on pool order for ever.
    c = [
        snap("a", latency_history=(0.1,)),
        snap("b", latency_history=(0.3,)),
        snap("c"),
        snap("d"),
    ]
    s = make("latency-first")
    counts = Counter(pick(s, c) for _ in range(100))
    assert counts["a"] == 90  # the fastest keeps nine requests in ten
    assert counts["c"] == counts["d"] == 5  # the unmeasured ones take turns at the rest
    assert counts["b"] == 0
    s = make("latency-first")
    assert "c" in [pick(s, c) for _ in range(10)]  # tried (so measured) within ten requests
    # once measured, a model competes on its latency and exploration stops
    measured = [c[0], c[1], snap("c", latency_history=(0.05,)), snap("d", latency_history=(0.2,))]
    s = make("latency-first")
    assert {pick(s, measured) for _ in range(30)} == {"c"}
    # the share is configurable, and 0 turns exploration off
    s = make("latency-first", explore_every=4)
    assert Counter(pick(s, c) for _ in range(100))["a"] == 75
    s = make("latency-first", explore_every=0)
    assert {pick(s, c) for _ in range(50)} == {"a"}
    with pytest.raises(ValueError, match="explore_every"):
        make("latency-first", explore_every=-1)


def test_latency_first_exploration_state_survives_a_restart():
    c = [snap("a", latency_history=(0.1,)), snap("b")]
    s = make("latency-first")
    assert [pick(s, c) for _ in range(9)] == ["a"] * 9
    s2 = make("latency-first")
    s2.import_state(s.export_state())
    assert pick(s2, c) == "b"  # the tenth selection, after the restart


def test_session_stickiness_fallback_and_timeout():
    clock = ManualClock(1000.0)
    s = make("session-stickiness", clock=clock, session_timeout=60.0)
    assert pick(s, cands("a", "b"), session_id="s1") == "a"
    assert pick(s, cands("b", "a"), session_id="s1") == "a"
    assert pick(s, cands("b", "c"), session_id="s1") == "b"  # a gone: reassigned
    assert pick(s, cands("a", "b", "c"), session_id="s1") == "b"  # stays on the new model
    clock.advance(61)
    assert pick(s, cands("a", "b"), session_id="s1") == "a"  # expired: assigned afresh
    state = s.export_state()
    s2 = make("session-stickiness", clock=clock)
    s2.import_state(state)
    assert s2.assignment("s1") == "a"


def test_session_stickiness_strict():
    s = make("session-stickiness", affinity_mode="strict")
    assert pick(s, cands("a", "b"), session_id="s") == "a"
    with pytest.raises(SessionModelUnavailableError):
        pick(s, cands("b"), session_id="s")


def test_rate_limit_aware_switches_before_the_limit():
    s = make("rate-limit-aware", rate_limit={"threshold": 0.8})
    fresh = [
        snap("a", requests_remaining=50, requests_limit=100),
        snap("b", requests_remaining=90, requests_limit=100),
    ]
    assert pick(s, fresh) == "a"  # a is preferred while below the threshold
    hot = [
        snap("a", requests_remaining=15, requests_limit=100),
        snap("b", requests_remaining=90, requests_limit=100),
    ]
    assert pick(s, hot) == "b"
    both = [
        snap("a", requests_remaining=5, requests_limit=100),
        snap("b", requests_remaining=10, requests_limit=100),
    ]
    assert pick(s, both) == "b"  # all over: most headroom


def test_rate_limit_aware_local_rpm_and_min_delta():
    clock = ManualClock(0.0)
    s = make("rate-limit-aware", clock=clock, rate_limit={"max_rpm": 2})
    c = cands("a", "b")
    # a until it has served max_rpm in the minute, then b; then both are full: first wins
    assert [pick(s, c) for _ in range(5)] == ["a", "a", "b", "b", "a"]
    clock.advance(61)  # the minute has passed: a is preferred again
    assert pick(s, c) == "a"
    d = make("rate-limit-aware", clock=clock, rate_limit={"min_delta": 5.0})
    assert pick(d, c) == "a"
    assert pick(d, c) == "b"  # a served less than 5 s ago
    clock.advance(5)
    assert pick(d, c) == "a"


def test_load_balanced_relative_and_absolute():
    s = make("load-balanced", balance_mode=BalanceMode.RELATIVE)
    c = [
        snap("a", requests_remaining=75, requests_limit=100),
        snap("b", requests_remaining=25, requests_limit=100),
    ]
    counts = Counter(pick(s, c) for _ in range(100))
    assert counts == {"a": 75, "b": 25}
    a = make("load-balanced", balance_mode=BalanceMode.ABSOLUTE)
    c = [
        snap("a", requests_remaining=100, requests_limit=1000),
        snap("b", requests_remaining=300, requests_limit=300),
    ]
    counts = Counter(pick(a, c) for _ in range(40))
    assert counts == {"a": 10, "b": 30}


def test_load_balanced_without_data_is_equal_and_unknown_gets_median():
    s = make("load-balanced")
    assert Counter(pick(s, cands("a", "b", "c")) for _ in range(30)) == {"a": 10, "b": 10, "c": 10}
    s = make("load-balanced")
    c = [
        snap("a", requests_remaining=20, requests_limit=100),
        snap("b", requests_remaining=60, requests_limit=100),
        snap("c"),
    ]
    counts = Counter(pick(s, c) for _ in range(120))
    assert counts == {"a": 20, "b": 60, "c": 40}  # c gets the median weight: 0.4 of 0.2 and 0.6


def test_custom_strategy_registers_and_is_created_by_id():
    class Last(SelectionStrategy):
        strategy_id = "acme.last.v1"

        def score(self, candidate, request):
            return float(self._position.get(candidate.model_id, 0))

    register_strategy("acme.last.v1", Last)
    s = make("acme.last.v1")
    assert pick(s, cands("a", "b", "c")) == "c"
    with pytest.raises(ValueError):
        register_strategy("acme.last.v1", type("Other", (SelectionStrategy,), {}))


@pytest.mark.parametrize("cls", SHIPPED_STRATEGIES)
def test_deterministic_given_same_inputs(cls):
    def run():
        s = cls(context=StrategyContext(clock=ManualClock(0.0)))
        s.bind("pool", IDS)
        c = [
            snap(
                i,
                latency_history=(0.1 * (k + 1),),
                input_price=1.0 + k,
                requests_remaining=10 * (k + 1),
                requests_limit=100,
            )
            for k, i in enumerate(IDS)
        ]
        return [s.select(c[k % 2 :], req(session_id=f"s{k % 3}")).model_id for k in range(12)]

    assert run() == run()
