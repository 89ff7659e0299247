"""Models and capability pools: the members of a capability, and which of them may serve.

A :class:`Model` is one routable model: its static description (provider,
capabilities, features, window, prices) and its shared :class:`ModelState`. A
model can sit in several pools; its state, and so its standby status, is the
same in all of them.

A :class:`CapabilityPool` keeps its models in configured order, splits them into
active and standby, asks its strategy to choose among the active ones, and
applies its rotation policy (deactivation and recovery). Recovery needs no
background thread: due models are brought back when the pool is next used.

Cooldowns are judged on the clock's monotonic time, calendar recoveries (quota
and budget periods, maintenance windows) on its wall time; see :mod:`.state`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from . import _lifecycle as lifecycle
from ._clock import Clock, SystemClock
from ._errors import NoAvailableModelError
from ._evaluators import DeactivationEvaluator, DeactivationReason, RecoveryEvaluator
from ._events import EventEmitter, EventType
from ._lifecycle import Move
from ._state import ACTIVE, COOLDOWN_REASONS, STANDBY, ModelSnapshot, ModelState
from ._types import CompletionRequest, Usage
from .strategies import SelectionResult, SelectionStrategy, StickUntilFailureStrategy

__all__ = ["CapabilityPool", "Model", "PoolState", "RotationPolicy"]


@dataclass(eq=False)
class Model:
    """One routable model. ``id`` is the mesh's name (``vendor.model``)."""

    id: str
    provider_id: str
    name: str
    """The name sent to the provider."""
    capabilities: tuple[str, ...] = ()
    features: frozenset[str] = frozenset()
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_price: float | None = None
    """USD per 1k prompt tokens."""
    output_price: float | None = None
    """USD per 1k completion tokens."""
    request_price: float = 0.0
    """USD per request."""
    state: ModelState = field(default_factory=ModelState)
    in_flight: int = 0
    pools: list[CapabilityPool] = field(default_factory=list, repr=False)
    _snapshot: ModelSnapshot | None = field(default=None, repr=False)
    _snapshot_version: int = field(default=-1, repr=False)

    def snapshot(self, now: float, mono: float | None = None) -> ModelSnapshot:
        """The state's snapshot, cached until the state changes (or the model is in standby).

        ``mono`` is the monotonic time of the moment ``now``; by default it is read
        from the first pool's clock, so a cooldown's time left ignores wall-clock steps.
        """
        st = self.state
        if self._snapshot_version == st.version and st.status == ACTIVE:
            return self._snapshot  # type: ignore[return-value]
        if mono is None and st.status == STANDBY and self.pools:
            mono = self.pools[0].clock.monotonic()
        snap = st.snapshot(
            self.id,
            self.provider_id,
            now,
            mono=mono,
            input_price=self.input_price,
            output_price=self.output_price,
        )
        self._snapshot, self._snapshot_version = snap, st.version
        return snap

    def cost(self, usage: Usage) -> float:
        """USD cost of one request with ``usage``, from the model's pricing."""
        return (
            usage.prompt_tokens * (self.input_price or 0.0) / 1000.0
            + usage.completion_tokens * (self.output_price or 0.0) / 1000.0
            + self.request_price
        )

    def changed(self) -> None:
        """Tell the pools this model's state moved (their cached views are stale)."""
        for pool in self.pools:
            pool._model_changed(self)


@dataclass(frozen=True, slots=True)
class PoolState:
    """Aggregate state snapshot of a capability pool."""

    name: str
    hierarchy_node: str
    active_count: int
    standby_count: int
    total_requests: int
    rotation_events: int


@dataclass
class RotationPolicy:
    """What a pool decides with: when to deactivate, when to recover, whom to select."""

    deactivation: DeactivationEvaluator = field(default_factory=DeactivationEvaluator)
    recovery: RecoveryEvaluator = field(default_factory=RecoveryEvaluator)
    strategy: SelectionStrategy = field(default_factory=StickUntilFailureStrategy)


#: Says why a model cannot serve a request, or None when it can.
Eligibility = Callable[[Model], "str | None"]


