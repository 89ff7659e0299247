"""Typed events and a thread-safe emitter.

Handlers subscribe with ``on(event_type, fn)`` or ``on(None, fn)`` for every event.
Emitting with no subscriber costs one dict lookup and builds no object, so events
can sit on the request path. A handler that raises is logged and skipped: an
observer never breaks routing.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventEmitter", "EventHandler", "EventType"]

logger = logging.getLogger("modelmesh")


class EventType(enum.StrEnum):
    """Everything the mesh reports."""

    REQUEST_ROUTED = "request.routed"
    """A model was selected for an attempt (metadata: attempt, reason)."""
    REQUEST_SUCCESS = "request.success"
    REQUEST_FAILURE = "request.failure"
    """One attempt failed (metadata: kind, status_code, error, attempt)."""
    RETRY_ATTEMPTED = "retry.attempted"
    """The same model is tried again after a transient error (metadata: delay)."""
    MODEL_ROTATED = "model.rotated"
    """A request moved from one model to the next (metadata: from, to, reason)."""
    MODEL_DEACTIVATED = "model.deactivated"
    """A model went to standby (metadata: reason, recover_at)."""
    MODEL_REACTIVATED = "model.reactivated"
    """A model returned from standby (metadata: trial, previous_reason)."""
    MODEL_ADDED = "pool.model_added"
    MODEL_REMOVED = "pool.model_removed"
    PROVIDER_DEACTIVATED = "provider.deactivated"
    POOL_EXHAUSTED = "pool.exhausted"
    STREAM_INTERRUPTED = "stream.interrupted"
    REQUEST_HEDGED = "request.hedged"
    """A stream's first token was late: the same request went to this model too (metadata:
    slow, the late model; after, the threshold in seconds)."""
    HEDGE_SETTLED = "hedge.settled"
    """A hedged request ended (metadata: slow; won, whether this second model answered)."""
    STORE_DEGRADED = "store.degraded"
    """The state store failed; state is kept in memory meanwhile (metadata: backend,
    operation, error)."""
    STORE_RECOVERED = "store.recovered"
    """The state store works again and was re-synced (metadata: backend, degraded_for)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. ``metadata`` never holds a secret."""

    event_type: EventType
    timestamp: float
    model_id: str | None = None
    provider_id: str | None = None
    pool_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


EventHandler = Callable[[Event], object]


class EventEmitter:
    """Publishes :class:`Event` objects to subscribed handlers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._handlers: dict[EventType | None, tuple[EventHandler, ...]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def on(self, event_type: EventType | str | None, handler: EventHandler) -> EventHandler:
        """Subscribe ``handler`` to ``event_type`` (None: every event). Returns the handler."""
        key = None if event_type is None else EventType(event_type)
        with self._lock:
            self._handlers[key] = (*self._handlers.get(key, ()), handler)
        return handler

    def off(self, event_type: EventType | str | None, handler: EventHandler) -> None:
        """Unsubscribe ``handler``; unknown handlers are ignored."""
        key = None if event_type is None else EventType(event_type)
        with self._lock:
            handlers = tuple(h for h in self._handlers.get(key, ()) if h is not handler)
            if handlers:
                self._handlers[key] = handlers
            else:
                self._handlers.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._handlers = {}

    def emit(
        self,
        event_type: EventType,
        *,
        model_id: str | None = None,
        provider_id: str | None = None,
        pool_id: str | None = None,
        **metadata: Any,
    ) -> None:
        """Build and publish an event, if anyone listens."""
        handlers = self._handlers
        if not handlers:
            return
        specific = handlers.get(event_type, ())
        wildcard = handlers.get(None, ())
        if not specific and not wildcard:
            return
        event = Event(event_type, self._clock(), model_id, provider_id, pool_id, metadata)
        for handler in (*specific, *wildcard):
            try:
                handler(event)
            except Exception:
                logger.warning(
                    "event handler %r failed on %s", handler, event_type.value, exc_info=True
                )
