"""Deactivation and recovery decisions: when a model leaves rotation and when it returns.

Pure functions of a snapshot, a policy and the time: no I/O, no sleeping. The
clock is injected so tests move time instead of waiting for it.

Deactivation reasons, highest priority first (when several hold the first wins):
MAINTENANCE_WINDOW, BUDGET_EXCEEDED, QUOTA_EXHAUSTED, ERROR_THRESHOLD,
TOKEN_LIMIT, REQUEST_LIMIT.

Recovery per reason: error threshold and quota exhaustion after a cooldown that
honours the provider's Retry-After (up to ``max_cooldown``) and doubles after each
failed trial; request/token limits at the next quota period; budget at the next
budget period; maintenance when the window ends; manual (and authentication)
never by itself. A cooldown is a duration and is judged on the monotonic clock;
the others are calendar instants, judged on the wall clock (see :mod:`.state`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ._clock import Clock, SystemClock, next_period_start, period_start
from ._config import DeactivationConfig, RecoveryConfig
from ._errors import ErrorKind, ProviderError
from ._state import COOLDOWN_REASONS, STANDBY, ModelSnapshot, ModelState, StateLimits

__all__ = [
    "DeactivationEvaluator",
    "DeactivationPolicy",
    "DeactivationReason",
    "MaintenanceWindow",
    "RecoveryEvaluator",
    "RecoveryPolicy",
    "counts_against_model",
]


class DeactivationReason(enum.Enum):
    """Reason code recorded when a model is moved to standby."""

    ERROR_THRESHOLD = "error_threshold"
    QUOTA_EXHAUSTED = "quota_exhausted"
    BUDGET_EXCEEDED = "budget_exceeded"
    TOKEN_LIMIT = "token_limit"
    REQUEST_LIMIT = "request_limit"
    MAINTENANCE_WINDOW = "maintenance_window"
    MANUAL = "manual"
    AUTHENTICATION_FAILED = "authentication_failed"
    """Extension: the provider refused the credentials (401/403). Recovers only by hand."""


class MaintenanceWindow:
    """A scheduled absence written as a cron expression (UTC).

    Two forms:

    * ``cron`` alone: the window is every minute the expression matches, so
      ``"* 2-3 * * 0"`` is Sundays 02:00-03:59.
    * ``cron`` with ``duration``: the window opens at each time the expression
      fires and lasts ``duration`` seconds (``"0 2 * * 0"`` + ``2h``).

    croniter is slow (hundreds of microseconds a call), so :meth:`state_at`
    returns when the answer next changes, and callers cache it until then.
    """

    _MAX_SCAN_MINUTES = 7 * 24 * 60

    def __init__(self, cron: str, duration: float | None = None) -> None:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ValueError(f"invalid cron expression {cron!r}")
        if duration is not None and duration <= 0:
            raise ValueError("maintenance window duration must be positive")
        self.cron = cron
        self.duration = duration

    def __repr__(self) -> str:
        return f"MaintenanceWindow({self.cron!r}, duration={self.duration!r})"

    def _iter(self, start: float) -> Any:  # a croniter (untyped)
        from croniter import croniter

        return croniter(self.cron, datetime.fromtimestamp(start, tz=UTC))

    def state_at(self, ts: float) -> tuple[bool, float]:
        """``(inside, until)``: whether ``ts`` is inside a window, and when that changes."""
        if self.duration is not None:
            last_fire = self._iter(ts + 1).get_prev(float)
            if ts < last_fire + self.duration:
                return True, last_fire + self.duration
            return False, self._iter(ts).get_next(float)
        minute = ts - ts % 60
        it = self._iter(minute - 1)
        first = it.get_next(float)
        if first != minute:  # outside: the window opens at the next match
            return False, first
        end = minute
        for _ in range(self._MAX_SCAN_MINUTES):
            nxt = it.get_next(float)
            if nxt != end + 60:
                break
            end = nxt
        return True, end + 60

    def contains(self, ts: float) -> bool:
        return self.state_at(ts)[0]


@lru_cache(maxsize=256)
def _next_boundary(window: str, start: float) -> float:
    return next_period_start(window, start)


_DEACTIVATION = DeactivationConfig()
_RECOVERY = RecoveryConfig()
"""The configuration's defaults: the policies' own are read from them, never written twice."""


@dataclass(frozen=True)
class DeactivationPolicy:
    """A pool's ``deactivation`` settings (meaning and defaults: DeactivationConfig)."""

    retry_limit: int = _DEACTIVATION.retry_limit
    error_rate_threshold: float = _DEACTIVATION.error_rate_threshold
    error_rate_window: int = _DEACTIVATION.error_rate_window
    error_rate_min_requests: int = _DEACTIVATION.error_rate_min_requests
    error_codes: frozenset[int] = frozenset(_DEACTIVATION.error_codes)
    request_limit: int | None = _DEACTIVATION.request_limit
    token_limit: int | None = _DEACTIVATION.token_limit
    budget_limit: float | None = _DEACTIVATION.budget_limit
    quota_window: str = _DEACTIVATION.quota_window
    budget_window: str = _DEACTIVATION.budget_window
    maintenance_window: MaintenanceWindow | None = None
    """None by default in the configuration too (a window is a cron expression)."""

    @classmethod
    def from_config(cls, cfg: DeactivationConfig) -> DeactivationPolicy:
        """The policy of a pool's validated ``deactivation`` section."""
        window = cfg.maintenance_window
        if isinstance(window, str):
            maintenance: MaintenanceWindow | None = MaintenanceWindow(window)
        elif window is not None:
            maintenance = MaintenanceWindow(window.cron, window.duration)
        else:
            maintenance = None
        return cls(
            retry_limit=cfg.retry_limit,
            error_rate_threshold=cfg.error_rate_threshold,
            error_rate_window=cfg.error_rate_window,
            error_rate_min_requests=cfg.error_rate_min_requests,
            error_codes=frozenset(cfg.error_codes),
            request_limit=cfg.request_limit,
            token_limit=cfg.token_limit,
            budget_limit=cfg.budget_limit,
            quota_window=cfg.quota_window,
            budget_window=cfg.budget_window,
            maintenance_window=maintenance,
        )

    @property
    def limits(self) -> StateLimits:
        return StateLimits(
            error_rate_threshold=self.error_rate_threshold,
            error_rate_min_requests=self.error_rate_min_requests,
            request_limit=self.request_limit,
            token_limit=self.token_limit,
            budget_limit=self.budget_limit,
        )

    def roll_periods(self, state: ModelState, now: float) -> bool:
        """Reset the quota and budget counters when their calendar period has ended.

        Returns True when anything was reset. The period starts are kept in the
        state, so a restart resets counters at the right boundary.
        """
        changed = False
        qs = state.quota_period_start
        if qs is None or now >= _next_boundary(self.quota_window, qs):
            if qs is not None:
                state.quota_used = 0
                state.tokens_used = 0
            state.quota_period_start = period_start(self.quota_window, now)
            changed = True
        bs = state.budget_period_start
        if bs is None or now >= _next_boundary(self.budget_window, bs):
            if bs is not None:
                state.cost_accumulated = 0.0
            state.budget_period_start = period_start(self.budget_window, now)
            changed = True
        if changed:
            state.touch()
        return changed


