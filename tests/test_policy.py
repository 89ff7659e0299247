"""The retry/failover policy as a table: every error kind x every policy setting, no HTTP."""

from __future__ import annotations

import math
import random

import pytest

from mesh_core._errors import ErrorKind
from mesh_core._policy import FailOver, Failure, Raise, Retry, RetryPolicy, decide

JITTER = RetryPolicy(max_attempts=3, backoff="exponential_jitter", initial_delay=0.1, max_delay=2.0)
FIXED = RetryPolicy(max_attempts=3, backoff="fixed", initial_delay=0.1, max_delay=2.0)
ONCE = RetryPolicy(max_attempts=1, backoff="fixed", initial_delay=0.1, max_delay=2.0)

K = ErrorKind
TRANSIENT = [K.RATE_LIMITED, K.SERVER_ERROR]
NOT_RETRIED = [K.QUOTA_EXHAUSTED, K.TIMEOUT, K.CONNECTION, K.AUTHENTICATION, K.MALFORMED_RESPONSE]
CALLERS = [K.BAD_REQUEST, K.CONTENT_POLICY]


def test_every_kind_is_in_the_table():
    assert set(TRANSIENT + NOT_RETRIED + CALLERS + [K.CONTEXT_WINDOW]) == set(ErrorKind)


ROWS = [
    # (kind, tries, retry_after, still_active, policy, expected)
    *[(k, 1, None, True, p, Raise()) for k in CALLERS for p in (JITTER, FIXED, ONCE)],
    *[(k, 1, 1.0, True, JITTER, Raise()) for k in CALLERS],  # Retry-After changes nothing
    *[(K.CONTEXT_WINDOW, t, None, True, JITTER, FailOver(True)) for t in (1, 2, 3)],
    *[(k, 1, None, True, p, FailOver()) for k in NOT_RETRIED for p in (JITTER, FIXED)],
    *[(k, 1, 0.5, True, JITTER, FailOver()) for k in NOT_RETRIED],  # even with Retry-After
    # transient: retried while the model is active and tries remain
    *[(k, 1, None, True, FIXED, Retry(0.1)) for k in TRANSIENT],
    *[(k, 2, None, True, FIXED, Retry(0.1)) for k in TRANSIENT],
    *[(k, 3, None, True, FIXED, FailOver()) for k in TRANSIENT],  # max_attempts reached
    *[(k, 1, None, True, ONCE, FailOver()) for k in TRANSIENT],  # max_retries=0
    *[(k, 1, None, False, FIXED, FailOver()) for k in TRANSIENT],  # just went to standby
    # Retry-After: honoured up to max_delay, else fail over
    *[(k, 1, 1.5, True, JITTER, Retry(1.5)) for k in TRANSIENT],
    *[(k, 1, 0.0, True, JITTER, Retry(0.0)) for k in TRANSIENT],
    *[(k, 1, 2.5, True, JITTER, FailOver()) for k in TRANSIENT],
    *[(k, 1, math.inf, True, JITTER, FailOver()) for k in TRANSIENT],
    *[(k, 1, math.nan, True, JITTER, FailOver()) for k in TRANSIENT],
    *[(k, 3, 0.5, True, JITTER, FailOver()) for k in TRANSIENT],  # tries first
]


@pytest.mark.parametrize("kind, tries, retry_after, active, policy, expected", ROWS)
def test_decision_table(kind, tries, retry_after, active, policy, expected):
    failure = Failure(kind, tries, retry_after, still_active=active)
    assert decide(failure, policy, random.Random(0)) == expected


@pytest.mark.parametrize("kind", TRANSIENT)
def test_jittered_backoff_doubles_within_bounds(kind):
    policy = RetryPolicy(
        max_attempts=10, backoff="exponential_jitter", initial_delay=0.1, max_delay=1.0
    )
    rng = random.Random(42)
    for tries, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        for _ in range(50):
            decision = decide(Failure(kind, tries), policy, rng)
            assert isinstance(decision, Retry)
            assert ceiling / 2 <= decision.delay <= ceiling


def test_fixed_backoff_stays_fixed_and_is_capped():
    rng = random.Random(0)
    assert {decide(Failure(K.SERVER_ERROR, t), FIXED, rng) for t in (1, 2)} == {Retry(0.1)}
    capped = RetryPolicy(max_attempts=3, backoff="fixed", initial_delay=5.0, max_delay=2.0)
    assert decide(Failure(K.SERVER_ERROR, 1), capped, rng) == Retry(2.0)


def test_huge_try_counts_do_not_overflow():
    policy = RetryPolicy(
        max_attempts=10**9, backoff="exponential_jitter", initial_delay=0.1, max_delay=2.0
    )
    decision = decide(Failure(K.SERVER_ERROR, 10**6), policy, random.Random(0))
    assert isinstance(decision, Retry) and decision.delay <= 2.0


def test_the_policy_of_a_config_and_a_request_override():
    from mesh_core._config import RetryConfig

    config = RetryConfig()
    assert RetryPolicy.of(config).max_attempts == config.max_attempts
    assert RetryPolicy.of(config, max_attempts=1).max_attempts == 1
