"""Prometheus metrics through ``prometheus-client``.

Registered once per process in prometheus-client's default registry (several meshes
add to the same series), active when the package is installed and
``observability.metrics`` is not ``off``:

* ``modelmesh_attempts_total{pool, model, outcome}``: every call, ``success`` or the failure kind
* ``modelmesh_request_latency_seconds{pool, model}``: latency of successful calls (histogram)
* ``modelmesh_tokens_total{pool, model}`` and ``modelmesh_cost_usd_total{pool, model}``
* ``modelmesh_deactivations_total{model, reason}`` and ``modelmesh_recoveries_total{model}``
* ``modelmesh_store_errors_total{backend, operation}``: failed state-store operations (the
  mesh keeps answering from memory meanwhile)

The request path never touches prometheus-client objects: a call adds to plain
counters under one lock, and a collector turns them into metric families when
Prometheus scrapes (the way prometheus-client's own process collector exposes numbers
kept elsewhere). Updating four labelled prometheus-client metrics per call cost more
than choosing the model.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from ._events import EventEmitter, EventType

__all__ = ["Metrics", "attach_metrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""prometheus-client's default latency buckets (seconds); +Inf is implied."""


class _Series:
    """The success counters of one (pool, model)."""

    __slots__ = ("buckets", "cost", "count", "latency_sum", "tokens")

    def __init__(self) -> None:
        self.count = 0
        self.buckets = [0] * (len(_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.tokens = 0
        self.cost = 0.0


class Metrics:
    """The process's counters, and the collector that exposes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._success: dict[tuple[str, str], _Series] = {}
        self._failures: dict[tuple[str, str, str], int] = {}
        self._deactivations: dict[tuple[str, str], int] = {}
        self._recoveries: dict[str, int] = {}
        self._store_errors: dict[tuple[str, str], int] = {}

    # --- recording (the request path) -----------------------------------------------
    def success(self, pool: str, model: str, latency: float, tokens: int, cost: float) -> None:
        with self._lock:
            series = self._success.get((pool, model))
            if series is None:
                series = self._success[pool, model] = _Series()
            series.count += 1
            series.buckets[bisect_left(_BUCKETS, latency)] += 1
            series.latency_sum += latency
            series.tokens += tokens
            series.cost += cost

    def failure(self, pool: str, model: str, kind: str) -> None:
        _bump(self._lock, self._failures, (pool, model, kind))

    def deactivation(self, model: str, reason: str) -> None:
        _bump(self._lock, self._deactivations, (model, reason))

    def recovery(self, model: str) -> None:
        _bump(self._lock, self._recoveries, model)

    def store_error(self, backend: str, operation: str) -> None:
        _bump(self._lock, self._store_errors, (backend, operation))

    # --- the collector protocol (scrape time) ------------------------------------------
    def describe(self) -> list[Any]:
        return list(self._families())

    def collect(self) -> Iterator[Any]:
        with self._lock:
            success = {key: _copy(s) for key, s in self._success.items()}
            failures = dict(self._failures)
            deactivations = dict(self._deactivations)
            recoveries = dict(self._recoveries)
            store_errors = dict(self._store_errors)
        from prometheus_client.utils import floatToGoString

        attempts, latency, tokens, cost, deact, recov, store = self._families()
        for (pool, model), s in success.items():
            attempts.add_metric([pool, model, "success"], s.count)
            cumulative, running = [], 0
            for bound, n in zip((*_BUCKETS, float("inf")), s.buckets):
                running += n
                cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
            latency.add_metric([pool, model], cumulative, s.latency_sum)
            tokens.add_metric([pool, model], s.tokens)
            cost.add_metric([pool, model], s.cost)
        for labels, n in failures.items():
            attempts.add_metric(list(labels), n)
        for reason_labels, n in deactivations.items():
            deact.add_metric(list(reason_labels), n)
        for model, n in recoveries.items():
            recov.add_metric([model], n)
        for store_labels, n in store_errors.items():
            store.add_metric(list(store_labels), n)
        yield from (attempts, latency, tokens, cost, deact, recov, store)

    @staticmethod
    def _families() -> tuple[Any, ...]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        return (
            CounterMetricFamily(
                "modelmesh_attempts", "Calls made to models", labels=["pool", "model", "outcome"]
            ),
            HistogramMetricFamily(
                "modelmesh_request_latency_seconds",
                "Latency of successful calls",
                labels=["pool", "model"],
            ),
            CounterMetricFamily("modelmesh_tokens", "Tokens used", labels=["pool", "model"]),
            CounterMetricFamily("modelmesh_cost_usd", "Spend in USD", labels=["pool", "model"]),
            CounterMetricFamily(
                "modelmesh_deactivations", "Models moved to standby", labels=["model", "reason"]
            ),
            CounterMetricFamily(
                "modelmesh_recoveries", "Models back in rotation", labels=["model"]
            ),
            CounterMetricFamily(
                "modelmesh_store_errors",
                "Failed state-store operations",
                labels=["backend", "operation"],
            ),
        )


def _bump(lock: threading.Lock, counts: dict[Any, int], key: Any) -> None:
    with lock:
        counts[key] = counts.get(key, 0) + 1


def _copy(series: _Series) -> _Series:
    copy = _Series()
    copy.count, copy.buckets = series.count, list(series.buckets)
    copy.latency_sum, copy.tokens, copy.cost = series.latency_sum, series.tokens, series.cost
    return copy


_LOCK = threading.Lock()
_METRICS: Metrics | None = None


def _process_metrics() -> Metrics:
    """The process's one Metrics, registered in prometheus-client's default registry."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            from prometheus_client import REGISTRY

            metrics = Metrics()
            REGISTRY.register(metrics)
            _METRICS = metrics
        return _METRICS


def attach_metrics(emitter: EventEmitter, mode: str = "auto") -> Metrics | None:
    """The metrics a mesh records into (None: metrics are off).

    Calls are recorded by the request path directly; the rare model transitions arrive
    as events on ``emitter``.
    """
    if mode == "off":
        return None
    try:
        metrics = _process_metrics()
    except ImportError:
        if mode == "on":  # asked for explicitly: say what to install, at construction
            raise ImportError(
                "observability.metrics is 'on' but prometheus-client is not installed: "
                'pip install "modelmesh-lite[prometheus]" (or set observability.metrics '
                "to auto or off)",
                name="prometheus_client",
            ) from None
        return None
    emitter.on(
        EventType.MODEL_DEACTIVATED,
        lambda e: metrics.deactivation(e.model_id or "", e.metadata.get("reason") or ""),
    )
    emitter.on(EventType.MODEL_REACTIVATED, lambda e: metrics.recovery(e.model_id or ""))
    return metrics
