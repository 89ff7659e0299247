"""One HTTP/1.1 connection of the async transport: an ``asyncio.Protocol`` on httptools.

Part of the transport (:mod:`._transport`, :mod:`._h1pool`). The reply is parsed by
llhttp (``httptools``, the parser uvicorn uses) as the bytes arrive, in the event loop's
callbacks; the task waiting on the reply is woken once per network read. Nothing else
runs per request: no per-read coroutine chains, no per-request objects beyond the reply's
own, and the request's head (everything but its length) is built once per URL. See
BENCHMARKS.md ("Async HTTP stack") for what that buys against httpcore and aiohttp.

Only what the transport needs is here: one request at a time per connection, a reply
framed by ``content-length``, chunked or by the connection's end, interim ``1xx`` replies
skipped, a bounded head (and trailers), body bytes handed over raw (the caller decodes and
caps them: :mod:`._decoding`), reading paused while a slow consumer has too much buffered,
and every failure a classified :class:`~mesh_core._errors.ProviderError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import httptools

from .._errors import ErrorKind, ProviderError, provider_error

__all__ = ["Connection", "Headers", "connection_error"]

MAX_HEAD_BYTES = 64 << 10
"""A reply's status line and headers, at most (an endless head is a protocol error)."""
_HIGH_WATER = 1 << 20
"""Body bytes buffered before the socket stops being read (until the consumer catches up)."""


def connection_error(reason: str) -> ProviderError:
    """A failure of the connection (as httpx's errors are classified: a connection error)."""
    return provider_error(ErrorKind.CONNECTION, f"connection error: {reason}")


