"""Decisions the request path takes under the mesh's lock.

:class:`Router` is where state changes: choosing a model (and marking it in flight),
recording a success (usage, cost, rate-limit headroom, deactivation by limit) or a
failure (the error window, standby, a provider shut out for refused credentials).
What follows a failure (retry, fail over, raise) is then a pure decision of
:mod:`.policy`. The failover loop in :mod:`.routing` calls these and nothing else
touches state.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from . import _lifecycle as lifecycle
from ._clock import Clock
from ._config import HedgingConfig, PoolConfig, RetryConfig
from ._deadlines import HedgePolicy, ResponseTimes
from ._effects import Blocking, Effect, Outcome
from ._errors import (
    CALLER_KINDS,
    ErrorKind,
    NoAvailableModelError,
    NoCapableModelError,
    ProviderError,
    RoutingError,
)
from ._evaluators import DeactivationEvaluator, DeactivationReason, counts_against_model
from ._events import EventEmitter, EventType
from ._lifecycle import Move
from ._needs import RequestNeeds, embedding_unmet, is_plain_text, needs_of
from ._policy import Decision, Failure, RetryPolicy, decide
from ._pool import CapabilityPool, Model
from ._state import ACTIVE
from ._tracing import Tracing
from ._types import CompletionRequest, Usage
from .providers._base import Provider, Timeouts
from .providers._wire import RateLimitInfo

if TYPE_CHECKING:
    from ._embedding import EmbeddingTarget
    from ._metrics import Metrics
    from ._persistence import StateKeeper
    from ._spaces import EmbeddingSpec

__all__ = ["PoolSettings", "Router"]


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Per-pool request-path settings (from the pool's configuration)."""

    retry: RetryConfig = field(default_factory=RetryConfig)
    wait_for_recovery: float = PoolConfig.model_fields["wait_for_recovery"].default
    stream_recovery: str = PoolConfig.model_fields["stream_recovery"].default
    """Defaults read from PoolConfig's, so the two cannot drift."""
    hedging: HedgePolicy = field(default_factory=lambda: _hedging(HedgingConfig()))

    @classmethod
    def from_config(cls, pool: PoolConfig) -> PoolSettings:
        """The settings of a pool's validated configuration."""
        return cls(pool.retry, pool.wait_for_recovery, pool.stream_recovery, _hedging(pool.hedging))


def _hedging(config: HedgingConfig) -> HedgePolicy:
    after = config.after
    if after == "off":
        return HedgePolicy(enabled=False)
    return HedgePolicy(after=None if after == "auto" else float(after))


