"""OpenTelemetry spans, following the GenAI semantic conventions.

One span per request (``chat {pool}``) and a child span per attempt
(``chat {model}``), both of kind CLIENT, carrying ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` /
``output_tokens`` and ``error.type``, plus the mesh's own ``modelmesh.*``
attributes (pool, attempt number, outcome). Active when ``opentelemetry-api`` is
installed, a tracer provider is configured and ``observability.tracing`` is not
``off``; otherwise every hook is a ``None`` check. A provider set up after the mesh is
picked up within a second: OpenTelemetry sets its global provider once and for all, so
a configured one is remembered, while its absence is looked up again at most once a
second (the lookup reads the environment, which costs more than the rest of a span hook).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ._types import CompletionRequest, Usage

__all__ = ["Tracing", "current"]


_NO_SPAN = contextlib.nullcontext()


def current(span: Any) -> contextlib.AbstractContextManager[Any]:
    """Make ``span`` the current span for a block (so spans made inside it, by an httpx
    instrumentation for instance, become its children); without a span, nothing."""
    if span is None:
        return _NO_SPAN
    from opentelemetry import trace

    # The attempt's outcome and error are set by end_attempt, not here.
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


class Tracing:
    def __init__(self, mode: str = "auto") -> None:
        self._tracer: Any = None
        if mode == "off":
            return
        try:
            from opentelemetry import trace
        except ImportError:
            if mode == "on":  # asked for explicitly: say what to install, at construction
                raise ImportError(
                    "observability.tracing is 'on' but opentelemetry-api is not installed: "
                    'pip install "modelmesh-lite[otel]" (or set observability.tracing '
                    "to auto or off)",
                    name="opentelemetry",
                ) from None
            return
        self._trace = trace
        self._tracer = trace.get_tracer("modelmesh")
        self._always = mode == "on"
        from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

        self._noop_providers = (NoOpTracerProvider, ProxyTracerProvider)
        self._configured = False
        self._recheck_at = 0.0

    def _provider_configured(self) -> bool:
        if self._configured:
            return True
        now = time.monotonic()
        if now < self._recheck_at:
            return False
        self._recheck_at = now + 1.0
        provider = self._trace.get_tracer_provider()
        self._configured = not isinstance(provider, self._noop_providers)
        return self._configured

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start_request(self, pool: str, request: CompletionRequest, operation: str = "chat") -> Any:
        """A request's span; ``operation`` is GenAI's ``chat`` or ``embeddings``."""
        if self._tracer is None:
            return None
        if not self._always and not self._provider_configured():
            return None  # no SDK configured (yet): a span would record nothing
        attrs = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": pool,
            "modelmesh.pool": pool,
            "modelmesh.stream": request.stream,
        }
        if request.temperature is not None:
            attrs["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = request.max_tokens
        return self._tracer.start_span(
            f"{operation} {pool}", kind=self._trace.SpanKind.CLIENT, attributes=attrs
        )

    def start_attempt(
        self,
        parent: Any,
        model_id: str,
        provider_id: str,
        model_name: str,
        attempt: int,
        operation: str = "chat",
    ) -> Any:
        if parent is None:
            return None
        context = self._trace.set_span_in_context(parent)
        return self._tracer.start_span(
            f"{operation} {model_name}",
            context=context,
            kind=self._trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": provider_id,
                "gen_ai.request.model": model_name,
                "modelmesh.model": model_id,
                "modelmesh.attempt": attempt,
            },
        )

    def end_attempt(self, span: Any, error: BaseException | None) -> None:
        if span is None:
            return
        if error is None:
            span.set_attribute("modelmesh.outcome", "success")
        else:
            kind = getattr(getattr(error, "kind", None), "value", type(error).__name__)
            span.set_attribute("modelmesh.outcome", kind)
            span.set_attribute("error.type", kind)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)[:200]))
        span.end()

    def end_request(
        self,
        span: Any,
        *,
        model: str | None = None,
        usage: Usage | None = None,
        finish_reason: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        if span is None:
            return
        if model is not None:
            span.set_attribute("gen_ai.response.model", model)
        if finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if error is not None:
            kind = getattr(getattr(error, "kind", None), "value", type(error).__name__)
            span.set_attribute("error.type", kind)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)[:200]))
        span.end()
