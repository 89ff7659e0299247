import json
import math
import sys

import pytest

from mesh_core._clock import ManualClock
from mesh_core._errors import ErrorKind, RateLimitError, ServerError
from mesh_core._state import ACTIVE, STANDBY, ModelState, StateLimits


def test_seed_fields_and_defaults():
    s = ModelState()
    assert (s.status, s.failure_count, s.error_rate, s.cooldown_remaining) == (ACTIVE, 0, 0.0, 0.0)
    assert (s.quota_used, s.tokens_used, s.cost_accumulated) == (0, 0, 0.0)
    assert s.latency_history == [] and s.last_request is None and s.last_failure is None
    assert s.deactivation_reason is None
    assert s.is_healthy() and not s.is_over_quota() and not s.is_over_budget()


def test_success_resets_consecutive_failures_and_counts_usage():
    s = ModelState()
    s.record_failure(ServerError("boom", status_code=503), now=10.0)
    s.record_failure(ServerError("boom", status_code=503), now=11.0)
    assert s.failure_count == 2 and s.last_failure == 11.0
    s.record_success(0.25, tokens=30, cost=0.01, now=12.0)
    assert s.failure_count == 0
    assert s.quota_used == 1 and s.tokens_used == 30 and s.cost_accumulated == 0.01
    assert s.latency_history == [0.25] and s.last_request == 12.0
    assert abs(s.error_rate - 2 / 3) < 1e-9


def test_error_rate_is_over_a_sliding_window():
    s = ModelState(window_size=4)
    for _ in range(4):
        s.record_failure(ServerError("x"), now=1.0)
    assert s.error_rate == 1.0
    for _ in range(3):
        s.record_success(0.1, 1, 0.0, now=2.0)
    # window now holds F S S S
    assert s.error_rate == 0.25
    s.record_success(0.1, 1, 0.0, now=3.0)
    assert s.error_rate == 0.0


def test_latency_history_is_bounded():
    s = ModelState(latency_window=5)
    for i in range(12):
        s.record_success(float(i), 0, 0.0, now=1.0)
    assert s.latency_history == [7.0, 8.0, 9.0, 10.0, 11.0]


def test_health_quota_and_budget_follow_limits():
    s = ModelState(
        limits=StateLimits(
            request_limit=2,
            token_limit=100,
            budget_limit=1.0,
            error_rate_threshold=0.5,
            error_rate_min_requests=2,
        )
    )
    s.record_success(0.1, 10, 0.4, now=1.0)
    assert not s.is_over_quota()
    s.record_success(0.1, 10, 0.7, now=1.0)
    assert s.is_over_quota() and s.is_over_budget()
    s.record_failure(ServerError("x"), now=2.0)
    s.record_failure(ServerError("x"), now=2.0)
    assert not s.is_healthy()  # 2 of 4 failed = 0.5 >= threshold
    s.status = STANDBY
    assert not s.is_healthy()


def test_failure_keeps_kind_and_retry_after():
    s = ModelState()
    s.record_failure(RateLimitError("slow down", status_code=429, retry_after=7.0), now=5.0)
    assert s.last_error_kind == ErrorKind.RATE_LIMITED.value and s.retry_after == 7.0


def test_round_trip_is_lossless_and_json_safe():
    s = ModelState(window_size=7)
    s.record_success(0.5, 12, 0.002, now=100.0)
    s.record_failure(RateLimitError("x", retry_after=3.0), now=101.0)
    s.status, s.deactivation_reason, s.recover_at, s.strikes = STANDBY, "error_threshold", 160.0, 2
    s.quota_period_start, s.requests_remaining, s.requests_limit = 0.0, 5, 100
    data = json.loads(json.dumps(s.to_dict()))
    back = ModelState.from_dict(data)
    assert back.to_dict() == s.to_dict()
    assert list(back.outcomes) == [True, False] and back.window_size == 7
    assert "limits" not in data and "version" not in data


def test_snapshot_is_immutable_and_reports_cooldown():
    s = ModelState(status=STANDBY, recover_at=130.0, deactivation_reason="error_threshold")
    snap = s.snapshot("a.m", "a", now=100.0, input_price=0.5)
    assert snap.cooldown_remaining == 30.0 and snap.input_price == 0.5
    assert snap.status == STANDBY and snap.deactivation_reason == "error_threshold"
    try:
        snap.status = ACTIVE  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("snapshot must be frozen")


@pytest.mark.parametrize(
    "sent, kept",
    [(7.0, 7.0), (-3.0, 0.0), (float("inf"), sys.float_info.max), (float("nan"), None)],
)
def test_retry_after_is_kept_finite_and_non_negative(sent, kept):
    s = ModelState()
    s.record_failure(RateLimitError("slow down", status_code=429, retry_after=sent), now=5.0)
    assert s.retry_after == kept
    json.dumps(s.to_dict(), allow_nan=False)  # still JSON-safe


def test_a_cooldown_is_judged_on_the_monotonic_clock():
    clock = ManualClock(1000.0, monotonic=50.0)
    s = ModelState(status=STANDBY, deactivation_reason="error_threshold")
    s.set_recover_at(1060.0, clock.time(), clock.monotonic())
    assert s.recover_mono == 110.0
    clock.jump(-3600)  # the wall clock is set back an hour
    assert s.recovers_in(clock.time(), clock.monotonic()) == 60.0
    clock.advance(60)
    assert s.recovers_in(clock.time(), clock.monotonic()) == 0.0
    assert s.snapshot("a.m", "a", clock.time(), mono=clock.monotonic()).cooldown_remaining == 0


def test_a_calendar_recovery_is_judged_on_the_wall_clock():
    clock = ManualClock(1000.0)
    s = ModelState(status=STANDBY, deactivation_reason="request_limit")
    s.set_recover_at(2000.0, clock.time(), clock.monotonic())
    clock.jump(500)
    assert s.recovers_in(clock.time(), clock.monotonic()) == 500.0


def test_a_recover_at_set_from_outside_is_anchored_when_read():
    """Restored or applied from another process: only the wall-clock time is known."""
    s = ModelState(status=STANDBY, deactivation_reason="quota_exhausted", recover_at=160.0)
    assert s.recovers_in(100.0, 7.0) == 60.0 and s.recover_mono == 67.0
    s.recover_at = 200.0  # another process pushed it further
    assert s.recovers_in(100.0, 8.0) == 100.0
    clock = ManualClock(150.0, monotonic=9.0)
    s.recover_at = 180.0
    s.sync_deadline(clock)
    assert s.recover_mono == 39.0
    data = s.to_dict()
    assert "recover_mono" not in data and "_mono_basis" not in data
    back = ModelState.from_dict(data)
    assert back.recover_mono is None and back.recovers_in(150.0, 1.0) == 30.0


def test_a_damaged_recover_at_does_not_keep_a_model_out():
    s = ModelState(status=STANDBY, deactivation_reason="error_threshold", recover_at=math.nan)
    assert s.recovers_in(100.0, 1.0) == 0.0
    s.deactivation_reason = "budget_exceeded"
    assert s.recovers_in(100.0, 1.0) == 0.0