def counts_against_model(error: BaseException, policy: DeactivationPolicy) -> bool:
    """Whether a failure counts toward the model's deactivation.

    Only failures that are the model's or provider's fault count: statuses listed
    in ``error_codes``, timeouts, connection errors, unreadable replies and quota
    exhaustion. A caller's bad request, a content-policy refusal or a prompt too
    long for the window says nothing about the model's health.
    """
    if not isinstance(error, ProviderError):
        return True
    if error.details.get("local"):  # e.g. our own connection pool was exhausted
        return False
    kind = error.kind
    if kind in (ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.MALFORMED_RESPONSE):
        return True
    if kind is ErrorKind.QUOTA_EXHAUSTED:
        return True
    if kind in (ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR):
        return error.status_code is None or error.status_code in policy.error_codes
    return False


_QUOTA_EXHAUSTED = ErrorKind.QUOTA_EXHAUSTED.value
"""Read on every outcome: an enum member's ``.value`` is a descriptor call."""


class DeactivationEvaluator:
    """Decides whether an active model should move to standby, and why."""

    def __init__(
        self, policy: DeactivationPolicy | None = None, clock: Clock | None = None
    ) -> None:
        self.policy = policy or DeactivationPolicy()
        self.clock = clock or SystemClock()
        self._window_cache: tuple[float, bool, float] | None = None
        """``(since, inside, until)``: the answer holds from ``since`` until ``until``."""

    def in_maintenance(self, now: float) -> tuple[bool, float]:
        """``(inside, until)`` for the policy's maintenance window, cached until it changes.

        The answer holds for wall times in ``[since, until)``; a wall clock set back
        before ``since`` asks again, as the window may be open at the new time.
        """
        window = self.policy.maintenance_window
        if window is None:
            return False, float("inf")
        cached = self._window_cache
        if cached is None or not cached[0] <= now < cached[2]:
            cached = self._window_cache = (now, *window.state_at(now))
        return cached[1], cached[2]

    def should_deactivate(self, snapshot: ModelSnapshot) -> bool:
        """True if any deactivation condition holds for ``snapshot``."""
        return self.get_reason(snapshot) is not None

    def get_reason(self, snapshot: ModelSnapshot) -> DeactivationReason | None:
        """The highest-priority reason that holds, or None."""
        p = self.policy
        if p.maintenance_window is not None and self.in_maintenance(self.clock.time())[0]:
            return DeactivationReason.MAINTENANCE_WINDOW
        if p.budget_limit is not None and snapshot.cost_accumulated >= p.budget_limit:
            return DeactivationReason.BUDGET_EXCEEDED
        if snapshot.last_error_kind == _QUOTA_EXHAUSTED:
            return DeactivationReason.QUOTA_EXHAUSTED
        if self._error_threshold(snapshot):
            return DeactivationReason.ERROR_THRESHOLD
        if p.token_limit is not None and snapshot.tokens_used >= p.token_limit:
            return DeactivationReason.TOKEN_LIMIT
        if p.request_limit is not None and snapshot.quota_used >= p.request_limit:
            return DeactivationReason.REQUEST_LIMIT
        return None

    def _error_threshold(self, s: ModelSnapshot) -> bool:
        p = self.policy
        if s.failure_count >= p.retry_limit:
            return True
        if s.probation and s.failure_count > 0:  # a failed trial goes straight back
            return True
        # A snapshot built from the thirteen public fields alone has no window size: trust
        # its rate.
        enough = s.window_requests >= p.error_rate_min_requests or s.window_requests == 0
        return enough and s.error_rate > 0 and s.error_rate >= p.error_rate_threshold


