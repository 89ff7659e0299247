"""Keeping a Mesh's state in its store, and in step with other processes.

:class:`StateKeeper` restores the state when a mesh starts, saves what changed
(on every change, or periodically and on close), and with a shared store adds
usage to the store's counters, publishes status changes and picks up the other
processes' ones. Error windows and latency history stay per process (they are
saved for restarts, not shared); status, reasons, recovery times and usage
counters are shared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from .clock import Clock
from .events import Event, EventEmitter, EventType
from .pool import CapabilityPool, Model
from .state import ACTIVE, STANDBY, ModelState
from .stores import quarantine
from .stores.base import PersistedState, StateStore, StateStoreError, Usage

__all__ = ["StateKeeper"]

logger = logging.getLogger("modelmesh")

_STATUS_FIELDS = (
    "status",
    "deactivation_reason",
    "recover_at",
    "standby_since",
    "probation",
    "strikes",
)


class StateKeeper:
    def __init__(
        self,
        store: StateStore,
        *,
        models: Mapping[str, Model],
        pools: Mapping[str, CapabilityPool],
        lock: threading.RLock,
        clock: Clock,
        emitter: EventEmitter,
        sync_policy: str = "write_through",
        sync_interval: float = 5.0,
        refresh_interval: float = 1.0,
        on_corrupt: str = "error",
    ) -> None:
        self.store = store
        self.models = models
        self.pools = pools
        self.lock = lock
        self.clock = clock
        self.emitter = emitter
        self.sync_policy = sync_policy
        self.sync_interval = sync_interval
        self.refresh_interval = refresh_interval
        self.on_corrupt = on_corrupt
        self.shared = store.shared
        self._dirty_models: set[str] = set()
        self._dirty_pools: set[str] = set()
        self._last_save = time.monotonic()
        self._last_refresh = 0.0
        self._seq = 0
        self._applying = False
        self._io = threading.Lock()

    # --- start ------------------------------------------------------------------
    def restore(self) -> None:
        """Load the saved state into the mesh, then follow status changes."""
        try:
            saved = self.store.load()
        except StateStoreError as exc:
            if self.on_corrupt != "fresh":
                raise
            aside = _move_aside(self.store)
            logger.warning(
                "%s; starting with fresh state%s",
                exc.message,
                f" (the unreadable state was kept as {aside})" if aside else "",
            )
            saved = None
        with self.lock:
            if saved is not None:
                self._apply_saved(saved)
            if self.shared:
                self._apply_remote(self.store.statuses_since(0))
                now = self.clock.time()
                for model in self.models.values():
                    self._pull_usage(model, now)
        self.emitter.on(EventType.MODEL_DEACTIVATED, self._on_status)
        self.emitter.on(EventType.MODEL_REACTIVATED, self._on_status)

    def _apply_saved(self, saved: PersistedState) -> None:
        for mid, data in saved.models.items():
            model = self.models.get(mid)
            if model is None:
                continue  # a model no longer configured
            restored = ModelState.from_dict(data)
            restored.limits, restored.window_size = model.state.limits, model.state.window_size
            restored.latency_window = model.state.latency_window
            model.state = restored
            restored.touch()
        for pid, data in saved.pools.items():
            pool = self.pools.get(pid)
            if pool is None:
                continue
            pool.total_requests = int(data.get("total_requests", 0))
            pool.rotation_events = int(data.get("rotation_events", 0))
            pool.strategy.import_state(data.get("strategy") or {})
        for pool in self.pools.values():
            pool._membership_changed()

    # --- status ------------------------------------------------------------------
    def _on_status(self, event: Event) -> None:
        if self._applying or event.model_id is None:
            return
        model = self.models.get(event.model_id)
        if model is None:
            return
        self._dirty_models.add(model.id)
        if self.shared:
            st = model.state
            self.store.publish_status(model.id, {k: getattr(st, k) for k in _STATUS_FIELDS})

    def refresh(self, *, force: bool = False) -> None:
        """Pick up other processes' status changes (at most every ``refresh_interval``)."""
        if not self.shared:
            return
        now = time.monotonic()
        if not force and now - self._last_refresh < self.refresh_interval:
            return
        self._last_refresh = now
        changes = self.store.statuses_since(self._seq)
        if changes:
            with self.lock:
                self._apply_remote(changes)

    def _apply_remote(self, changes: list[tuple[str, dict[str, Any], int]]) -> None:
        self._applying = True
        try:
            for mid, status, seq in changes:
                self._seq = max(self._seq, seq)
                model = self.models.get(mid)
                if model is None:
                    continue
                st = model.state
                before = st.status
                for key in _STATUS_FIELDS:
                    if key in status:
                        setattr(st, key, status[key])
                if st.status == ACTIVE and before == STANDBY:
                    st.failure_count = 0
                    st.outcomes.clear()
                    st.error_rate = 0.0
                st.touch()
                model.changed()
                if before != st.status:
                    kind = (
                        EventType.MODEL_DEACTIVATED
                        if st.status == STANDBY
                        else EventType.MODEL_REACTIVATED
                    )
                    self.emitter.emit(
                        kind,
                        model_id=mid,
                        provider_id=model.provider_id,
                        reason=st.deactivation_reason,
                        recover_at=st.recover_at,
                        remote=True,
                    )
        finally:
            self._applying = False

    # --- usage ---------------------------------------------------------------------
    def add_usage(
        self, model: Model, pool: CapabilityPool, tokens: int, cost: float
    ) -> Usage | None:
        """Shared stores: add one request's usage on the server; the new totals come back."""
        if not self.shared:
            return None
        now = self.clock.time()
        with self.lock:
            pool.rotation_policy.deactivation.policy.roll_periods(model.state, now)
            q, b = model.state.quota_period_start, model.state.budget_period_start
        return self.store.add_usage(model.id, q or 0.0, b or 0.0, 1, tokens, cost)

    def _pull_usage(self, model: Model, now: float) -> None:
        if not model.pools:
            return
        st = model.state
        model.pools[0].rotation_policy.deactivation.policy.roll_periods(st, now)
        usage = self.store.get_usage(
            model.id, st.quota_period_start or 0.0, st.budget_period_start or 0.0
        )
        st.quota_used, st.tokens_used, st.cost_accumulated = (
            usage.requests,
            usage.tokens,
            usage.cost,
        )
        st.touch()
        model.changed()

    def sync_usage(self, model: Model) -> None:
        """Shared stores: bring one model's counters up to date before it is called."""
        if self.shared:
            with self.lock:
                self._pull_usage(model, self.clock.time())

    # --- saving ------------------------------------------------------------------------
    def touched(self, model: Model, pool: CapabilityPool) -> None:
        """A request on ``model`` through ``pool`` finished: save per the sync policy."""
        if not self.store.durable:
            return
        self._dirty_models.add(model.id)
        self._dirty_pools.add(pool.name)
        if self.sync_policy == "write_through" or (
            time.monotonic() - self._last_save >= self.sync_interval
        ):
            self.flush()

    def flush(self) -> None:
        """Save what changed (everything, for a snapshot store)."""
        with self._io:
            with self.lock:
                if self.shared:
                    mids, pids = self._dirty_models, self._dirty_pools
                else:
                    mids, pids = set(self.models), set(self.pools)
                self._dirty_models, self._dirty_pools = set(), set()
                state = PersistedState(
                    models={m: self.models[m].state.to_dict() for m in mids if m in self.models},
                    pools={p: _pool_record(self.pools[p]) for p in pids if p in self.pools},
                    saved_at=self.clock.time(),
                )
            self.store.save(state)
            self._last_save = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.store.close()


def _pool_record(pool: CapabilityPool) -> dict[str, Any]:
    return {
        "total_requests": pool.total_requests,
        "rotation_events": pool.rotation_events,
        "strategy": pool.strategy.export_state(),
    }


def _move_aside(store: StateStore) -> str | None:
    """Keep an unreadable state under another name, so nothing is silently lost."""
    path = getattr(store, "path", None)
    if path is None:
        return None
    store.close()
    aside = quarantine(path)
    reopen = getattr(store, "reopen", None)
    if reopen is not None:
        reopen()
    return aside
