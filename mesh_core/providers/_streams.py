"""Streaming answers: reading, decoding and timing an event stream (sync over httpx, async
over the transport's :class:`~._h1pool.Exchange`).

Part of the transport, shared by every dialect (they all stream server-sent events). The
body's content-encoding is decoded first (bounded by ``max_response_bytes``), then its SSE
framing (lines bounded by ``max_sse_line_bytes``), then the dialect's
:class:`~._dialect.StreamParser` turns each event into chunks; the first-token, stall and
total deadlines hold each read (the
capped timeout of a blocking read for sync streams, a :class:`~.watchdog.ReadDeadline` for
async ones: see :mod:`.watchdog`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import Any, cast

import httpx

from .._errors import ErrorKind, ProviderError, provider_error
from .._types import CompletionChunk
from ._base import AsyncProviderStream, Limits, ProviderStream, StreamTimer, Timeouts
from ._decoding import BodyDecoder
from ._dialect import StreamParser
from ._reply import RateLimitInfo
from ._shards import Lease
from ._sse import SSEDecoder
from ._watchdog import IO_DEADLINE, Deadline, ReadDeadline

__all__ = ["AsyncStream", "SyncStream", "map_transport_error"]

_DRAIN_GRACE = 0.1
"""Seconds a stream waits after its end marker (``[DONE]``, ``message_stop``) for the body's
end (which keeps the connection)."""
_NOT_DONE = float("inf")


def map_transport_error(exc: httpx.HTTPError, timeouts: Timeouts) -> ProviderError:
    """An httpx exception as a classified provider error."""
    if isinstance(exc, httpx.PoolTimeout):  # our own queue was full: not the provider's fault
        return provider_error(
            ErrorKind.TIMEOUT, "no free connection in the local pool", details={"local": True}
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return provider_error(ErrorKind.TIMEOUT, f"connect timeout after {timeouts.connect:g}s")
    if isinstance(exc, httpx.TimeoutException):
        return provider_error(ErrorKind.TIMEOUT, f"timed out: {type(exc).__name__}")
    return provider_error(ErrorKind.CONNECTION, f"connection error: {type(exc).__name__}: {exc}")


class _Decoding:
    """What both stream classes decide about the bytes they read, sans I/O: the body's
    content-encoding is decoded (a gzip-encoded event stream, bounded by
    ``max_response_bytes``), then its events (lines bounded by ``max_sse_line_bytes``), then
    what they say (the dialect's parser)."""

    done: bool = False
    _timer: StreamTimer
    _drain_until: float = _NOT_DONE

    def __init__(
        self,
        resp: Any,
        timer: StreamTimer,
        lease: Lease[Any],
        limits: Limits,
        redact: Callable[[ProviderError], ProviderError],
        parser: StreamParser,
        rate_limits: RateLimitInfo | None,
    ) -> None:
        self._redact = redact
        self._resp = resp
        self._timer = timer
        self._lease = lease
        self._body = BodyDecoder(resp.headers.get("content-encoding"), limits.max_response_bytes)
        self._sse = SSEDecoder(limits.max_sse_line_bytes)
        self._parser = parser
        self.rate_limits = rate_limits
        self._chunks: Any = self._run()  # type: ignore[attr-defined]  # each subclass's driver

    def _deadline(self, now: float) -> float:
        """Until when the next read may wait: the stream's timeouts, or after ``[DONE]`` a
        short grace for the end of the body, counted from ``[DONE]`` (a server that holds
        the body open, or trickles past its end, costs its connection, not the caller's
        time)."""
        if self.done:
            if self._drain_until is _NOT_DONE:
                self._drain_until = now + _DRAIN_GRACE
            return self._drain_until
        return self._timer.deadline(now)

    def _decode(self, raw: bytes | None) -> Iterator[CompletionChunk]:
        """The chunks in ``raw`` (None: the body ended). After the end marker the rest of the
        body is still read (and ignored): a response closed before its end takes its
        connection with it, so every stream would cost a new connection, and a TLS handshake."""
        if self.done:
            return
        sse, parser = self._sse, self._parser
        if raw is None:
            tail = self._body.flush()
            events = itertools.chain(sse.feed(tail), sse.close()) if tail else sse.close()
        else:
            events = sse.feed(self._body.feed(raw))
        for data in events:
            for chunk in parser.feed(data):
                self._timer.saw(chunk)
                yield chunk
            if parser.done:
                self.done = True
                return


class SyncStream(_Decoding, ProviderStream):
    """A sync stream: each read is a blocking read whose timeout is capped, through
    :data:`~.watchdog.IO_DEADLINE`, by the stream's deadline (the kernel holds it: a read
    returns what arrived in time, or times out having received nothing)."""

    def __next__(self) -> CompletionChunk:
        chunk: CompletionChunk = next(self._chunks)
        return chunk

    def _run(self) -> Generator[CompletionChunk, None, None]:
        timer, resp = self._timer, self._resp
        raw_iter = cast("Generator[bytes, None, None]", resp.iter_raw())
        io = Deadline(at=0.0)
        try:
            while True:
                at = self._deadline(time.monotonic())
                io.rearm(at)
                # Set around the read only: the consumer's code between two chunks (and its
                # context, which may differ from one next() to the other) keeps its own.
                token = IO_DEADLINE.set(io)
                try:
                    raw = next(raw_iter, None)
                except httpx.HTTPError as exc:
                    if self.done:  # the answer was complete; only the connection is lost
                        return
                    if isinstance(exc, httpx.ReadTimeout) and io.passed():
                        raise timer.expired(at) from None
                    raise map_transport_error(exc, timer.timeouts) from None
                finally:
                    IO_DEADLINE.reset(token)
                yield from self._decode(raw)
                if raw is None:
                    return
        except ProviderError as err:
            raise self._redact(err) from None
        finally:
            raw_iter.close()
            resp.close()
            self._lease.release()

    def close(self) -> None:
        self._chunks.close()
        self._resp.close()
        self._lease.release()


class AsyncStream(_Decoding, AsyncProviderStream):
    """An async stream over an :class:`~._h1pool.Exchange`: each read waits under a
    :class:`~.watchdog.ReadDeadline` (an ``asyncio.timeout_at`` that lets bytes which
    arrived in time through); the transport's failures are already classified."""

    async def __anext__(self) -> CompletionChunk:
        chunk: CompletionChunk = await self._chunks.__anext__()
        return chunk

    async def _run(self) -> AsyncGenerator[CompletionChunk, None]:
        timer, exchange = self._timer, self._resp
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = time.monotonic()
                at = self._deadline(now)
                try:
                    with ReadDeadline(loop, loop.time() + (at - now)):
                        raw = await exchange.read()
                except (TimeoutError, ProviderError) as exc:
                    if self.done:  # the answer was complete; only the connection is lost
                        return
                    if isinstance(exc, TimeoutError):
                        raise timer.expired(at) from None
                    raise
                for chunk in self._decode(raw):
                    yield chunk
                if raw is None:
                    return
        except ProviderError as err:
            raise self._redact(err) from None
        finally:
            # Given back here, not left to the garbage collector: a suspended async
            # generator is finalised by a task the event loop schedules later, outliving
            # the request. An exchange not read to its end closes its connection.
            await exchange.aclose()
            self._lease.release()

    async def aclose(self) -> None:
        """Close the stream; from another task while a read waits too (the read then fails
        with a connection error, and the stream's driver gives everything back)."""
        if not self._chunks.ag_running:  # else aclose() would raise RuntimeError
            await self._chunks.aclose()
        await self._resp.aclose()
        self._lease.release()
