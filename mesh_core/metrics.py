"""Prometheus metrics through ``prometheus-client``, fed by the mesh's events.

Registered once per process in prometheus-client's default registry (several meshes
share them), active when the package is installed and ``observability.metrics`` is
not ``off``:

* ``modelmesh_attempts_total{pool, model, outcome}``: every call, ``success`` or the failure kind
* ``modelmesh_request_latency_seconds{pool, model}``: latency of successful calls (histogram)
* ``modelmesh_tokens_total{pool, model}`` and ``modelmesh_cost_usd_total{pool, model}``
* ``modelmesh_deactivations_total{model, reason}`` and ``modelmesh_recoveries_total{model}``
"""

from __future__ import annotations

import threading
from typing import Any

from .events import Event, EventEmitter, EventType

__all__ = ["attach_metrics"]

_LOCK = threading.Lock()
_METRICS: dict[str, Any] | None = None


def _metrics() -> dict[str, Any]:
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            from prometheus_client import Counter, Histogram

            _METRICS = {
                "attempts": Counter(
                    "modelmesh_attempts", "Calls made to models", ["pool", "model", "outcome"]
                ),
                "latency": Histogram(
                    "modelmesh_request_latency_seconds",
                    "Latency of successful calls",
                    ["pool", "model"],
                ),
                "tokens": Counter("modelmesh_tokens", "Tokens used", ["pool", "model"]),
                "cost": Counter("modelmesh_cost_usd", "Spend in USD", ["pool", "model"]),
                "deactivations": Counter(
                    "modelmesh_deactivations", "Models moved to standby", ["model", "reason"]
                ),
                "recoveries": Counter("modelmesh_recoveries", "Models back in rotation", ["model"]),
            }
        return _METRICS


def attach_metrics(emitter: EventEmitter, mode: str = "auto") -> bool:
    """Subscribe the metrics to ``emitter``; returns whether metrics are on."""
    if mode == "off":
        return False
    try:
        m = _metrics()
    except ImportError:
        if mode == "on":
            raise RuntimeError(
                "observability.metrics is 'on' but prometheus-client is not installed"
            ) from None
        return False

    children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def success(e: Event) -> None:
        key = (e.pool_id or "", e.model_id or "")
        c = children.get(key)
        if c is None:  # resolving labels is the slow part: once per pool and model
            c = children[key] = (
                m["attempts"].labels(*key, "success"),
                m["latency"].labels(*key),
                m["tokens"].labels(*key),
                m["cost"].labels(*key),
            )
        meta = e.metadata
        c[0].inc()
        c[1].observe(meta.get("latency", 0.0))
        c[2].inc(meta.get("tokens", 0))
        c[3].inc(meta.get("cost", 0.0))

    def failure(e: Event) -> None:
        m["attempts"].labels(e.pool_id or "", e.model_id or "", e.metadata.get("kind")).inc()

    emitter.on(EventType.REQUEST_SUCCESS, success)
    emitter.on(EventType.REQUEST_FAILURE, failure)
    emitter.on(
        EventType.MODEL_DEACTIVATED,
        lambda e: m["deactivations"].labels(e.model_id or "", e.metadata.get("reason") or "").inc(),
    )
    emitter.on(
        EventType.MODEL_REACTIVATED, lambda e: m["recoveries"].labels(e.model_id or "").inc()
    )
    return True