@dataclass(frozen=True)
class RecoveryPolicy:
    """A pool's ``recovery`` settings (meaning and defaults: RecoveryConfig)."""

    cooldown: float = _RECOVERY.cooldown
    backoff_factor: float = _RECOVERY.backoff_factor
    max_cooldown: float = _RECOVERY.max_cooldown
    trial: bool = _RECOVERY.trial
    """A model recovering from errors or quota gets one trial request before full traffic."""

    @classmethod
    def from_config(cls, cfg: RecoveryConfig) -> RecoveryPolicy:
        """The policy of a pool's validated ``recovery`` section."""
        return cls(cfg.cooldown, cfg.backoff_factor, cfg.max_cooldown, cfg.trial)


_COOLDOWN_REASONS = COOLDOWN_REASONS
"""ERROR_THRESHOLD and QUOTA_EXHAUSTED (defined with the state, which judges them)."""


@dataclass
class RecoveryEvaluator:
    """Says, per reason, whether and when a standby model may return."""

    policy: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    deactivation: DeactivationPolicy = field(default_factory=DeactivationPolicy)
    clock: Clock = field(default_factory=SystemClock)

    def cooldown_for(self, strikes: int, retry_after: float | None) -> float:
        """Cooldown after ``strikes`` failed trials, honouring Retry-After up to the ceiling.

        The ceiling is ``max(max_cooldown, cooldown)``. It bounds the backoff and
        the provider's Retry-After alike: a ``Retry-After: 1e308`` (or a broken
        header read as infinity) must not take a model out for good. A NaN or
        negative Retry-After is ignored. Finite whenever the policy is.
        """
        p = self.policy
        ceiling = max(p.max_cooldown, p.cooldown)
        try:
            grown = p.cooldown * p.backoff_factor ** max(0, strikes)
        except OverflowError:  # about a thousand failed trials in a row
            grown = ceiling if p.cooldown > 0 else 0.0
        base = min(grown, ceiling)
        if retry_after is not None and retry_after > 0:  # False for NaN
            base = max(base, min(retry_after, ceiling))
        return base

    def recovery_time(
        self,
        reason: DeactivationReason | str,
        now: float,
        *,
        strikes: int = 0,
        retry_after: float | None = None,
    ) -> float | None:
        """When a model deactivated at ``now`` for ``reason`` may return (None: never by itself)."""
        reason = DeactivationReason(reason)
        if reason.value in _COOLDOWN_REASONS:
            return now + self.cooldown_for(strikes, retry_after)
        if reason in (DeactivationReason.REQUEST_LIMIT, DeactivationReason.TOKEN_LIMIT):
            return next_period_start(self.deactivation.quota_window, now)
        if reason is DeactivationReason.BUDGET_EXCEEDED:
            return next_period_start(self.deactivation.budget_window, now)
        if reason is DeactivationReason.MAINTENANCE_WINDOW:
            window = self.deactivation.maintenance_window
            if window is None:
                return now
            inside, until = window.state_at(now)
            return until if inside else now
        return None  # MANUAL, AUTHENTICATION_FAILED

    def needs_trial(self, reason: str | None) -> bool:
        """Whether a model returning from ``reason`` is put on probation first."""
        return self.policy.trial and reason in _COOLDOWN_REASONS

    def may_recover(self, state: ModelState, now: float, mono: float | None = None) -> bool:
        """True when a standby model's recovery time has come.

        ``now`` is the wall time; ``mono`` the monotonic time of the same moment
        (default: this evaluator's clock), by which cooldowns are judged.
        """
        left = state.recovers_in(now, self.clock.monotonic() if mono is None else mono)
        return left is not None and left <= 0

    @staticmethod
    def earliest_recovery(
        states: Iterable[ModelState], now: float | None = None, mono: float | None = None
    ) -> float | None:
        """The earliest recovery time (Unix seconds) among standby states.

        None if none recovers by itself. Given ``now`` and ``mono`` (wall and
        monotonic times of the same moment) the answer is ``now`` plus the shortest
        time left, which stays right after the wall clock is stepped; without them
        it is the smallest stored ``recover_at``.
        """
        if now is None or mono is None:
            times = [
                s.recover_at for s in states if s.status == STANDBY and s.recover_at is not None
            ]
            return min(times) if times else None
        lefts = [left for s in states if (left := s.recovers_in(now, mono)) is not None]
        left = min(lefts, default=math.inf)
        return now + max(0.0, left) if left < math.inf else None