class CapabilityPool:
    """A pool of models grouped by capability, with rotation management."""

    def __init__(
        self,
        name: str,
        hierarchy_node: str,
        rotation_policy: RotationPolicy | None = None,
        event_emitter: EventEmitter | None = None,
        *,
        clock: Clock | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        self._name = name
        self._hierarchy_node = hierarchy_node
        self._rotation_policy = rotation_policy or RotationPolicy()
        self._event_emitter = event_emitter or EventEmitter()
        self._clock = clock or SystemClock()
        self._lock = lock or threading.RLock()
        self._models: list[Model] = []
        self._active_models: list[Model] = []
        self._standby_models: list[Model] = []
        self._snaps: list[ModelSnapshot | None] = []
        self._active_index: dict[str, int] = {}
        self._stale: set[int] = set()
        self._by_id: dict[str, Model] = {}
        self._trials: set[Model] = set()
        self._kept: tuple[Model, SelectionResult] | None = None
        """The default strategy's last answer for its current model (see _still_current)."""
        """Active models on probation (small: kept so selection never scans for them)."""
        self._min_window: int | None = None
        self._dirty = True
        self._next_wall = -math.inf
        """Refresh again at this wall time (a calendar recovery, a maintenance window)."""
        self._next_mono = -math.inf
        """... or at this monotonic time (the end of a cooldown), whichever comes first."""
        self._checked_at = math.inf
        """Wall time of the last full refresh: a clock set back before it refreshes again."""
        self.total_requests = 0
        self.rotation_events = 0

    # --- the public surface ----------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def hierarchy_node(self) -> str:
        return self._hierarchy_node

    @property
    def clock(self) -> Clock:
        """The pool's clock (its members' snapshots read cooldowns from it)."""
        return self._clock

    @property
    def rotation_policy(self) -> RotationPolicy:
        return self._rotation_policy

    @property
    def strategy(self) -> SelectionStrategy:
        return self._rotation_policy.strategy

    @property
    def models(self) -> list[Model]:
        """Every member, in pool order."""
        return list(self._models)

    @property
    def min_context_window(self) -> int | None:
        """The smallest declared context window among the members (None: none declared)."""
        return self._min_window  # kept by _membership_changed: read on every request

    def get_active_models(self) -> list[Model]:
        """Return all models currently eligible for routing (as of now: due recoveries and
        maintenance windows are applied first)."""
        with self._lock:
            self.refresh()
            self._rebuild()
            return list(self._active_models)

    def get_standby_models(self) -> list[Model]:
        """Return all models currently excluded from routing (as of now)."""
        with self._lock:
            self.refresh()
            self._rebuild()
            return list(self._standby_models)

    def add_model(self, model: Model) -> None:
        """Add a model to the pool (at the end of pool order)."""
        with self._lock:
            if any(m is model for m in self._models):
                return
            if not model.pools:  # the first pool's thresholds judge the shared state
                policy = self._rotation_policy.deactivation.policy
                model.state.limits = policy.limits
                model.state.window_size = policy.error_rate_window
            self._models.append(model)
            model.pools.append(self)
            self._membership_changed()
        self._event_emitter.emit(
            EventType.MODEL_ADDED,
            model_id=model.id,
            provider_id=model.provider_id,
            pool_id=self._name,
        )

    def remove_model(self, model: Model) -> None:
        """Remove a model from both the active and standby sets."""
        with self._lock:
            if not any(m is model for m in self._models):
                return
            self._models = [m for m in self._models if m is not model]
            model.pools[:] = [p for p in model.pools if p is not self]
            self._membership_changed()
        self._event_emitter.emit(
            EventType.MODEL_REMOVED,
            model_id=model.id,
            provider_id=model.provider_id,
            pool_id=self._name,
        )

    def select(self, request: CompletionRequest) -> Model:
        """Delegate to the selection strategy and return the best candidate.

        Raises:
            NoAvailableModelError: If no active model remains.
        """
        return self.choose(request)[0]

    def deactivate(
        self, model: Model, reason: str | DeactivationReason, *, now: float | None = None
    ) -> None:
        """Move a model from active to standby with a recorded reason.

        The recovery time follows the reason (see :class:`RecoveryEvaluator`). It is
        recorded as a Unix timestamp (persisted, shared, in the event) and, for a
        cooldown, anchored to the monotonic clock, which judges it.
        """
        reason = DeactivationReason(reason)
        with self._lock:
            now = self._clock.time() if now is None else now
            st = model.state
            recover_at = self._rotation_policy.recovery.recovery_time(
                reason,
                now,
                strikes=lifecycle.strikes_after(st, Move.DEACTIVATE),
                retry_after=st.retry_after,
            )
            moved = lifecycle.apply(
                st,
                Move.DEACTIVATE,
                now=now,
                mono=self._clock.monotonic(),
                reason=reason.value,
                recover_at=recover_at,
            )
            self.rotation_events += 1
            model.changed()
        assert moved is not None  # every phase may be deactivated
        self._event_emitter.emit(
            EventType.MODEL_DEACTIVATED,
            model_id=model.id,
            provider_id=model.provider_id,
            pool_id=self._name,
            reason=reason.value,
            recover_at=recover_at,
            failed_trial=moved.failed_trial,
        )

    def recover(self, model: Model, *, trial: bool = False) -> None:
        """Move a model from standby back to active.

        With ``trial`` the model is on probation: its next request is a trial, and
        a failure sends it straight back with a longer cooldown.
        """
        with self._lock:
            moved = lifecycle.apply(
                model.state,
                Move.RECOVER_ON_TRIAL if trial else Move.RECOVER,
                now=self._clock.time(),
                mono=self._clock.monotonic(),
            )
            if moved is None:
                return  # not in standby
            self.rotation_events += 1
            model.changed()
        self._event_emitter.emit(
            EventType.MODEL_REACTIVATED,
            model_id=model.id,
            provider_id=model.provider_id,
            pool_id=self._name,
            previous_reason=moved.reason,
            trial=trial,
        )

    def get_state(self) -> PoolState:
        """Return the pool's aggregate state."""
        with self._lock:
            self.refresh()
            self._rebuild()
            return PoolState(
                name=self._name,
                hierarchy_node=self._hierarchy_node,
                active_count=len(self._active_models),
                standby_count=len(self._standby_models),
                total_requests=self.total_requests,
                rotation_events=self.rotation_events,
            )

    # --- selection ------------------------------------------------------------
    def choose(
        self,
        request: CompletionRequest,
        *,
        exclude: Collection[str] = (),
        eligible: Eligibility | None = None,
    ) -> tuple[Model, SelectionResult]:
        """Select a model for ``request``, skipping ``exclude`` and ineligible models.

        Raises NoAvailableModelError (saying when the earliest standby model
        recovers) when nothing is left to choose from.
        """
        with self._lock:
            clock = self._clock
            now = clock.time()
            if not (
                self._checked_at <= now < self._next_wall and clock.monotonic() < self._next_mono
            ):
                self.refresh(now)  # something may be due (the test is refresh's own)
            if self._dirty:
                self._rebuild()
            strategy = self._rotation_policy.strategy
            if type(strategy) is StickUntilFailureStrategy:
                kept = self._still_current(strategy.current, exclude, eligible)
                if kept is not None:  # what its select() answers, without a snapshot
                    cached = self._kept
                    if cached is not None and cached[0] is kept:  # immutable: reused
                        return cached
                    result = SelectionResult(kept.id, kept.provider_id, 1.0, "current model")
                    self._kept = (kept, result)
                    return kept, result
            snaps = self._candidate_snapshots(now)  # the cached list, when nothing is stale
            if exclude or eligible is not None or (self._trials and self._has_busy_trial()):
                models = self._active_models
                snaps = [
                    s
                    for s, m in zip(snaps, models)
                    if m.id not in exclude
                    and not (m.state.probation and m.in_flight)
                    and (eligible is None or eligible(m) is None)
                ]
            if not snaps:
                raise self.exhausted_error(tried=bool(exclude), eligible=eligible)
            result = strategy.select(snaps, request)
            model = self._by_id[result.model_id]
            return model, result

    def _still_current(
        self, current: str | None, exclude: Collection[str], eligible: Eligibility | None
    ) -> Model | None:
        """The default strategy's current model, when it is still a candidate (else None).

        Stick-until-failure keeps its current model whenever that model is among the
        candidates, and reads nothing else to decide so: its usual answer needs no
        snapshot, so none is refreshed for it (the exact class only: a subclass may
        decide otherwise, and is asked through ``select``).
        """
        if current is None:
            return None
        idx = self._active_index.get(current)
        if idx is None or current in exclude:
            return None
        model = self._active_models[idx]
        if model.state.probation and model.in_flight:  # its one trial is under way
            return None
        if eligible is not None and eligible(model) is not None:
            return None
        return model

    def exhausted_error(
        self, *, tried: bool = False, eligible: Eligibility | None = None
    ) -> NoAvailableModelError:
        """The error raised when no model can be chosen (with the earliest recovery).

        With ``eligible`` (the request needs tools, a schema, images, a large window) it
        speaks of the *capable* models only: which ones are in standby and until when,
        and which others were ruled out for what, so that a tool request in a pool whose
        one tool-capable model is down is not told "every model is in standby" while
        other models are active. ``recovers_at`` is a wall-clock time: now plus the
        shortest time left, so it stays right (for callers waiting on it) after the wall
        clock was stepped.
        """
        now = self._clock.time()
        ruled_out: dict[str, str] = {}
        if eligible is not None:
            ruled_out = {m.id: why for m in self._models if (why := eligible(m)) is not None}
        capable = [m for m in self._models if m.id not in ruled_out]
        recovers_at = RecoveryEvaluator.earliest_recovery(
            (m.state for m in capable), now, self._clock.monotonic()
        )
        standby = [m.id for m in capable if m.state.status == STANDBY]
        if not self._models:
            msg = f"pool {self._name!r} has no models"
        elif ruled_out:
            msg = f"no capable model of pool {self._name!r} is available"
            if standby:
                msg += f" ({', '.join(standby)} in standby)"
            elif tried:
                msg += " (every capable one was tried)"
        elif tried and len(standby) < len(self._models):
            msg = f"every available model of pool {self._name!r} was tried"
        else:
            msg = f"every model of pool {self._name!r} is in standby"
        if recovers_at is not None:
            msg += f"; the earliest recovers in {recovers_at - now:.1f}s"
        elif standby:
            msg += "; none recovers by itself (manual recovery needed)"
        if ruled_out:
            msg += "; not capable: " + "; ".join(f"{m}: {why}" for m, why in ruled_out.items())
        return NoAvailableModelError(
            msg,
            pool_name=self._name,
            recovers_at=recovers_at,
            details={"standby": standby, "recovers_at": recovers_at, "not_capable": ruled_out},
        )

    def _has_busy_trial(self) -> bool:
        """A model on trial already has its one request in flight (checked without a scan)."""
        return any(m.in_flight for m in self._trials)

    def _candidate_snapshots(self, now: float) -> list[ModelSnapshot]:
        self._rebuild()
        snaps = self._snaps
        if self._stale:
            models = self._active_models
            for i in self._stale:
                snaps[i] = models[i].snapshot(now)
            self._stale.clear()
        return snaps  # type: ignore[return-value]

    # --- recovery, maintenance ------------------------------------------------
    def refresh(self, now: float | None = None) -> None:
        """Bring back due standby models and apply maintenance windows.

        Cheap when nothing is due: it compares the wall and monotonic times with the
        next time anything can change on each.
        """
        with self._lock:
            now = self._clock.time() if now is None else now
            mono = self._clock.monotonic()
            if self._checked_at <= now < self._next_wall and mono < self._next_mono:
                return
            self._checked_at = now
            policy = self._rotation_policy
            inside, until = policy.deactivation.in_maintenance(now)
            if inside:
                for m in list(self._models):
                    if m.state.status == ACTIVE:
                        self.deactivate(m, DeactivationReason.MAINTENANCE_WINDOW, now=now)
            recovery = policy.recovery
            for m in list(self._models):
                st = m.state
                if recovery.may_recover(st, now, mono):
                    if (
                        inside
                        and st.deactivation_reason == DeactivationReason.MAINTENANCE_WINDOW.value
                    ):
                        continue
                    policy.deactivation.policy.roll_periods(st, now)
                    self.recover(m, trial=recovery.needs_trial(st.deactivation_reason))
            self._next_wall, self._next_mono = until, math.inf
            for m in self._models:
                if m.state.recovers_in(now, mono) is not None:
                    self._note_recovery(m.state)

    # --- internal bookkeeping ---------------------------------------------------
    def _note_recovery(self, st: ModelState) -> None:
        """Refresh no later than ``st``'s recovery (a standby state with an anchored time)."""
        if st.deactivation_reason in COOLDOWN_REASONS:
            at = st.recover_mono
            self._next_mono = min(self._next_mono, math.inf if at is None else at)
        else:
            at = st.recover_at
            self._next_wall = min(self._next_wall, math.inf if at is None else at)

    def _check_now(self) -> None:
        self._next_wall = self._next_mono = -math.inf

    def _membership_changed(self) -> None:
        """Members or their states were replaced (also after a restore): re-check everything."""
        self._dirty = True
        self._check_now()
        windows = [m.context_window for m in self._models if m.context_window is not None]
        self._min_window = min(windows) if windows else None
        for m in self._models:  # restored states carry only the wall-clock recover_at
            if m.state.recover_at is not None:
                m.state.sync_deadline(self._clock)
        self._rotation_policy.strategy.bind(self._name, [m.id for m in self._models])

    def _model_changed(self, model: Model) -> None:
        """Called by :meth:`Model.changed` (under the mesh lock)."""
        st = model.state
        if st.recover_at is not None:
            st.sync_deadline(self._clock)  # set by another process: anchor it now
            if st.status == STANDBY:
                self._note_recovery(st)
        if self._dirty:
            return
        idx = self._active_index.get(model.id)
        active = st.status == ACTIVE
        if (idx is None) == active:  # status changed: the split must be rebuilt
            self._dirty = True
            self._check_now()
        elif idx is not None:
            self._stale.add(idx)
            if st.probation:
                self._trials.add(model)
            else:
                self._trials.discard(model)

    def _rebuild(self) -> None:
        if not self._dirty:
            return
        self._active_models = [m for m in self._models if m.state.status == ACTIVE]
        self._standby_models = [m for m in self._models if m.state.status != ACTIVE]
        self._active_index = {m.id: i for i, m in enumerate(self._active_models)}
        self._snaps = [None] * len(self._active_models)
        self._stale = set(range(len(self._active_models)))
        self._by_id = {m.id: m for m in self._models}
        self._trials = {m for m in self._active_models if m.state.probation}
        self._dirty = False

    def __repr__(self) -> str:
        return (
            f"CapabilityPool({self._name!r}, {self._hierarchy_node!r}, models={len(self._models)})"
        )