class Headers(Mapping[str, str]):
    """A reply's headers: case-insensitive, repeated ones joined by ``", "`` (as httpx)."""

    __slots__ = ("_items",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        items: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            items[key] = f"{items[key]}, {text}" if key in items else text
        self._items = items

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({sorted(self._items)})"  # names only: values may be sensitive


class Connection(asyncio.Protocol):
    """One kept-alive connection, serving one exchange at a time (see :mod:`._h1pool`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser: Any = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._tunnel: bytearray | None = None
        self.closed = False
        self.busy = False
        self.idle_since = 0.0
        self._error: ProviderError | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._reset()

    def _reset(self) -> None:
        self.status_code = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self._keep = True
        self._unsent = False  # the request's end still waits to go out: never reused
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._head_bytes = 0
        self._received = 0  # body bytes parsed (to tell framing bytes from the body's)
        self._framing = 0  # bytes of the reads since the head that brought no body byte

    # --- the pool's view ----------------------------------------------------------------
    def is_idle(self) -> bool:
        return not self.busy and not self.closed

    def is_closed(self) -> bool:
        return self.closed

    def stale(self) -> bool:
        """Whether an idle connection's socket has something to read: the server's close
        (or bytes nobody asked for), there before the event loop has seen it. A request
        sent into it would be lost to a close that came first (httpcore checks the same
        before reusing a connection); a poll costs about a microsecond."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        except (OSError, ValueError):  # closed meanwhile
            return True

    def reusable(self) -> bool:
        """Whether the last reply was read whole on a connection the server keeps open."""
        return (
            not self.closed
            and self._error is None
            and self.complete
            and self._keep
            and not self._unsent
        )

    def begin(self) -> None:
        """Ready for a new exchange (a fresh connection, or a kept-alive one)."""
        self._reset()
        self.busy = True
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Close at once (no TLS close_notify: the replies are self-delimiting). An exchange
        in progress fails: our own close ends no body, not even one framed by the close."""
        if not self.complete and self._error is None:
            self._error = connection_error("the connection was closed locally")
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()  # a read waiting in another task (a stream closed under it) ends now

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # not TCP
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel += data
            if len(self._tunnel) > MAX_HEAD_BYTES:
                self._fail(connection_error("the proxy's reply to CONNECT is too long"))
            self._wake()
            return
        if not self.busy or self.complete:
            # Bytes nobody asked for: the connection can no longer be trusted.
            self._fail(connection_error("unexpected data from the server"))
            return
        before, received = self.head_done, self._received
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, ProviderError) else None
            self._fail(cause or connection_error(f"RemoteProtocolError: {exc}"))
            return
        except httptools.HttpParserUpgrade:  # not an HttpParserError: a 101 reply
            self._fail(connection_error("RemoteProtocolError: the server switched protocols"))
            return
        if not before and not self.head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(connection_error("RemoteProtocolError: the reply's head is too long"))
                return
        elif before and not self.complete:
            # Trailers and chunk extensions are not body, so no size cap counts them: reads
            # that bring no body byte are bounded like a head. (A read with body bytes is
            # not counted: many small chunks are mostly framing, and a read is bounded.)
            self._framing = 0 if self._received > received else self._framing + len(data)
            if self._framing > MAX_HEAD_BYTES:
                self._fail(connection_error("RemoteProtocolError: the reply's framing is too long"))
                return
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.complete and self._error is None:
            if exc is not None:  # a reset ends no body, not even one framed by the close
                self._error = connection_error(f"ReadError: {type(exc).__name__}: {exc}")
            elif self.head_done and self._until_close():
                self.complete, self._keep = True, False  # a body framed by the connection's end
            elif self.head_done:
                self._error = connection_error(
                    "RemoteProtocolError: peer closed connection without sending complete "
                    "message body"
                )
            else:
                self._error = connection_error(
                    "RemoteProtocolError: Server disconnected without sending a response."
                )
        self._wake()
        self._drained()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._drained()

    def _drained(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self.status_code = status
        if status >= 200:
            self.head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        self._received += len(body)

    def on_message_begin(self) -> None:
        if self.complete:  # a second reply to one request
            raise connection_error("RemoteProtocolError: more than one reply to a request")

    def on_message_complete(self) -> None:
        if not self.head_done:  # an interim reply (100 Continue): the real one follows
            self.status_code, self._raw_headers, self._head_bytes = 0, [], 0
            return
        self.complete = True
        self._keep = self._parser.should_keep_alive()
        self._drained()  # a reply before the request's end (a 413): it is the answer

    # --- the exchange's side ----------------------------------------------------------------
    def _until_close(self) -> bool:
        """Whether the body is framed by the connection's end: no length, and not chunked
        (``transfer-encoding: identity`` included, as llhttp reads it)."""
        for name, value in self._raw_headers:
            name = name.lower()
            if name == b"content-length":
                return False
            if name == b"transfer-encoding" and value.lower().rstrip().endswith(b"chunked"):
                return False
        return True

    def _fail(self, error: ProviderError) -> None:
        if self._error is None:
            self._error = error
        self.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def write(self, data: bytes, timeout: float) -> None:
        """Send ``data``; waits (up to ``timeout``) only while the socket's buffer is full,
        and not once the whole reply is in (a server may answer before reading all of a
        request, as with a 413): the connection then goes when its exchange ends, since
        the rest of the request would precede the next one."""
        if self.closed or self.transport is None:
            raise self._error or connection_error("WriteError: the connection is closed")
        self.transport.write(data)
        if self._writing_paused and not self.closed:
            self._unsent = True
            if self.complete:  # answered already: the rest of the request goes, or not
                return
            drain = self._drain = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await drain
            except TimeoutError:
                raise provider_error(ErrorKind.TIMEOUT, "timed out: WriteTimeout") from None
            self._unsent = self._writing_paused
        if self._error is not None and not self.complete:
            raise self._error

    async def receive_head(self) -> Headers:
        """Wait for the reply's status line and headers (interim replies skipped)."""
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait()
        return Headers(self._raw_headers)

    async def read(self) -> bytes | None:
        """The next piece of the body as the server framed it (raw, still encoded: a chunk
        of a chunked body, or what one network read brought of a plain one); None at its
        end. One piece at a time, as httpx delivered them: a stream's first events are
        decoded (and their tokens yielded) before a later piece can pass a size cap."""
        while True:
            body = self._body
            if body:
                piece = body.popleft()
                self._buffered -= len(piece)
                if (
                    self._reading_paused
                    and self._buffered <= _HIGH_WATER // 2
                    and self.transport is not None
                    and not self.closed
                ):
                    self._reading_paused = False
                    self.transport.resume_reading()
                return piece
            if self.complete:
                return None
            if self._error is not None:
                raise self._error
            await self._wait()

    # --- CONNECT through a proxy ------------------------------------------------------------
    async def tunnel(self, authority: str, auth: bytes | None, timeout: float) -> None:
        """Ask the proxy for a tunnel to ``authority`` (``host:port``), before TLS."""
        self._tunnel = bytearray()
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")
        if auth is not None:
            head += b"Proxy-Authorization: " + auth + b"\r\n"
        await self.write(head + b"\r\n", timeout)
        while (end := self._tunnel.find(b"\r\n\r\n")) < 0:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise connection_error("ProxyError: the proxy closed the connection")
            await self._wait()
        status_line = bytes(self._tunnel[: self._tunnel.find(b"\r\n")])
        extra = bytes(self._tunnel[end + 4 :])
        self._tunnel = None
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[1].startswith(b"2"):
            shown = status_line.decode("latin-1", "replace")[:200]
            raise connection_error(f"ProxyError: the proxy refused the tunnel: {shown}")
        if extra:
            raise connection_error("ProxyError: data after the proxy's reply to CONNECT")

    def upgraded(self, transport: asyncio.BaseTransport) -> None:
        """The TLS transport that now carries this connection (after a CONNECT)."""
        self.transport = transport  # type: ignore[assignment]
