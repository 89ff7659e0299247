"""Structured logging through the standard ``logging`` module.

The logger is ``modelmesh`` (``observability.logger`` renames it). Nothing is logged
at INFO or above on the happy path: deactivations, provider shutouts, exhausted pools
cut streams and a failing state store are WARNING, recoveries (of models and of the
store) INFO; routing decisions, attempts and
successes are DEBUG, and are only subscribed to when the logger is enabled for DEBUG
when the mesh is built (so they cost nothing otherwise). Every record carries the
event's fields in ``extra={"modelmesh": {...}}`` for structured handlers.
"""

from __future__ import annotations

import logging

from ._events import Event, EventEmitter, EventType

__all__ = ["attach_logging"]

_LEVELS = {
    EventType.MODEL_DEACTIVATED: logging.WARNING,
    EventType.PROVIDER_DEACTIVATED: logging.WARNING,
    EventType.POOL_EXHAUSTED: logging.WARNING,
    EventType.STREAM_INTERRUPTED: logging.WARNING,
    EventType.STORE_DEGRADED: logging.WARNING,
    EventType.MODEL_REACTIVATED: logging.INFO,
    EventType.STORE_RECOVERED: logging.INFO,
    EventType.REQUEST_FAILURE: logging.DEBUG,
    EventType.RETRY_ATTEMPTED: logging.DEBUG,
    EventType.MODEL_ROTATED: logging.DEBUG,
    EventType.REQUEST_ROUTED: logging.DEBUG,
    EventType.REQUEST_SUCCESS: logging.DEBUG,
}


def _message(e: Event) -> str:
    m = e.metadata
    if e.event_type is EventType.MODEL_DEACTIVATED:
        when = f", recovers at {m['recover_at']:.0f}" if m.get("recover_at") else ""
        return f"model {e.model_id} moved to standby ({m.get('reason')}{when})"
    if e.event_type is EventType.MODEL_REACTIVATED:
        trial = " on trial" if m.get("trial") else ""
        return f"model {e.model_id} back in rotation{trial}"
    if e.event_type is EventType.PROVIDER_DEACTIVATED:
        return f"provider {e.provider_id} refused the credentials; models out: {m.get('models')}"
    if e.event_type is EventType.POOL_EXHAUSTED:
        return f"pool {e.pool_id} has no model left to try"
    if e.event_type is EventType.STREAM_INTERRUPTED:
        return f"stream from {e.model_id} broke after {m.get('partial_chars')} characters"
    if e.event_type is EventType.STORE_DEGRADED:
        return (
            f"state store ({m.get('backend')}) failed on {m.get('operation')}: {m.get('error')}; "
            "keeping state in memory and retrying with backoff"
        )
    if e.event_type is EventType.STORE_RECOVERED:
        return (
            f"state store ({m.get('backend')}) is back after {m.get('degraded_for')}s; "
            "pending changes re-sent"
        )
    if e.event_type is EventType.REQUEST_FAILURE:
        return f"attempt on {e.model_id} failed: {m.get('kind')} {m.get('status_code') or ''}"
    details = " ".join(f"{k}={v}" for k, v in m.items())
    return f"{e.event_type.value} {e.model_id or ''} {details}".strip()


def attach_logging(emitter: EventEmitter, logger: logging.Logger) -> None:
    """Log the mesh's events on ``logger`` (see the module docstring for the levels)."""
    if not logger.handlers:  # a library logs only where the application says (no lastResort)
        logger.addHandler(logging.NullHandler())

    def log(e: Event) -> None:
        level = _LEVELS.get(e.event_type, logging.DEBUG)
        if logger.isEnabledFor(level):
            fields = {
                "event": e.event_type.value,
                "model_id": e.model_id,
                "provider_id": e.provider_id,
                "pool_id": e.pool_id,
                **e.metadata,
            }
            logger.log(level, "%s", _message(e), extra={"modelmesh": fields})

    debug = logger.isEnabledFor(logging.DEBUG)
    for event_type, level in _LEVELS.items():
        if level > logging.DEBUG or debug:
            emitter.on(event_type, log)
