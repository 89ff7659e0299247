"""The failover loop: select -> call -> record -> evaluate -> maybe fail over.

It is written once, as a generator (:meth:`Flight.plan`) that yields *effects*
(:class:`Call` a provider, :class:`Sleep` a while) and receives their
:class:`Outcome`. The sync driver performs effects with blocking calls, the async
driver awaits them; neither holds any routing logic. All state changes happen in
:class:`~mesh_core._router.Router`, under the mesh's lock, so many threads and tasks can
share a mesh.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._deadlines import adapted
from ._effects import Answer, Blocking, Call, Effect, Hedge, Hedged, Opened, Outcome, Sleep
from ._errors import (
    AllProvidersExhaustedError,
    ContextWindowExceededError,
    ErrorKind,
    NoAvailableModelError,
    ProviderError,
)
from ._events import EventType
from ._needs import estimate_usage
from ._policy import Raise, Retry
from ._pool import CapabilityPool, Model
from ._router import Router
from ._types import Attempt, CompletionRequest, CompletionResponse
from .providers._base import ProviderReply, Timeouts
from .providers._embeddings import EmbeddingReply

if TYPE_CHECKING:
    from ._embedding import EmbeddingTarget

__all__ = ["Flight"]


class Flight:
    """One request's journey through a pool. ``plan`` is the whole failover loop."""

    def __init__(
        self,
        router: Router,
        pool: CapabilityPool,
        request: CompletionRequest,
        *,
        stream: bool,
        exclude: set[str] | None = None,
        attempts: list[Attempt] | None = None,
        embedding: EmbeddingTarget | None = None,
    ) -> None:
        """``embedding``: the flight embeds the next batch of that request instead of
        completing ``request`` (which then only carries the pool, timeout and retry limit)."""
        self.router = router
        self.pool = pool
        self.request = request
        self.stream = stream
        self.attempts: list[Attempt] = list(attempts or ())
        self.initial_exclude: set[str] = set(exclude or ())
        self.span: Any = None
        self._hedge_sent: Call | None = None
        """The hedge of the call in progress, once sent (released if the caller cancels)."""
        self.embedding = embedding
        self.operation = "chat" if embedding is None else "embeddings"
        """GenAI's name of the operation, for tracing."""

    def plan(self) -> Generator[Effect, Outcome | None, Answer]:
        """Yield effects until a model answers, and return its answer."""
        self.span = self.router.tracing.start_request(self.pool.name, self.request, self.operation)
        try:
            return (yield from self._attempts())
        except BaseException as exc:
            self.end_span(error=exc)
            raise

    def end_span(self, **fields: Any) -> None:
        """End the request's span once (response, end of stream, or error)."""
        span, self.span = self.span, None
        self.router.tracing.end_request(span, **fields)

    def _attempts(self) -> Generator[Effect, Outcome | None, Answer]:
        router, pool, request = self.router, self.pool, self.request
        with router.lock:
            pool.total_requests += 1
        embedding = self.embedding
        if embedding is None:
            eligible = router.eligibility(pool, request)
        else:
            eligible = router.embedding_eligibility(pool, embedding)
        max_attempts = None if request.max_retries is None else request.max_retries + 1
        exclude: set[str] = set(self.initial_exclude)
        last_error: BaseException | None = None
        previous: Model | None = None
        waited = 0.0
        while True:
            try:
                model = yield from router.choose(
                    pool, request, exclude, eligible, len(self.attempts) + 1
                )
            except NoAvailableModelError as exc:
                if last_error is not None:
                    raise self._exhausted(last_error, exc) from last_error
                delay = router.recovery_wait(pool, exc, waited)
                if delay is None:
                    router.emitter.emit(EventType.POOL_EXHAUSTED, pool_id=pool.name)
                    raise
                waited += delay
                yield Sleep(delay)
                continue
            if embedding is not None:
                embedding.pin(router.embeddings[model.id])  # failover stays in this space
            if previous is not None and previous is not model:
                router.emitter.emit(
                    EventType.MODEL_ROTATED,
                    model_id=model.id,
                    provider_id=model.provider_id,
                    pool_id=pool.name,
                    previous=previous.id,
                    reason=type(last_error).__name__,
                )
            tries = 0
            while True:
                tries += 1
                span = router.tracing.start_attempt(
                    self.span,
                    model.id,
                    model.provider_id,
                    model.name,
                    len(self.attempts) + 1,
                    self.operation,
                )
                call = self._call(model, span)
                if self.stream and tries == 1:
                    call.hedge = self._hedge(model, exclude, eligible)
                start = time.perf_counter()
                try:
                    outcome = yield call
                except GeneratorExit as exc:
                    router.tracing.end_attempt(span, exc)
                    router.release(model)
                    if (hedge := self._hedge_sent) is not None:  # cancelled mid-race
                        router.tracing.end_attempt(hedge.span, exc)
                        router.release(hedge.model)
                    raise
                self._hedge_sent = None
                latency = time.perf_counter() - start
                assert outcome is not None
                if outcome.hedged is not None:
                    winner = self._settle_hedge(model, outcome.hedged, outcome.error, latency)
                    if winner is not None:
                        router.tracing.end_attempt(span, outcome.error)
                        return Answer(winner[0], _reply(outcome.value), winner[1])
                    exclude.add(outcome.hedged.call.model.id)
                err = outcome.error
                if err is None and embedding is not None and call.embed is not None:
                    err = embedding.problem(model, call.embed, outcome.value)
                router.tracing.end_attempt(span, err)
                if err is None:
                    self.attempts.append(Attempt(model.id, model.provider_id, "success", latency))
                    if self.stream:
                        router.first_token(model, latency)
                    return Answer(model, _reply(outcome.value), latency)
                self._note(model, err, latency)
                decision = router.failed(
                    pool, model, err, latency, tries, max_attempts=max_attempts
                )
                if isinstance(decision, Raise):
                    raise err
                if isinstance(decision, Retry):
                    router.emitter.emit(
                        EventType.RETRY_ATTEMPTED,
                        model_id=model.id,
                        provider_id=model.provider_id,
                        pool_id=pool.name,
                        delay=decision.delay,
                        attempt=tries + 1,
                    )
                    yield Sleep(decision.delay)
                    with router.lock:
                        model.in_flight += 1
                    continue
                exclude.add(model.id)
                if decision.smaller_windows_too and model.context_window:
                    exclude.update(
                        m.id
                        for m in pool.models
                        if m.context_window is not None and m.context_window <= model.context_window
                    )
                last_error, previous = err, model
                break

    def _call(self, model: Model, span: Any) -> Call:
        provider, request = self.router.providers[model.provider_id], self.request
        if self.embedding is not None:
            batch = self.embedding.batch(self.router.embeddings[model.id], provider)
            return Call(provider, model, request, self._timeouts(model), False, span, embed=batch)
        limit = model.max_output_tokens
        if request.max_tokens is None and limit and getattr(provider, "requires_max_tokens", 0):
            request = replace(request, max_tokens=limit)  # a protocol with no default length
        return Call(provider, model, request, self._timeouts(model), self.stream, span)

    def _hedge(self, model: Model, exclude: set[str], eligible: Any) -> Hedge | None:
        """A second model to ask when ``model``'s first token is late (None: no hedging)."""
        router, pool = self.router, self.pool
        after = router.hedge_after(pool, model)
        if after is None or len(pool.models) - len(exclude) < 2:
            return None

        def backup() -> Call | None:
            try:
                second = _inline(
                    router.choose(
                        pool, self.request, exclude | {model.id}, eligible, len(self.attempts) + 2
                    )
                )
            except NoAvailableModelError:
                return None
            router.emitter.emit(
                EventType.REQUEST_HEDGED,
                model_id=second.id,
                provider_id=second.provider_id,
                pool_id=pool.name,
                slow=model.id,
                after=round(after, 3),
            )
            span = router.tracing.start_attempt(
                self.span, second.id, second.provider_id, second.name, len(self.attempts) + 2
            )
            self._hedge_sent = self._call(second, span)
            return self._hedge_sent

        return Hedge(after, backup)

    def _settle_hedge(
        self, model: Model, hedged: Hedged, first_error: BaseException | None, latency: float
    ) -> tuple[Model, float] | None:
        """Record a race between ``model`` and the hedge: who answered, and how fast (None
        when both failed: the first call's error then goes on through the failover loop)."""
        router, second = self.router, hedged.call.model
        router.tracing.end_attempt(hedged.call.span, None if hedged.won else hedged.error)
        winner: tuple[Model, float] | None = None
        if hedged.won:  # the first call lost: slow, not failed (unless it did fail)
            if first_error is None:
                self.attempts.append(Attempt(model.id, model.provider_id, "slow", latency))
                router.release(model)
            else:
                self._note(model, first_error, latency)
                router.broke(self.pool, model, first_error, latency, 1)
            winner = second, hedged.latency
        else:
            if hedged.error is None:  # the first call won: the second is cancelled
                self.attempts.append(Attempt(second.id, second.provider_id, "cancelled", 0.0))
                router.release(second)
            else:
                self._note(second, hedged.error, hedged.latency)
                router.broke(self.pool, second, hedged.error, hedged.latency, 1)
            if first_error is None:
                winner = model, latency
        if winner is not None:
            self.attempts.append(Attempt(winner[0].id, winner[0].provider_id, "success", winner[1]))
            router.first_token(*winner)
        router.emitter.emit(
            EventType.HEDGE_SETTLED,
            model_id=second.id,
            provider_id=second.provider_id,
            pool_id=self.pool.name,
            slow=model.id,
            won=hedged.won,
        )
        return winner

    def _timeouts(self, model: Model) -> Timeouts:
        timeouts = self.router.timeouts[model.id]
        if self.stream and self.router.adaptive.get(model.id, True):
            timeouts = adapted(timeouts, self.router.times.get(model.id))
        cap = self.request.timeout
        if cap is None:
            return timeouts
        return Timeouts(
            *(
                min(t, cap)
                for t in (timeouts.connect, timeouts.first_token, timeouts.stall, timeouts.total)
            )
        )

    def _note(self, model: Model, err: BaseException, latency: float) -> None:
        kind = err.kind.value if isinstance(err, ProviderError) else ErrorKind.CONNECTION.value
        self.attempts.append(
            Attempt(
                model.id,
                model.provider_id,
                kind,
                latency,
                status_code=getattr(err, "status_code", None),
                error=str(err)[:200],
            )
        )

    def _exhausted(self, last_error: BaseException, none_left: NoAvailableModelError) -> Exception:
        pool = self.pool
        self.router.emitter.emit(
            EventType.POOL_EXHAUSTED, pool_id=pool.name, attempts=len(self.attempts)
        )
        if isinstance(last_error, ContextWindowExceededError):
            return last_error
        tried = ", ".join(f"{a.model_id} ({a.outcome})" for a in self.attempts)
        ruled_out = none_left.details.get("not_capable") or {}
        not_capable = "".join(f"; not capable: {m} ({why})" for m, why in ruled_out.items())
        return AllProvidersExhaustedError(
            f"every model of pool {pool.name!r} that can serve this request failed: {tried}"
            f"{not_capable}; last error: {last_error}"
            if ruled_out
            else f"every model of pool {pool.name!r} failed: {tried}; last error: {last_error}",
            pool_name=pool.name,
            attempts=list(self.attempts),
            last_error=last_error,
        )

    def response(self, answer: Answer) -> CompletionResponse:
        """Record the success of a non-streaming answer and build the response."""
        model, reply, latency = answer.model, answer.reply, answer.latency
        assert isinstance(reply, ProviderReply)
        parsed = reply.response
        usage = parsed.usage
        if usage is None:  # not reported, or not believable: estimated, never zero
            text = (parsed.content or "") + "".join(t.arguments for t in parsed.tool_calls)
            usage = estimate_usage(self.request, text)
        usage, cost = self.router.succeeded(self.pool, model, usage, latency, reply.rate_limits)
        response = CompletionResponse(
            id=parsed.id,
            model=model.id,
            provider=model.provider_id,
            content=parsed.content,
            tool_calls=parsed.tool_calls,
            finish_reason=parsed.finish_reason,
            usage=usage,
            pool=self.pool.name,
            provider_model=parsed.provider_model,
            attempts=list(self.attempts),
            cost=cost,
            created=parsed.created,
        )
        self.end_span(model=model.id, usage=usage, finish_reason=parsed.finish_reason)
        return response


def _reply(value: object) -> ProviderReply | Opened | EmbeddingReply:
    assert isinstance(value, (ProviderReply, Opened, EmbeddingReply))
    return value


def _inline(plan: Generator[Effect, Outcome | None, Model]) -> Model:
    """Run a selection, whose only effects are blocking store reads, on this thread."""
    outcome: Outcome | None = None
    while True:
        try:
            effect = plan.send(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        assert isinstance(effect, Blocking)
        outcome = Outcome(value=effect.fn())
