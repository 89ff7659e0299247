"""Keeping a Mesh's state in its store, and in step with other processes.

:class:`StateKeeper` restores the state when a mesh starts, saves what changed
(on every change, or periodically and on close), and with a shared store adds
usage to the store's counters, publishes status changes and picks up the other
processes' ones. Error windows and latency history stay per process (they are
saved for restarts, not shared); status, reasons, recovery times and usage
counters are shared.

The store serves the answer, never the other way round. Everything the request path
hands over is first recorded in memory (pending usage, statuses to publish, dirty
models); the store is then written *behind* the request: inline for a blocking
caller while the store is healthy (so ``write_through`` still means "saved when the
call returns"), by the :class:`~mesh_core._store_worker.StoreWorker` thread for a
caller on an event loop or while the store is degraded. A failed store operation is
caught, logged once, counted, and retried with backoff (:mod:`.store_health`); the
pending changes stay in memory and are re-sent when the store is back, counters
*added* rather than overwritten. The mesh lock is never held across store I/O.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import _lifecycle as lifecycle
from ._clock import Clock
from ._config import StorageConfig
from ._events import Event, EventEmitter, EventType
from ._lifecycle import Phase
from ._pending import Delta, PendingChanges, UsageKey
from ._pool import CapabilityPool, Model
from ._state import ModelState
from ._store_health import StoreHealth, StoreTransition
from ._store_worker import StoreWorker
from .stores import quarantine
from .stores._base import PersistedState, StateStore, StateStoreError, UsageCounters

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


_STORAGE = StorageConfig()


class StateKeeper:
    """The mesh's state in its store: restore, write behind, follow other processes."""

    def __init__(
        self,
        opener: Callable[[], StateStore],
        *,
        backend: str,
        models: Mapping[str, Model],
        pools: Mapping[str, CapabilityPool],
        lock: threading.RLock,
        clock: Clock,
        emitter: EventEmitter,
        sync_policy: str = _STORAGE.sync_policy,
        sync_interval: float = _STORAGE.sync_interval,
        refresh_interval: float = _STORAGE.refresh_interval,
        on_corrupt: str = _STORAGE.on_corrupt,
        on_unavailable: str = _STORAGE.on_unavailable,
    ) -> None:
        """The settings' meaning and defaults are StorageConfig's (read from it)."""
        self.models = models
        self.pools = pools
        self.lock = lock
        self.clock = clock
        self.emitter = emitter
        self.backend = backend
        self.sync_policy = sync_policy
        self.sync_interval = sync_interval
        self.refresh_interval = refresh_interval
        self.on_corrupt = on_corrupt
        self.on_unavailable = on_unavailable
        self.health = StoreHealth()
        self.metrics: Any = None
        """The mesh's :class:`~mesh_core._metrics.Metrics` (store errors are counted there)."""
        self._opener = opener
        self.pending = PendingChanges()
        self._io = threading.Lock()  # one store conversation at a time
        self._resync = False
        self._seq = 0
        self._applying = False
        self._closed = False
        self._next_save = time.monotonic() + sync_interval
        self._next_refresh = 0.0
        self._worker: StoreWorker | None = None
        self.shared = backend in ("sqlite", "redis")
        self.durable = backend != "memory"
        self.store: StateStore | None
        try:
            self.store = opener()
        except StateStoreError as exc:
            if on_unavailable != "degrade" or not exc.details.get("unavailable"):
                raise
            self.store = None
            self._failed(exc, "open")
        else:
            self.shared, self.durable = self.store.shared, self.store.durable

    # --- start ------------------------------------------------------------------
    def restore(self) -> None:
        """Load the saved state into the mesh, then follow status changes.

        A store that fails here is a :class:`StateStoreError` (the mesh is not built),
        unless ``storage.on_unavailable`` is ``degrade``: then the mesh starts with fresh
        state and picks up the store's when it can reach it.
        """
        if self.store is not None:
            try:
                saved = self._load()
                with self.lock:
                    if saved is not None:
                        self._apply_saved(saved)
                if self.shared:
                    self._pull_everything()
            except Exception as exc:
                if isinstance(exc, StateStoreError) or self.on_unavailable != "degrade":
                    self._release_store()  # the mesh is not built: let another one open it
                if isinstance(exc, StateStoreError):
                    raise
                if self.on_unavailable != "degrade":
                    raise StateStoreError(
                        f"the {self.backend} state store failed while loading: {_describe(exc)}",
                        details={"where": self.backend, "unavailable": True},
                    ) from None
                self._failed(exc, "load")
        self.emitter.on(EventType.MODEL_DEACTIVATED, self._on_status)
        self.emitter.on(EventType.MODEL_REACTIVATED, self._on_status)
        if self.durable:
            self._worker = StoreWorker(self)

    def _load(self) -> PersistedState | None:
        store = self.store
        assert store is not None
        try:
            return store.load()
        except StateStoreError as exc:
            if self.on_corrupt != "fresh" or exc.details.get("unavailable"):
                raise
            aside = _move_aside(store)
            logger.warning(
                "%s; starting with fresh state%s",
                exc.message,
                f" (the unreadable state was kept as {aside})" if aside else "",
            )
            return None

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

    # --- the request path (no store I/O on an event loop, never an exception) --------
    def after_request(
        self,
        model: Model,
        pool: CapabilityPool,
        *,
        usage: tuple[float, float, int, float] | None = None,
    ) -> None:
        """A request on ``model`` through ``pool`` finished; ``usage`` is a success's
        ``(quota period, budget period, tokens, cost)``, already counted in memory."""
        if not self.durable:
            return
        counted = None
        if usage is not None and self.shared:
            q, b, tokens, cost = usage
            counted = ((model.id, q, b), Delta(1, tokens, cost))
        self.pending.request(model.id, pool.name, counted)
        self._kick()

    def _kick(self) -> None:
        save = self._save_due(time.monotonic())
        if not (self.shared or save):
            return
        if self.health.healthy and not self._closed and not _on_event_loop():
            self._sync(save=save)
        elif self._worker is not None:
            self._worker.wake()

    def _save_due(self, now: float) -> bool:
        return self.sync_policy == "write_through" or now >= self._next_save

    def _on_status(self, event: Event) -> None:
        # Called under the mesh lock (from a deactivation): remember, let the worker publish.
        if self._applying or event.model_id is None or event.model_id not in self.models:
            return
        self.pending.status(event.model_id, publish=self.shared)
        if self._worker is not None:
            self._worker.wake()

    def pull_usage(self, model: Model) -> None:
        """Shared stores: bring one model's counters up to date before it is called.

        Blocking (the async path runs it in a thread). Skipped while the store is
        degraded: limits are then counted locally.
        """
        store = self.store
        if not self.shared or store is None or not self.health.may_try(time.monotonic()):
            return
        with self.lock:
            q, b = self._periods(model)
        try:
            usage = store.get_usage(model.id, q, b)
        except Exception as exc:
            self._failed(exc, "get_usage")
            return
        self._ok()
        with self.lock:
            self._apply_usage(model, q, b, usage)

    def _periods(self, model: Model) -> tuple[float, float]:
        """The model's current quota and budget periods (rolled first). Under the lock."""
        st = model.state
        if model.pools:
            model.pools[0].rotation_policy.deactivation.policy.roll_periods(st, self.clock.time())
        return st.quota_period_start or 0.0, st.budget_period_start or 0.0

    def _apply_usage(self, model: Model, q: float, b: float, usage: UsageCounters) -> None:
        """Set a model's counters to the store's totals plus what is still pending here."""
        mine = self.pending.usage_of(model.id, q, b)
        st = model.state
        if (st.quota_period_start or 0.0) == q:
            st.quota_used = usage.requests + mine.requests
            st.tokens_used = usage.tokens + mine.tokens
        if (st.budget_period_start or 0.0) == b:
            st.cost_accumulated = usage.cost + mine.cost
        st.touch()
        model.changed()

    # --- talking to the store -------------------------------------------------------
    def _sync(self, *, save: bool, force: bool = False) -> bool:
        """One conversation with the store: open it if needed, add pending usage, publish
        statuses, save what changed, re-sync after an outage. True when it all worked.

        Never raises: a failure degrades the store and leaves the rest pending.
        """
        if not force and not self.health.may_try(time.monotonic()):
            return False
        with self._io:
            if not force and not self.health.may_try(time.monotonic()):
                return False  # degraded while we waited for the conversation before ours
            op = "open"
            try:
                if self.store is None:
                    self.store = self._opener()
                    self._resync = True
                op = "add_usage"
                self._push_usage(self.store)
                op = "publish_status"
                self._publish_statuses(self.store)
                if save:
                    op = "save"
                    self._save(self.store)
                if self._resync:
                    op = "resync"
                    self._pull_everything()
                    self._resync = False
            except Exception as exc:
                self._failed(exc, op)
                return False
        self._ok()
        return True

    def _push_usage(self, store: StateStore) -> None:
        items = self.pending.take_usage()
        done: list[tuple[UsageKey, UsageCounters]] = []
        try:
            for token, key, delta in items:
                mid, q, b = key
                totals = store.add_usage(
                    mid, q, b, delta.requests, delta.tokens, delta.cost, token=token
                )
                done.append((key, totals))
        except BaseException:
            self.pending.give_back_usage(items[len(done) :])  # merged with newer usage
            raise
        finally:
            if done:
                with self.lock:
                    for (mid, q, b), totals in done:
                        model = self.models.get(mid)
                        if model is not None:
                            self._apply_usage(model, q, b, totals)

    def _publish_statuses(self, store: StateStore) -> None:
        mids = self.pending.take_statuses()
        with self.lock:
            records = {
                mid: {k: getattr(self.models[mid].state, k) for k in _STATUS_FIELDS} for mid in mids
            }
        for i, mid in enumerate(mids):
            try:
                store.publish_status(mid, records[mid])
            except BaseException:
                self.pending.give_back_statuses(mids[i:])
                raise

    def _save(self, store: StateStore) -> None:
        mids, pids = self.pending.take_dirty()
        with self.lock:
            if not self.shared:  # a snapshot store keeps the whole state
                mids, pids = set(self.models), set(self.pools)
            state = PersistedState(
                models={m: self.models[m].state.to_dict() for m in mids if m in self.models},
                pools={p: _pool_record(self.pools[p]) for p in pids if p in self.pools},
                saved_at=self.clock.time(),
            )
        try:
            store.save(state)
        except BaseException:
            self.pending.give_back_dirty(mids, pids)
            raise
        self._next_save = time.monotonic() + self.sync_interval

    def _refresh(self, store: StateStore) -> None:
        """Pick up other processes' status changes."""
        changes = store.statuses_since(self._seq)
        if changes:
            with self.lock:
                self._apply_remote(changes)

    def _pull_everything(self) -> None:
        """Shared stores: every status change since we last looked, and every counter."""
        store = self.store
        assert store is not None
        self._refresh(store)
        for model in self.models.values():
            if not model.pools:
                continue
            with self.lock:
                q, b = self._periods(model)
            usage = store.get_usage(model.id, q, b)
            with self.lock:
                self._apply_usage(model, q, b, usage)

    def _apply_remote(self, changes: list[tuple[str, dict[str, Any], int]]) -> None:
        self._applying = True
        try:
            for mid, status, seq in changes:
                self._seq = max(self._seq, seq)
                model = self.models.get(mid)
                if model is None:
                    continue
                st = model.state
                moved = lifecycle.adopt(st, status)
                model.changed()
                if moved is not None and (moved.before is Phase.STANDBY) != (
                    moved.after is Phase.STANDBY
                ):
                    kind = (
                        EventType.MODEL_DEACTIVATED
                        if moved.after is Phase.STANDBY
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

    # --- health -------------------------------------------------------------------
    def _failed(self, exc: BaseException, operation: str) -> None:
        error = _describe(exc)
        if self.metrics is not None:
            self.metrics.store_error(self.backend, operation)
        if self.shared:
            self._resync = True  # what other processes did meanwhile must be pulled
        if self.health.failed(time.monotonic(), error) is StoreTransition.DEGRADED:
            self.emitter.emit(
                EventType.STORE_DEGRADED, backend=self.backend, operation=operation, error=error
            )

    def _ok(self) -> None:
        since = self.health.degraded_since
        if self.health.succeeded() is StoreTransition.RECOVERED:
            self.emitter.emit(
                EventType.STORE_RECOVERED,
                backend=self.backend,
                degraded_for=round(time.monotonic() - (since or time.monotonic()), 3),
            )
            if self._worker is not None:
                self._worker.wake()  # push what piled up while the store was away

    def report(self) -> dict[str, Any]:
        """The store's health for ``mesh.stats()`` (JSON-safe)."""
        h = self.health
        pending = self.pending.summary()
        since = h.degraded_since
        return {
            "backend": self.backend,
            "healthy": h.healthy,
            "errors": h.errors,
            "degradations": h.degradations,
            "degraded_for": None if since is None else round(time.monotonic() - since, 3),
            "last_error": h.last_error,
            "pending": pending,
        }

    # --- the background thread, saving on demand, closing ------------------------------
    def background_pass(self, now: float) -> float:
        """The worker's turn: write what is pending, poll other processes when due.
        Returns the seconds until the next turn is due."""
        if self._closed:
            return 1.0
        pending, dirty = self.pending.to_write, self.pending.dirty
        save = dirty and self._save_due(now)
        if (pending or save or self._resync or self.store is None) and self.health.may_try(now):
            self._sync(save=save)
        store = self.store
        if self.shared and store is not None and now >= self._next_refresh:
            self._next_refresh = now + self.refresh_interval
            if self.health.may_try(now):
                try:
                    with self._io:
                        self._refresh(store)
                except Exception as exc:
                    self._failed(exc, "refresh")
                else:
                    self._ok()
        waits = [1.0]
        if self.shared:
            waits.append(self._next_refresh - now)
        if dirty and self.sync_policy == "periodic":
            waits.append(self._next_save - now)
        if not self.health.healthy:
            waits.append(self.health.retry_at - now)
        return max(0.001, min(waits))

    def flush(self) -> None:
        """Save what changed now; StateStoreError when the store cannot take it (the
        state stays in memory and is saved when the store is back)."""
        if not self.durable:
            return
        if not self._sync(save=True, force=True):
            raise StateStoreError(
                f"the {self.backend} state store cannot save the state now: "
                f"{self.health.last_error}",
                details={"where": self.backend},
            )

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker, make one last bounded attempt to save, release the store.
        Never raises: a state that cannot be saved is logged."""
        self._closed = True
        if self._worker is not None:
            self._worker.stop(timeout)
        if self.durable and not self._sync(save=True, force=True):
            logger.warning(
                "the %s state store could not save the final state: %s",
                self.backend,
                self.health.last_error,
            )
        self._release_store()

    def _release_store(self) -> None:
        store = self.store
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                logger.warning("closing the %s state store failed: %s", self.backend, exc)


def _pool_record(pool: CapabilityPool) -> dict[str, Any]:
    return {
        "total_requests": pool.total_requests,
        "rotation_events": pool.rotation_events,
        "strategy": pool.strategy.export_state(),
    }


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    """A one-line description of a store error (stores keep secrets out of theirs)."""
    text = exc.message if isinstance(exc, StateStoreError) else str(exc)
    return f"{type(exc).__name__}: {text}"[:300]


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