class Router:
    """The state-touching decisions of the request path, each taken under the mesh lock."""

    def __init__(
        self,
        *,
        models: Mapping[str, Model],
        providers: Mapping[str, Provider],
        timeouts: Mapping[str, Timeouts],
        settings: Mapping[str, PoolSettings],
        emitter: EventEmitter,
        clock: Clock,
        lock: threading.RLock,
    ) -> None:
        self.models = models
        self.providers = providers
        self.timeouts = timeouts
        self.settings = settings
        self.emitter = emitter
        self.clock = clock
        self.lock = lock
        self.keeper: StateKeeper | None = None
        self.tracing = Tracing("off")
        self.metrics: Metrics | None = None
        self._rng = random.Random()
        self._policies: dict[tuple[str, int | None], RetryPolicy] = {}
        self.times: dict[str, ResponseTimes] = {}
        """Each model's stream history (adaptive deadlines and hedging thresholds)."""
        self.adaptive: dict[str, bool] = {}
        """Models whose stream deadlines are learned (``timeouts.adaptive``; default on)."""
        self.embeddings: dict[str, EmbeddingSpec] = {}
        """The embedding space, dimension and batch size of each embedding model, by ID."""
        self.embedding_only: frozenset[str] = frozenset()
        """Models that only embed: ruled out of completions."""
        self._embedders: dict[str, frozenset[str]] = {}
        """Each pool's members that only embed, found at the pool's first completion."""

    # --- selection ------------------------------------------------------------
    def eligibility(
        self, pool: CapabilityPool, request: CompletionRequest
    ) -> Callable[[Model], str | None] | None:
        """A filter for the models that can serve ``request`` (None: every model can).

        Raises NoCapableModelError, naming what ruled each model out, when none can.
        """
        pin = request.pinned_model
        smallest = pool.min_context_window
        embedders = self._embedders.get(pool.name)
        if embedders is None:
            embedders = frozenset(m.id for m in pool.models if m.id in self.embedding_only)
            self._embedders[pool.name] = embedders
        if pin is None and smallest is None and not embedders and is_plain_text(request):
            return None  # the common case, decided without estimating tokens
        needs: RequestNeeds = needs_of(request)
        if (
            pin is None
            and not embedders
            and not needs.special
            and (smallest is None or needs.tokens <= smallest)
        ):
            return None  # decided without looking at every member
        members = pool.models
        if pin is not None and not any(m.id == pin for m in members):
            raise RoutingError(
                f"model {pin!r} is not a member of pool {pool.name!r} "
                f"(members: {', '.join(m.id for m in members)})",
                pool_name=pool.name,
            )

        def unmet(model: Model) -> str | None:
            if model.id in embedders:
                return "an embedding model (it serves embed requests, not completions)"
            if pin is not None and model.id != pin:
                return f"not the pinned model {pin!r}"
            return needs.unmet(model)

        return _some_capable(pool, unmet, "this request")

    def embedding_eligibility(
        self, pool: CapabilityPool, target: EmbeddingTarget
    ) -> Callable[[Model], str | None]:
        """The filter of an embedding request: embedding models whose provider can embed, in
        the request's space. The space is read at each call, so once the first model chosen
        pins it (``target.space``), failover stays in that space.

        Raises NoCapableModelError, naming what ruled each model out, when none can.
        """
        specs, providers = self.embeddings, self.providers

        def unmet(model: Model) -> str | None:
            spec = specs.get(model.id)
            return embedding_unmet(model, spec, providers.get(model.provider_id), target.space)

        return _some_capable(pool, unmet, "this embedding request")

    def choose(
        self,
        pool: CapabilityPool,
        request: CompletionRequest,
        exclude: set[str],
        eligible: Callable[[Model], str | None] | None,
        attempt: int,
    ) -> Generator[Effect, Outcome | None, Model]:
        """Pick a model and mark it in flight. With limits kept in a shared store, the
        counters of every process are read first (a :class:`Blocking` effect: the
        async driver keeps that read off the event loop)."""
        keeper = self.keeper
        limited = keeper is not None and keeper.shared and _has_limits(pool)
        while True:
            with self.lock:
                model, result = pool.choose(request, exclude=exclude, eligible=eligible)
                model.in_flight += 1
            if not limited:
                break
            try:
                yield Blocking(partial(keeper.pull_usage, model))  # type: ignore[union-attr]
            except BaseException:  # cancelled while reading the store
                self.release(model)
                raise
            with self.lock:
                reason = _reason(pool.rotation_policy.deactivation, model, self.clock.time())
                if reason is None:
                    break
                model.in_flight -= 1
                pool.deactivate(model, reason)
        if _heard(self.emitter, EventType.REQUEST_ROUTED):
            self.emitter.emit(
                EventType.REQUEST_ROUTED,
                model_id=model.id,
                provider_id=model.provider_id,
                pool_id=pool.name,
                attempt=attempt,
                reason=result.reason,
            )
        return model

    def recovery_wait(
        self, pool: CapabilityPool, exc: NoAvailableModelError, waited: float
    ) -> float | None:
        """How long to wait for the pool's earliest recovery, if the pool allows it."""
        limit = self.settings[pool.name].wait_for_recovery
        if limit <= 0 or exc.recovers_at is None:
            return None
        delay = max(0.0, exc.recovers_at - self.clock.time()) + 0.01
        return delay if waited + delay <= limit else None

    # --- outcomes ----------------------------------------------------------------
    def succeeded(
        self,
        pool: CapabilityPool,
        model: Model,
        usage: Usage | None,
        latency: float,
        rate_limits: RateLimitInfo | None,
        *,
        release: bool = True,
    ) -> tuple[Usage, float]:
        """Record a success; returns the usage counted (estimated if unreported) and its cost.

        The model leaves ``in_flight`` first, whatever happens next; the state store is
        told afterwards, outside the lock, and cannot fail the request.
        """
        try:
            usage = usage or Usage()
            tokens = usage.total_tokens
            cost = model.cost(usage)
            with self.lock:
                if release:
                    model.in_flight -= 1
                    release = False
                now = self.clock.time()
                st = model.state
                deact = pool.rotation_policy.deactivation
                deact.policy.roll_periods(st, now)
                st.record_success(latency, tokens, cost, now=now)
                if st.probation:
                    lifecycle.apply(st, Move.PASS_TRIAL, now=now, mono=self.clock.monotonic())
                periods = (st.quota_period_start or 0.0, st.budget_period_start or 0.0)
                if rate_limits is not None:
                    _apply_rate_limits(model, rate_limits)
                model.changed()
                reason = _reason(deact, model, now) if st.status == ACTIVE else None
                if reason is not None:
                    pool.deactivate(model, reason, now=now)
        finally:
            if release:
                self.release(model)
        keeper = self.keeper
        if keeper is not None and keeper.durable:  # (after_request ignores the others)
            keeper.after_request(model, pool, usage=(*periods, tokens, cost))
        if self.metrics is not None:
            self.metrics.success(pool.name, model.id, latency, tokens, cost)
        if _heard(self.emitter, EventType.REQUEST_SUCCESS):
            self.emitter.emit(
                EventType.REQUEST_SUCCESS,
                model_id=model.id,
                provider_id=model.provider_id,
                pool_id=pool.name,
                latency=latency,
                tokens=tokens,
                cost=cost,
            )
        return usage, cost

    def failed(
        self,
        pool: CapabilityPool,
        model: Model,
        err: BaseException,
        latency: float,
        tries: int,
        *,
        max_attempts: int | None = None,
        release: bool = True,
    ) -> Decision:
        """Record a failed attempt, then decide what follows (see :mod:`.policy`)."""
        still_active = self.broke(pool, model, err, latency, tries, release=release)
        retry = self.settings[pool.name].retry
        policy = self._policies.get((pool.name, max_attempts))
        if policy is None:
            policy = self._policies[pool.name, max_attempts] = RetryPolicy.of(retry, max_attempts)
        failure = Failure(_kind(err), tries, getattr(err, "retry_after", None), still_active)
        return decide(failure, policy, self._rng)

    def broke(
        self,
        pool: CapabilityPool,
        model: Model,
        err: BaseException,
        latency: float,
        attempt: int,
        *,
        release: bool = True,
    ) -> bool:
        """Apply a failure to the state (the one place that does): release the model, count
        the failure against it when it is its fault, take it (or, for refused credentials,
        its whole provider) out of rotation when a threshold is crossed. Returns whether
        the model is still active. Streams broken after their first token end here."""
        kind = _kind(err)
        if self.metrics is not None:
            self.metrics.failure(pool.name, model.id, kind.value)
        if _heard(self.emitter, EventType.REQUEST_FAILURE):  # str(err) is not free
            self.emitter.emit(
                EventType.REQUEST_FAILURE,
                model_id=model.id,
                provider_id=model.provider_id,
                pool_id=pool.name,
                kind=kind.value,
                status_code=getattr(err, "status_code", None),
                error=str(err),
                latency=latency,
                attempt=attempt,
            )
        if kind in CALLER_KINDS:  # the request's fault: the model's state does not move
            if release:
                self.release(model)
            return True
        try:
            return self._apply_failure(pool, model, err, kind, release)
        finally:
            if self.keeper is not None:  # outside the lock; never raises
                self.keeper.after_request(model, pool)

    def _apply_failure(
        self, pool: CapabilityPool, model: Model, err: BaseException, kind: ErrorKind, release: bool
    ) -> bool:
        with self.lock:
            if release:  # first, so that no later failure can leave the model in flight
                model.in_flight -= 1
            if kind is ErrorKind.CONTEXT_WINDOW:
                return True  # the request's fault, not the model's
            if kind is ErrorKind.AUTHENTICATION:
                self._deactivate_provider(model.provider_id, pool)
                return False
            now = self.clock.time()
            st = model.state
            deact = pool.rotation_policy.deactivation
            deact.policy.roll_periods(st, now)
            if counts_against_model(err, deact.policy):
                st.record_failure(err, now=now)
            model.changed()
            if st.status == ACTIVE:
                reason = _reason(deact, model, now)
                if reason is not None:
                    pool.deactivate(model, reason, now=now)
            return st.status == ACTIVE

    def release(self, model: Model) -> None:
        with self.lock:
            model.in_flight -= 1

    # --- stream history: adaptive deadlines and hedging ------------------------------
    def first_token(self, model: Model, seconds: float) -> None:
        """A stream of ``model`` sent its first token after ``seconds``."""
        with self.lock:
            times = self.times.get(model.id)
            if times is None:
                times = self.times[model.id] = ResponseTimes()
            times.first_token(seconds)

    def stream_finished(self, model: Model, longest_gap: float) -> None:
        """A stream of ``model`` finished; its chunks were at most ``longest_gap`` apart."""
        with self.lock:
            times = self.times.get(model.id)
            if times is not None:
                times.finished(longest_gap)

    def hedge_after(self, pool: CapabilityPool, model: Model) -> float | None:
        """Seconds without a first token from ``model`` before a second model is asked
        too (None: ``hedging: off`` for this pool)."""
        policy = self.settings[pool.name].hedging
        if not policy.enabled:
            return None
        if policy.after is not None:
            return policy.after  # a fixed threshold: no history to read
        with self.lock:
            times = self.times
            return policy.threshold(
                times.get(model.id), (t for m in pool.models if (t := times.get(m.id)))
            )

    def _deactivate_provider(self, provider_id: str, pool: CapabilityPool) -> None:
        """An authentication failure takes every model of the provider out of rotation."""
        affected = []
        for m in self.models.values():
            if m.provider_id == provider_id and m.state.status == ACTIVE:
                (m.pools[0] if m.pools else pool).deactivate(
                    m, DeactivationReason.AUTHENTICATION_FAILED
                )
                affected.append(m.id)
        self.emitter.emit(
            EventType.PROVIDER_DEACTIVATED,
            provider_id=provider_id,
            pool_id=pool.name,
            reason=DeactivationReason.AUTHENTICATION_FAILED.value,
            models=affected,
        )


