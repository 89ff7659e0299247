from datetime import UTC, datetime

import pytest

from mesh_core._clock import ManualClock, next_period_start, period_start
from mesh_core._errors import (
    AuthenticationError,
    BadRequestError,
    ContentPolicyError,
    ContextWindowExceededError,
    ProviderConnectionError,
    ProviderTimeoutError,
    QuotaExhaustedError,
    RateLimitError,
    ServerError,
)
from mesh_core._evaluators import (
    DeactivationEvaluator,
    DeactivationPolicy,
    DeactivationReason as R,
    MaintenanceWindow,
    RecoveryEvaluator,
    RecoveryPolicy,
    counts_against_model,
)
from tests.helpers import snap


def ts(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def evaluator(clock=None, **policy):
    return DeactivationEvaluator(
        DeactivationPolicy(**policy), clock or ManualClock(ts(2026, 1, 7, 12))
    )


def test_no_condition_no_reason():
    ev = evaluator(request_limit=10, token_limit=100, budget_limit=1.0)
    s = snap("m", quota_used=9, tokens_used=99, cost_accumulated=0.99, failure_count=2)
    assert ev.get_reason(s) is None and not ev.should_deactivate(s)


@pytest.mark.parametrize(
    "fields, reason",
    [
        (dict(failure_count=3), R.ERROR_THRESHOLD),
        (dict(error_rate=0.6, window_requests=10), R.ERROR_THRESHOLD),
        (dict(quota_used=10), R.REQUEST_LIMIT),
        (dict(tokens_used=100), R.TOKEN_LIMIT),
        (dict(cost_accumulated=1.0), R.BUDGET_EXCEEDED),
        (dict(last_error_kind="quota_exhausted"), R.QUOTA_EXHAUSTED),
    ],
)
def test_each_threshold(fields, reason):
    ev = evaluator(request_limit=10, token_limit=100, budget_limit=1.0)
    assert ev.get_reason(snap("m", **fields)) is reason


def test_error_rate_needs_enough_samples():
    ev = evaluator(error_rate_min_requests=5)
    assert ev.get_reason(snap("m", error_rate=1.0, window_requests=2, failure_count=2)) is None
    assert ev.get_reason(snap("m", error_rate=0.5, window_requests=6)) is R.ERROR_THRESHOLD


def test_failed_trial_goes_straight_back():
    ev = evaluator(retry_limit=5)
    assert ev.get_reason(snap("m", failure_count=1, probation=True)) is R.ERROR_THRESHOLD
    assert ev.get_reason(snap("m", failure_count=1, probation=False)) is None


def test_priority_order_when_several_hold():
    clock = ManualClock(ts(2026, 1, 4, 2, 30))  # a Sunday, 02:30
    ev = evaluator(
        clock,
        request_limit=1,
        token_limit=1,
        budget_limit=0.1,
        maintenance_window=MaintenanceWindow("* 2-3 * * 0"),
    )
    everything = dict(
        quota_used=5,
        tokens_used=5,
        cost_accumulated=5.0,
        failure_count=9,
        last_error_kind="quota_exhausted",
    )
    order = [
        R.MAINTENANCE_WINDOW,
        R.BUDGET_EXCEEDED,
        R.QUOTA_EXHAUSTED,
        R.ERROR_THRESHOLD,
        R.TOKEN_LIMIT,
        R.REQUEST_LIMIT,
    ]
    assert ev.get_reason(snap("m", **everything)) is order[0]
    clock.set(ts(2026, 1, 4, 4, 0))  # out of the window
    assert ev.get_reason(snap("m", **everything)) is order[1]
    everything["cost_accumulated"] = 0.0
    assert ev.get_reason(snap("m", **everything)) is order[2]
    everything["last_error_kind"] = None
    assert ev.get_reason(snap("m", **everything)) is order[3]
    everything["failure_count"] = 0
    assert ev.get_reason(snap("m", **everything)) is order[4]
    everything["tokens_used"] = 0
    assert ev.get_reason(snap("m", **everything)) is order[5]


def test_minute_set_window_boundaries():
    w = MaintenanceWindow("* 2-3 * * 0")  # Sundays 02:00-03:59
    assert w.state_at(ts(2026, 1, 4, 1, 59, 59)) == (False, ts(2026, 1, 4, 2, 0))
    assert w.state_at(ts(2026, 1, 4, 2, 0)) == (True, ts(2026, 1, 4, 4, 0))
    assert w.state_at(ts(2026, 1, 4, 3, 59, 59)) == (True, ts(2026, 1, 4, 4, 0))
    assert w.state_at(ts(2026, 1, 4, 4, 0))[0] is False
    assert w.state_at(ts(2026, 1, 4, 4, 0))[1] == ts(2026, 1, 11, 2, 0)


def test_cron_with_duration_window_boundaries():
    w = MaintenanceWindow("0 2 * * *", duration=1800)
    assert w.contains(ts(2026, 1, 5, 2, 0)) and w.contains(ts(2026, 1, 5, 2, 29, 59))
    assert not w.contains(ts(2026, 1, 5, 2, 30)) and not w.contains(ts(2026, 1, 5, 1, 59, 59))
    assert w.state_at(ts(2026, 1, 5, 2, 10)) == (True, ts(2026, 1, 5, 2, 30))


def test_invalid_cron_is_rejected():
    with pytest.raises(ValueError):
        MaintenanceWindow("not a cron")


def test_which_failures_count():
    p = DeactivationPolicy(error_codes=frozenset({429, 500, 503}))
    assert counts_against_model(ServerError("x", status_code=503), p)
    assert not counts_against_model(ServerError("x", status_code=502), p)
    assert counts_against_model(RateLimitError("x", status_code=429), p)
    assert counts_against_model(ProviderTimeoutError("x"), p)
    assert counts_against_model(ProviderConnectionError("x"), p)
    assert counts_against_model(QuotaExhaustedError("x", status_code=429), p)
    local = ProviderTimeoutError("no free connection", details={"local": True})
    assert not counts_against_model(local, p)  # our own pool was full
    for caller in (
        BadRequestError("x", status_code=400),
        ContentPolicyError("x"),
        ContextWindowExceededError("x"),
        AuthenticationError("x", status_code=401),
    ):
        assert not counts_against_model(caller, p)


def test_recovery_times_per_reason():
    now = ts(2026, 3, 15, 10)
    deact = DeactivationPolicy(
        quota_window="daily",
        budget_window="monthly",
        maintenance_window=MaintenanceWindow("* 10 * * *"),
    )
    rec = RecoveryEvaluator(RecoveryPolicy(cooldown=60, backoff_factor=2, max_cooldown=300), deact)
    assert rec.recovery_time(R.ERROR_THRESHOLD, now) == now + 60
    assert rec.recovery_time(R.ERROR_THRESHOLD, now, strikes=2) == now + 240
    assert rec.recovery_time(R.ERROR_THRESHOLD, now, strikes=5) == now + 300  # capped
    assert rec.recovery_time(R.QUOTA_EXHAUSTED, now, retry_after=200) == now + 200  # Retry-After
    assert rec.recovery_time(R.QUOTA_EXHAUSTED, now, retry_after=900) == now + 300  # ... capped
    assert rec.recovery_time(R.REQUEST_LIMIT, now) == ts(2026, 3, 16)
    assert rec.recovery_time(R.TOKEN_LIMIT, now) == ts(2026, 3, 16)
    assert rec.recovery_time(R.BUDGET_EXCEEDED, now) == ts(2026, 4, 1)
    assert rec.recovery_time(R.MAINTENANCE_WINDOW, now) == ts(2026, 3, 15, 11)
    assert rec.recovery_time(R.MANUAL, now) is None
    assert rec.recovery_time(R.AUTHENTICATION_FAILED, now) is None
    assert rec.needs_trial("error_threshold") and rec.needs_trial("quota_exhausted")
    assert not rec.needs_trial("request_limit")


def test_periods_in_utc():
    t = ts(2026, 12, 31, 23, 59)
    assert period_start("monthly", t) == ts(2026, 12, 1)
    assert next_period_start("monthly", t) == ts(2027, 1, 1)
    assert next_period_start("daily", t) == ts(2027, 1, 1)
    assert period_start("weekly", ts(2026, 1, 7, 5)) == ts(2026, 1, 5)  # Monday
    assert next_period_start("hourly", t) == ts(2027, 1, 1)


def test_roll_periods_resets_counters_at_the_boundary():
    from mesh_core._state import ModelState

    p = DeactivationPolicy(quota_window="daily", budget_window="monthly")
    s = ModelState()
    p.roll_periods(s, ts(2026, 5, 30, 12))
    s.record_success(0.1, 50, 2.0, now=ts(2026, 5, 30, 12))
    assert not p.roll_periods(s, ts(2026, 5, 30, 23, 59))
    assert p.roll_periods(s, ts(2026, 5, 31, 0, 0))
    assert (s.quota_used, s.tokens_used, s.cost_accumulated) == (0, 0, 2.0)
    p.roll_periods(s, ts(2026, 6, 1, 0, 0))
    assert s.cost_accumulated == 0.0 and s.total_cost == 2.0


@pytest.mark.parametrize(
    "retry_after, expected",
    [
        (None, 60.0),
        (200.0, 200.0),
        (300.0, 300.0),
        (1e308, 300.0),  # capped by max_cooldown, not "out for good"
        (float("inf"), 300.0),
        (float("nan"), 60.0),  # says nothing: ignored
        (-5.0, 60.0),
        (0.0, 60.0),
    ],
)
def test_retry_after_is_honoured_up_to_max_cooldown(retry_after, expected):
    rec = RecoveryEvaluator(RecoveryPolicy(cooldown=60, backoff_factor=2, max_cooldown=300))
    assert rec.cooldown_for(0, retry_after) == expected
    now = ts(2026, 3, 15, 10)
    assert rec.recovery_time(R.ERROR_THRESHOLD, now, retry_after=retry_after) == now + expected


def test_cooldown_ceiling_is_never_below_the_base_cooldown():
    # max_cooldown below cooldown: the ceiling is the cooldown itself
    rec = RecoveryEvaluator(RecoveryPolicy(cooldown=600, max_cooldown=60))
    assert rec.cooldown_for(0, None) == 600
    assert rec.cooldown_for(3, float("inf")) == 600


def test_backoff_after_very_many_failed_trials_stays_finite():
    rec = RecoveryEvaluator(RecoveryPolicy(cooldown=60, backoff_factor=2, max_cooldown=300))
    assert rec.cooldown_for(5000, None) == 300  # 2.0**5000 would overflow
    assert RecoveryEvaluator(RecoveryPolicy(cooldown=0)).cooldown_for(5000, None) == 0


def test_maintenance_window_is_seen_after_the_clock_is_set_back_into_it():
    clock = ManualClock(ts(2026, 1, 4, 4, 30))  # a Sunday, 04:30: after the 02:00-03:59 window
    ev = evaluator(clock, maintenance_window=MaintenanceWindow("* 2-3 * * 0"))
    assert ev.get_reason(snap("m")) is None  # cached: outside until next Sunday
    clock.jump(-3600)  # 03:30: inside again
    assert ev.get_reason(snap("m")) is R.MAINTENANCE_WINDOW
