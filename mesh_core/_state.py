"""Per-model runtime state and its immutable snapshot.

:class:`ModelState` holds the public fields (status, failure count, error rate,
cooldown, quota, tokens, cost, latencies, timestamps, reason) with their defaults, plus the
bookkeeping the documented behaviour needs (the sliding outcome window, recovery
time, trial flag, rate-limit headroom, quota and budget periods). Everything is
JSON-safe and round-trips through :meth:`ModelState.to_dict` /
:meth:`ModelState.from_dict`.

Recovery times: ``recover_at`` is a Unix timestamp, because it is persisted,
shared with other processes and reported in events. A cooldown is a duration,
though, and a wall clock can be stepped (NTP, an administrator), so in-process
the state also keeps the same deadline on the monotonic clock
(``recover_mono``, never persisted) and judges cooldowns by it. A recovery at a
calendar boundary (next quota or budget period, end of a maintenance window) is
an instant, and stays judged on the wall clock.

A state is not locked by itself: the mesh mutates it under its own lock.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._config import DeactivationConfig
from ._errors import ErrorKind, ProviderError

if TYPE_CHECKING:
    from ._clock import Clock

__all__ = [
    "ACTIVE",
    "COOLDOWN_REASONS",
    "STANDBY",
    "ModelSnapshot",
    "ModelState",
    "StateLimits",
]

ACTIVE = "active"
STANDBY = "standby"

#: Deactivation reasons that end after a cooldown (a duration, judged on the
#: monotonic clock); every other timed recovery is a wall-clock instant.
COOLDOWN_REASONS = frozenset({"error_threshold", "quota_exhausted"})


_DEACTIVATION = DeactivationConfig()
"""The configuration's defaults: the state's own are read from them, never written twice."""


@dataclass(frozen=True, slots=True)
class StateLimits:
    """The thresholds a state is judged against (from the pool's ``deactivation``)."""

    error_rate_threshold: float = _DEACTIVATION.error_rate_threshold
    error_rate_min_requests: int = _DEACTIVATION.error_rate_min_requests
    request_limit: int | None = _DEACTIVATION.request_limit
    token_limit: int | None = _DEACTIVATION.token_limit
    budget_limit: float | None = _DEACTIVATION.budget_limit

    @classmethod
    def from_config(cls, cfg: DeactivationConfig) -> StateLimits:
        """The limits of a pool's validated ``deactivation`` section."""
        return cls(
            cfg.error_rate_threshold,
            cfg.error_rate_min_requests,
            cfg.request_limit,
            cfg.token_limit,
            cfg.budget_limit,
        )


_DEFAULT_LIMITS = StateLimits()


@dataclass(slots=True, eq=False)
class ModelState:
    """Per-model health and usage tracking."""

    # --- the public fields -------------------------------------------------
    status: str = ACTIVE
    """Current status: 'active' or 'standby'."""
    failure_count: int = 0
    """Consecutive failures since last success."""
    error_rate: float = 0.0
    """Error rate over the sliding window (0.0-1.0)."""
    cooldown_remaining: float = 0.0
    """Seconds before recovery eligibility, as of the last refresh (see ``recover_at``)."""
    quota_used: int = 0
    """Requests consumed in the current quota period."""
    tokens_used: int = 0
    """Tokens consumed in the current quota period."""
    cost_accumulated: float = 0.0
    """Cost accumulated in the current budget period (USD)."""
    latency_history: list[float] = field(default_factory=list)
    """Recent request latencies in seconds (bounded by ``latency_window``)."""
    last_request: float | None = None
    """Unix timestamp of the last successful request."""
    last_failure: float | None = None
    """Unix timestamp of the last failure."""
    deactivation_reason: str | None = None
    """Reason for standby status (a DeactivationReason value)."""

    # --- extensions the documented behaviour needs -------------------------
    window_size: int = _DEACTIVATION.error_rate_window
    """How many recent outcomes the error rate is computed over."""
    latency_window: int = 50
    outcomes: deque[bool] = field(default_factory=deque)
    """Recent outcomes, oldest first: True for a success."""
    total_requests: int = 0
    total_failures: int = 0
    total_tokens: int = 0
    total_cost: float = 0.0
    recover_at: float | None = None
    """When a standby model becomes eligible again, Unix seconds (None: only by hand).

    Set it with :meth:`set_recover_at`, so a cooldown is also anchored to the
    monotonic clock; a value set otherwise (restored, from another process) is
    anchored when next read."""
    standby_since: float | None = None
    probation: bool = False
    """Recovered but not yet proven: the next request is its trial."""
    strikes: int = 0
    """Failed trials in a row; each one lengthens the next cooldown."""
    retry_after: float | None = None
    """The provider's last Retry-After, in seconds."""
    last_error_kind: str | None = None
    requests_remaining: int | None = None
    requests_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_limit: int | None = None
    quota_period_start: float | None = None
    budget_period_start: float | None = None
    limits: StateLimits = field(default=_DEFAULT_LIMITS, compare=False, repr=False)
    """Thresholds from configuration; not part of the persisted state."""
    version: int = field(default=0, compare=False, repr=False)
    """Bumped on every change, so snapshots can be cached until the state moves."""
    recover_mono: float | None = field(default=None, init=False, compare=False, repr=False)
    """``recover_at`` on this process's monotonic clock; not persisted (see the module doc)."""
    _mono_basis: float | None = field(default=None, init=False, compare=False, repr=False)
    """The ``recover_at`` that ``recover_mono`` was derived from: a different value
    means ``recover_at`` was set from outside, and the deadline must be re-anchored."""

    # --- query methods ----------------------------------------------------
    def is_healthy(self) -> bool:
        """Active, and the error rate is below the configured threshold."""
        return self.status == ACTIVE and not self._error_rate_breached()

    def is_over_quota(self) -> bool:
        """The request or token count of this quota period has reached its limit."""
        lim = self.limits
        return (lim.request_limit is not None and self.quota_used >= lim.request_limit) or (
            lim.token_limit is not None and self.tokens_used >= lim.token_limit
        )

    def is_over_budget(self) -> bool:
        """The spend of this budget period has reached its limit."""
        lim = self.limits.budget_limit
        return lim is not None and self.cost_accumulated >= lim

    @property
    def window_requests(self) -> int:
        """How many outcomes the error window holds (as a snapshot reports it)."""
        return len(self.outcomes)

    def _error_rate_breached(self) -> bool:
        lim = self.limits
        return (
            len(self.outcomes) >= lim.error_rate_min_requests
            and self.error_rate >= lim.error_rate_threshold
        )

    # --- mutation methods -------------------------------------------------
    def record_success(
        self, latency: float, tokens: int, cost: float, *, now: float | None = None
    ) -> None:
        """Record a successful request: resets consecutive failures, counts usage."""
        self.failure_count = 0
        self._push_outcome(True)
        history = self.latency_history
        history.append(float(latency))
        overflow = len(history) - self.latency_window
        if overflow > 0:
            del history[:overflow]
        tokens, cost = int(tokens), float(cost)
        self.quota_used += 1
        self.tokens_used += tokens
        self.cost_accumulated += cost
        self.total_requests += 1
        self.total_tokens += tokens
        self.total_cost += cost
        self.last_request = time.time() if now is None else now
        self.last_error_kind = None
        self.version += 1

    def record_failure(self, error: BaseException, *, now: float | None = None) -> None:
        """Record a failed request that counts against the model."""
        self.failure_count += 1
        self._push_outcome(False)
        self.total_requests += 1
        self.total_failures += 1
        self.last_failure = time.time() if now is None else now
        if isinstance(error, ProviderError):
            self.last_error_kind = error.kind.value
            retry_after = _clean_retry_after(error.retry_after)
            if retry_after is not None:
                self.retry_after = retry_after
        else:
            self.last_error_kind = ErrorKind.CONNECTION.value
        self.version += 1

    def _push_outcome(self, ok: bool) -> None:
        outcomes = self.outcomes
        outcomes.append(ok)
        size = self.window_size
        while len(outcomes) > size:
            outcomes.popleft()
        n = len(outcomes)
        self.error_rate = (n - sum(outcomes)) / n

    def touch(self) -> None:
        """Mark the state changed (invalidates cached snapshots)."""
        self.version += 1

    # --- recovery deadline ------------------------------------------------
    def set_recover_at(self, recover_at: float | None, now: float, mono: float) -> None:
        """Set the recovery time, anchoring it to the monotonic clock.

        ``now`` and ``mono`` are the wall and monotonic times of the same moment;
        the time left (``recover_at - now``) is what the monotonic deadline keeps,
        whatever the wall clock does afterwards.
        """
        self.recover_at = recover_at
        self._anchor(now, mono)

    def sync_deadline(self, clock: Clock) -> None:
        """Anchor a ``recover_at`` that was set without :meth:`set_recover_at`.

        For state restored from a store or applied from another process, which
        carries only the wall-clock time. Cheap (no clock read) when in step.
        """
        if self._mono_basis != self.recover_at:
            self._anchor(clock.time(), clock.monotonic())

    def recovers_in(self, now: float, mono: float) -> float | None:
        """Seconds until this standby model may return (<= 0: due; None: not by itself).

        ``now`` is the wall time and ``mono`` the monotonic time of the same moment.
        A cooldown is measured on the monotonic clock, so stepping the wall clock
        neither stretches nor shortens it; a calendar boundary (quota or budget
        period, maintenance window) is a wall-clock instant and is measured there.
        """
        if self.status != STANDBY or self.recover_at is None:
            return None
        if self.deactivation_reason in COOLDOWN_REASONS:
            if self._mono_basis != self.recover_at:
                self._anchor(now, mono)
            return self.recover_mono - mono  # type: ignore[operator]
        left = self.recover_at - now
        return 0.0 if math.isnan(left) else left

    def _anchor(self, now: float, mono: float) -> None:
        at = self.recover_at
        self._mono_basis = at
        if at is None:
            self.recover_mono = None
        elif math.isnan(at):  # only from a damaged store: due now (a cooldown ends in a trial)
            self.recover_mono = mono
        else:
            self.recover_mono = mono + (at - now)

    # --- serialization ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All persisted fields as a JSON-safe dict."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _NOT_PERSISTED:
                continue
            value = getattr(self, f.name)
            if isinstance(value, (list, deque)):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelState:
        """Restore a state produced by :meth:`to_dict` (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)} - _NOT_PERSISTED
        kwargs = {k: v for k, v in data.items() if k in known}
        if "outcomes" in kwargs:
            kwargs["outcomes"] = deque(bool(x) for x in kwargs["outcomes"])
        if "latency_history" in kwargs:
            kwargs["latency_history"] = [float(x) for x in kwargs["latency_history"]]
        return cls(**kwargs)

    # --- snapshots ----------------------------------------------------------
    def snapshot(
        self,
        model_id: str,
        provider_id: str,
        now: float,
        *,
        mono: float | None = None,
        input_price: float | None = None,
        output_price: float | None = None,
    ) -> ModelSnapshot:
        """An immutable view of this state at ``now`` (prices come from the model's spec).

        ``mono`` is the monotonic time of the same moment; without it the time left
        in a cooldown is read from the wall clock alone.
        """
        if mono is not None:
            left = self.recovers_in(now, mono)
        elif self.recover_at is not None and self.status == STANDBY:
            left = self.recover_at - now
        else:
            left = None
        self.cooldown_remaining = cooldown = 0.0 if left is None else max(0.0, left)
        history = self.latency_history
        last_request, last_failure = self.last_request, self.last_failure
        # Positional, in the field order of ModelSnapshot (see _snapshot_builder).
        return _new_snapshot(
            model_id,
            provider_id,
            self.status,
            self.failure_count,
            self.error_rate,
            cooldown,
            self.quota_used,
            self.tokens_used,
            self.cost_accumulated,
            tuple(history),
            None if last_request is None else _as_datetime(last_request),
            None if last_failure is None else _as_datetime(last_failure),
            self.deactivation_reason,
            len(self.outcomes),
            self.total_requests,
            self.probation,
            self.last_error_kind,
            self.retry_after,
            self.requests_remaining,
            self.requests_limit,
            self.tokens_remaining,
            self.tokens_limit,
            input_price,
            output_price,
            sum(history) / len(history) if history else None,
        )


_NOT_PERSISTED = frozenset({"limits", "version", "recover_mono", "_mono_basis"})


def _clean_retry_after(value: float | None) -> float | None:
    """A provider's Retry-After as a finite, non-negative number of seconds.

    NaN says nothing (None), a negative value means "now" (0.0), infinity becomes
    the largest float, so the state stays JSON-safe; the recovery policy caps it.
    """
    if value is None or math.isnan(value):
        return None
    return min(max(0.0, float(value)), sys.float_info.max)


def _as_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """Point-in-time view of a model's state, handed to evaluators and strategies.

    The first thirteen fields are the public contract. The rest are read-only extras the
    shipped evaluators and strategies need: they carry defaults, so a snapshot can
    be built from those thirteen alone (as custom strategies and tests do).
    """

    model_id: str
    provider_id: str
    status: str
    failure_count: int
    error_rate: float
    cooldown_remaining: float
    quota_used: int
    tokens_used: int
    cost_accumulated: float
    latency_history: tuple[float, ...] = ()
    last_request: datetime | None = None
    last_failure: datetime | None = None
    deactivation_reason: str | None = None
    # extras
    window_requests: int = 0
    total_requests: int = 0
    probation: bool = False
    last_error_kind: str | None = None
    retry_after: float | None = None
    requests_remaining: int | None = None
    requests_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_limit: int | None = None
    input_price: float | None = None
    """USD per 1k prompt tokens (None when the model is unpriced)."""
    output_price: float | None = None
    """USD per 1k completion tokens."""
    latency_mean: float | None = None
    """Mean of ``latency_history`` (computed once, when the snapshot is taken)."""

    @property
    def latency_avg(self) -> float | None:
        """Mean of the latency history, or None without history."""
        if self.latency_mean is not None:
            return self.latency_mean
        hist = self.latency_history
        return sum(hist) / len(hist) if hist else None


_SNAPSHOT_FIELDS = (
    "model_id",
    "provider_id",
    "status",
    "failure_count",
    "error_rate",
    "cooldown_remaining",
    "quota_used",
    "tokens_used",
    "cost_accumulated",
    "latency_history",
    "last_request",
    "last_failure",
    "deactivation_reason",
    "window_requests",
    "total_requests",
    "probation",
    "last_error_kind",
    "retry_after",
    "requests_remaining",
    "requests_limit",
    "tokens_remaining",
    "tokens_limit",
    "input_price",
    "output_price",
    "latency_mean",
)
"""The values :meth:`ModelState.snapshot` passes to :func:`_new_snapshot`, in this order."""


def _snapshot_builder() -> Callable[..., ModelSnapshot]:
    """A constructor of :class:`ModelSnapshot` from positional values, for the request path.

    A frozen dataclass's ``__init__`` sets each of its 25 fields through
    ``object.__setattr__``; this one calls each slot's own setter, generated once here
    (as dataclasses generate ``__init__``), which takes a third of the time. The object
    is the same: same class, same values, still frozen to its users. Should the class
    stop matching :data:`_SNAPSHOT_FIELDS` (a field added, a ``__post_init__``), the
    ordinary constructor is used instead.
    """
    names = tuple(f.name for f in fields(ModelSnapshot))
    if names != _SNAPSHOT_FIELDS or hasattr(ModelSnapshot, "__post_init__"):

        def build(*values: Any) -> ModelSnapshot:
            return ModelSnapshot(**dict(zip(_SNAPSHOT_FIELDS, values)))

        return build
    env: dict[str, Any] = {"_new": object.__new__, "_cls": ModelSnapshot}
    lines = [f"def build({', '.join(names)}):", "    snap = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_set{i}"] = getattr(ModelSnapshot, name).__set__
        lines.append(f"    _set{i}(snap, {name})")
    lines.append("    return snap")
    exec("\n".join(lines), env)
    return env["build"]  # type: ignore[no-any-return]


_new_snapshot = _snapshot_builder()