def _kind(err: BaseException) -> ErrorKind:
    return err.kind if isinstance(err, ProviderError) else ErrorKind.CONNECTION


def _heard(emitter: EventEmitter, event_type: EventType) -> bool:
    """Whether anyone listens to ``event_type``: the request path's events (routed,
    success) are then not even built (emit would drop them, after the call and its
    arguments). Reads the emitter's table, replaced whole or item by item under its lock."""
    handlers = emitter._handlers
    return event_type in handlers or None in handlers


def _reason(deact: DeactivationEvaluator, model: Model, now: float) -> DeactivationReason | None:
    """The evaluator's verdict on ``model``, asked after every outcome.

    The package's own evaluator reads a handful of snapshot fields, which a state has
    under the same names (``window_requests`` included), so it is given the state and no
    snapshot is built; a subclass that judges otherwise may read any snapshot field, and
    is given a snapshot.
    """
    cls = type(deact)
    if cls is DeactivationEvaluator or (
        cls.get_reason is DeactivationEvaluator.get_reason
        and cls._error_threshold is DeactivationEvaluator._error_threshold
    ):
        return deact.get_reason(model.state)  # type: ignore[arg-type]
    return deact.get_reason(model.snapshot(now))


def _has_limits(pool: CapabilityPool) -> bool:
    p = pool.rotation_policy.deactivation.policy
    return p.request_limit is not None or p.token_limit is not None or p.budget_limit is not None


def _apply_rate_limits(model: Model, info: RateLimitInfo | None) -> None:
    if info is None:
        return
    st = model.state
    st.requests_limit = info.requests_limit
    st.requests_remaining = info.requests_remaining
    st.tokens_limit = info.tokens_limit
    st.tokens_remaining = info.tokens_remaining
    st.touch()
    model.changed()


def _some_capable(
    pool: CapabilityPool, unmet: Callable[[Model], str | None], what: str
) -> Callable[[Model], str | None]:
    """``unmet`` when a member of ``pool`` passes it; else NoCapableModelError naming what
    rules out each member."""
    members = pool.models
    reasons = {m.id: r for m in members if (r := unmet(m)) is not None}
    if members and len(reasons) == len(members):
        detail = "; ".join(f"{mid}: {why}" for mid, why in reasons.items())
        raise NoCapableModelError(
            f"no model of pool {pool.name!r} can serve {what} ({detail})",
            pool_name=pool.name,
            reasons=reasons,
        )
    return unmet
