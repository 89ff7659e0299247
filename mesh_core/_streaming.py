"""A committed stream: relaying chunks after the first token, and accounting for them.

Failover is transparent until the first token; after it the stream belongs to
one model. :class:`StreamRelay` stamps each chunk with the model that answers,
keeps the partial text, and at the end either records a success and yields a
final chunk with usage, finish reason and attempts, or records the failure and
raises :class:`~mesh_core._errors.StreamInterruptedError`. A stream that stops
without a finish reason is never passed off as complete.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from dataclasses import replace

from ._effects import Answer, Effect, Opened, Outcome
from ._errors import (
    BadRequestError,
    ErrorKind,
    ProviderError,
    RoutingError,
    StreamInterruptedError,
    provider_error,
)
from ._events import EventType
from ._failover import Flight
from ._needs import estimate_usage
from ._types import Attempt, CompletionChunk, Usage
from .providers._base import AsyncProviderStream, ProviderStream

__all__ = ["AsyncChunkStream", "ChunkStream", "StreamRecovery", "StreamRelay"]


class ChunkStream(Iterator[CompletionChunk]):
    """What :meth:`Mesh.stream` returns: an iterator of chunks that is also a context
    manager. Nothing is opened before the first ``next()``; ``close()`` (or leaving the
    ``with`` block) ends a stream early and releases its model and connection."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: Generator[CompletionChunk, None, None]) -> None:
        self._chunks = chunks

    def __next__(self) -> CompletionChunk:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncChunkStream(AsyncIterator[CompletionChunk]):
    """What :meth:`Mesh.astream` returns: the async twin of :class:`ChunkStream`."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: AsyncGenerator[CompletionChunk, None]) -> None:
        self._chunks = chunks

    async def __anext__(self) -> CompletionChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class StreamRelay:
    def __init__(self, flight: Flight, answer: Answer) -> None:
        assert isinstance(answer.reply, Opened)
        self.flight = flight
        self.model = answer.model
        self.stream = answer.reply.stream
        self.head = answer.reply.head
        self._start = self._last = time.perf_counter()
        self._longest_gap = 0.0
        self._text: list[str] = []
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._settled = False

    # --- the two drivers ---------------------------------------------------------
    def __iter__(self) -> Iterator[CompletionChunk]:
        stream = self.stream
        assert isinstance(stream, ProviderStream)
        try:
            for chunk in self.head:
                if (out := self._accept(chunk)) is not None:
                    yield out
            for chunk in stream:
                if (out := self._accept(chunk)) is not None:
                    yield out
            yield self._finished()
        except StreamInterruptedError:
            raise
        except ProviderError as err:
            raise self._interrupted(err) from None
        finally:
            self._abandon()
            stream.close()

    async def __aiter__(self) -> AsyncGenerator[CompletionChunk, None]:
        stream = self.stream
        assert isinstance(stream, AsyncProviderStream)
        try:
            for chunk in self.head:
                if (out := self._accept(chunk)) is not None:
                    yield out
            async for chunk in stream:
                if (out := self._accept(chunk)) is not None:
                    yield out
            yield self._finished()
        except StreamInterruptedError:
            raise
        except ProviderError as err:
            raise self._interrupted(err) from None
        finally:
            self._abandon()
            await stream.aclose()

    # --- accounting ----------------------------------------------------------------
    def _accept(self, chunk: CompletionChunk) -> CompletionChunk | None:
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if not chunk.has_token:
            return None
        now = time.perf_counter()
        self._longest_gap = max(self._longest_gap, now - self._last)
        self._last = now
        if chunk.content:
            self._text.append(chunk.content)
        chunk.finish_reason = None
        chunk.usage = None
        chunk.model = self.model.id
        chunk.provider = self.model.provider_id
        chunk.pool = self.flight.pool.name
        return chunk

    def _finished(self) -> CompletionChunk:
        if self._finish is None:
            raise self._interrupted(
                provider_error(ErrorKind.CONNECTION, "stream ended without a finish reason")
            )
        latency = time.perf_counter() - self._start
        usage = self._usage or self._estimate()
        self._settled = True
        router = self.flight.router
        usage, cost = router.succeeded(
            self.flight.pool, self.model, usage, latency, self.stream.rate_limits
        )
        router.stream_finished(self.model, self._longest_gap)
        self.flight.end_span(model=self.model.id, usage=usage, finish_reason=self._finish)
        return CompletionChunk(
            finish_reason=self._finish,
            usage=usage,
            model=self.model.id,
            provider=self.model.provider_id,
            pool=self.flight.pool.name,
            attempts=list(self.flight.attempts),
            cost=cost,
        )

    def _estimate(self) -> Usage:
        return estimate_usage(self.flight.request, "".join(self._text))

    def _interrupted(self, err: ProviderError) -> StreamInterruptedError:
        partial = "".join(self._text)
        flight, model = self.flight, self.model
        if not self._settled:
            self._settled = True
            latency = time.perf_counter() - self._start
            # Past the first token there is nothing to decide: record the break, no retry.
            flight.router.broke(flight.pool, model, err, latency, len(flight.attempts))
        flight.end_span(error=err)
        flight.router.emitter.emit(
            EventType.STREAM_INTERRUPTED,
            model_id=model.id,
            provider_id=model.provider_id,
            pool_id=flight.pool.name,
            kind=err.kind.value,
            partial_chars=len(partial),
        )
        return StreamInterruptedError(
            f"stream from {model.id} broke after {len(partial)} characters: {err}",
            partial_text=partial,
            provider_id=model.provider_id,
            model_id=model.id,
            kind=err.kind,
            status_code=err.status_code,
        )

    def _abandon(self) -> None:
        """The consumer stopped early (or the stream ended): release the model once."""
        if not self._settled:
            self._settled = True
            self.flight.router.release(self.model)
        self.flight.end_span(model=self.model.id)  # the consumer stopped early


class StreamRecovery:
    """What follows a stream that broke after its first token (``stream_recovery``), sans I/O.

    ``continue`` (default): the next model is asked to go on from the text delivered so
    far, sent as an assistant prefill, and the first chunk it sends carries
    ``continued_from``. ``raise``: the StreamInterruptedError goes to the caller. When no
    model is left, the original error is raised, its ``partial_text`` being everything the
    consumer received.

    An answer that cannot be continued (a model that rejects prefill with a 400, a break
    inside a tool call) is started over only for a consumer that can discard what it
    received (``restart=True``; the first chunk then carries ``restarted``). By default a
    start-over after the first chunk raises the StreamInterruptedError instead, so the
    chunks yielded always join into one coherent answer, continued by prefill or never
    broken.
    """

    def __init__(self, flight: Flight, *, restart: bool = False) -> None:
        self.flight = flight
        self.original = flight.request
        """The caller's request, never edited: continuations and restarts start from it."""
        self.mode = flight.router.settings[flight.pool.name].stream_recovery
        self.may_restart = restart
        self.text: list[str] = []
        self.tool_calls = False
        self.exclude: set[str] = set()
        self.pieces = 0
        """Content chunks delivered since the answer (re)started: a stream sends about one
        token per chunk, so this is what a continuation takes off ``max_tokens``."""
        self.received: list[str] = []
        """Every chunk's text the consumer got, across restarts (``partial_text``)."""
        self.broken: StreamInterruptedError | None = None
        self.flags: dict[str, object] = {}
        """What the first chunk after a break carries (``continued_from`` / ``restarted``)."""

    def delivered(self, chunk: CompletionChunk) -> None:
        """``chunk`` goes to the consumer: flag it if it is the first after a break, and
        count it."""
        if self.flags:
            for key, value in self.flags.items():
                setattr(chunk, key, value)
            self.flags = {}
        if chunk.content:
            self.pieces += 1
        self.text.append(chunk.content)
        self.received.append(chunk.content)
        self.tool_calls = self.tool_calls or bool(chunk.tool_call_deltas)

    def give_up(self, err: StreamInterruptedError) -> StreamInterruptedError:
        """``err``, telling what the consumer received in all (not only from the last model)."""
        err.partial_text = "".join(self.received)
        return err

    def reopen(
        self, err: StreamInterruptedError
    ) -> Generator[Effect, Outcome | None, Answer | None]:
        """The plan that opens the answer's next stream after ``err``: continued by prefill,
        or started over when the next model takes no prefill (and restarts are allowed).
        None: the answer already used the caller's ``max_tokens`` (see :meth:`ended`). Raises
        ``err`` (with everything received as its ``partial_text``) when nothing can go on.
        One plan, so the sync and async streams drive it the same way."""
        nxt, self.flags = self.after_break(err)
        if nxt is None:
            return None
        try:
            return (yield from nxt.plan())
        except BadRequestError:  # this model takes no prefill: start over
            nxt, self.flags = self.restart()
            try:
                return (yield from nxt.plan())
            except RoutingError:
                raise self.give_up(err) from None
        except RoutingError:
            raise self.give_up(err) from None

    def after_break(self, err: StreamInterruptedError) -> tuple[Flight | None, dict[str, object]]:
        """The flight to run next and the flags for its first chunk (raises ``err`` in
        ``raise`` mode). No flight: the answer already used the caller's ``max_tokens``,
        so it ends here (``finish_reason: length``) rather than growing past it."""
        if self.mode != "continue":
            raise self.give_up(err)
        self.broken = err
        old = self.flight
        self.exclude.add(err.model_id or "")
        old.attempts.append(
            Attempt(
                err.model_id or "",
                err.provider_id or "",
                "stream_interrupted",
                0.0,
                error=str(err)[:200],
            )
        )
        if self.tool_calls or not "".join(self.text):
            return self.restart()
        request = self.original
        limit = request.max_tokens
        if limit is not None and self.pieces >= limit:
            return None, {"finish_reason": "length"}
        prefill = [*request.messages, {"role": "assistant", "content": "".join(self.text)}]
        left = None if limit is None else limit - self.pieces
        self.flight = Flight(
            old.router,
            old.pool,
            replace(request, messages=prefill, max_tokens=left),
            stream=True,
            exclude=self.exclude,
            attempts=old.attempts,
        )
        return self.flight, {"continued_from": err.model_id}

    def ended(self) -> CompletionChunk:
        """The last chunk of an answer that stopped at ``max_tokens`` as its stream broke."""
        flight, broken = self.flight, self.broken
        return CompletionChunk(
            finish_reason=str(self.flags.get("finish_reason") or "length"),
            model=broken.model_id if broken else None,
            provider=broken.provider_id if broken else None,
            pool=flight.pool.name,
            attempts=list(flight.attempts),
        )

    def restart(self) -> tuple[Flight, dict[str, object]]:
        """Start the answer over on another model (without a prefill); with ``restart=False``
        and chunks already delivered, raise the break instead."""
        if not self.may_restart and self.received and self.broken is not None:
            raise self.give_up(self.broken)
        old = self.flight
        self.text, self.tool_calls, self.pieces = [], False, 0
        self.flight = Flight(
            old.router,
            old.pool,
            self.original,
            stream=True,
            exclude=self.exclude,
            attempts=old.attempts,
        )
        return self.flight, {"restarted": True}
