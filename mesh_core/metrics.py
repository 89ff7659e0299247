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

    def success(e: Event) -> None:
        labels = (e.pool_id or "", e.model_id or "")
        m["attempts"].labels(*labels, "success").inc()
        m["latency"].labels(*labels).observe(e.metadata.get("latency", 0.0))
        m["tokens"].labels(*labels).inc(e.metadata.get("tokens", 0))
        m["cost"].labels(*labels).inc(e.metadata.get("cost", 0.0))

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
