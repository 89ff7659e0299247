"""Wall-clock deadlines for socket reads.

httpx applies its timeouts to each socket operation: a server that trickles a byte a
second, or sends ``HTTP/1.1 100 Continue`` forever, is never silent long enough for a
read timeout and holds a call for as long as it likes. :data:`IO_DEADLINE` makes an
attempt's deadlines absolute: it holds the :class:`Deadline` of the reads the current
thread or task performs, and the network backend :func:`install` puts under every
transport caps each read's timeout by the time left until it. The provider sets it around
a whole non-streaming exchange, around a stream's opening (until its headers, and an error
body), and around each read of a sync stream's body. That costs a context-variable lookup
and a clock read per read, and no thread.

The kernel enforces the timeout of a blocking read (``poll`` with a timeout), so a read
either returns what arrived in time or times out having received nothing: no check on
another thread can race with a read that has just returned, and no socket is ever shut
down under a connection the pool has since handed to another request (the watchdog
thread this module once ran could do both). An async stream's reads run under
:class:`ReadDeadline`, which gives the event loop one more turn before it cancels.

Connecting and sending keep their own per-operation ``connect`` timeout: they are not where
a hostile server can stretch time (a loopback or kept-alive connect is immediate, a request
fits the socket buffer), while under a congested event loop a capped connect or send would
fail requests the provider never saw, and blame it.

The async backend serves the one provider kind whose async calls still go through httpx,
those behind a SOCKS proxy (:mod:`._h1socks`; every other async call goes over
:mod:`._h1pool`, whose reads the caller's :class:`ReadDeadline` bounds). It also remembers
the asyncio transports of the connections it opened
(:meth:`_AsyncBackend.drop_connections`): the pools of an event loop that was closed
without closing them can then still release their sockets, as :func:`close_now` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import httpcore

__all__ = [
    "IO_DEADLINE",
    "LAST_LOOK",
    "Deadline",
    "ReadDeadline",
    "close_now",
    "install",
    "network_backend",
]


class Deadline:
    """When the reads of an attempt must be done (``time.monotonic()``).

    Either fixed (``at``), or ``budget`` seconds from the first read, that is from when the
    request has been sent (``sent``): a deadline measures the provider, not the time this
    process took to build its pools or get the request out (a congested event loop, a busy
    machine), which says nothing about the provider's health.

    Once it has passed, one more read still takes what has already arrived (a
    :data:`LAST_LOOK` wait): a process that was busy elsewhere when the deadline came does
    not throw away an answer the provider sent in time. One per deadline: a server that
    keeps sending cannot stretch it.
    """

    __slots__ = ("at", "budget", "looked", "sent")

    def __init__(self, *, at: float | None = None, budget: float = 0.0) -> None:
        self.at = at
        self.budget = budget
        self.sent: float | None = None
        self.looked = False

    def left(self) -> float:
        now = time.monotonic()
        at = self.at
        if at is None:
            self.sent = now
            at = self.at = now + self.budget
        return at - now

    def rearm(self, at: float) -> None:
        """Move a stream's deadline for its next read (the last look is per deadline)."""
        if at != self.at:
            self.at = at
            self.looked = False

    def passed(self) -> bool:
        """Whether it was armed and has passed (a timeout raised now is this deadline's)."""
        return self.at is not None and time.monotonic() >= self.at - 0.01


LAST_LOOK = 0.001
"""Seconds a read past its deadline may wait for bytes that are already on their way."""


IO_DEADLINE: ContextVar[Deadline | None] = ContextVar("modelmesh_io_deadline", default=None)
"""The deadline of the current context's socket reads (None: per-read timeouts only)."""


def _read_timeout(timeout: float | None) -> float | None:
    """``timeout`` capped by the time left until :data:`IO_DEADLINE` (raising httpcore's
    ReadTimeout when it has passed)."""
    deadline = IO_DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline.left()
    if left <= 0:
        if deadline.looked:
            raise httpcore.ReadTimeout("the attempt's deadline passed")
        deadline.looked = True
        return LAST_LOOK
    return left if timeout is None or timeout > left else timeout


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _read_timeout(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _read_timeout(timeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _asyncio_transport(stream: Any) -> asyncio.Transport | None:
    """The asyncio transport under an httpcore AnyIO stream (None on another event loop
    implementation, or another layout of httpcore's and anyio's objects)."""
    transport = getattr(getattr(stream, "_stream", None), "_transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


def close_now(transport: asyncio.Transport, loop_closed: bool) -> None:
    """Close the socket of a transport whose event loop is closed, or not running.

    What ``abort()`` does, with the step it leaves to the loop's next turn (closing the
    socket, in ``_call_connection_lost``) done here: a closed loop has no next turn, and
    an idle one may never get one, so the socket would stay open until the garbage
    collector found the transport, and warned. The transport is left closing, as
    ``abort()`` leaves it: a request that a stopped loop resumes later gets a connection
    error. asyncio's selector transports only; others are left to the collector.
    """
    lost = getattr(transport, "_call_connection_lost", None)
    if lost is None or getattr(transport, "_sock", None) is None:
        return
    if not transport.is_closing():
        with contextlib.suppress(Exception):
            transport.pause_reading()  # out of the selector, if the loop is open
        transport._closing = True  # type: ignore[attr-defined]
        transport._conn_lost += 1  # type: ignore[attr-defined]
    elif not loop_closed:  # already closing: the open loop closes the socket on its next turn
        return
    with contextlib.suppress(Exception):  # a protocol that needs the loop: the socket closes anyway
        lost(None)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner
        self._transports: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        transport = _asyncio_transport(stream)
        if transport is not None:
            self._transports.add(transport)
        return _AsyncStream(stream)

    def drop_connections(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections this backend opened, without awaiting their event loop.

        For a pool whose loop cannot run its ``aclose()`` for us. A closed loop, or one not
        running (and so not touching these transports): their sockets are closed here.
        Otherwise (called on the loop's own thread, while it runs) they are aborted, and the
        loop closes the sockets on its next turn.
        """
        closed = loop.is_closed()
        now = closed or not loop.is_running()
        for transport in list(self._transports):
            if now:
                close_now(transport, closed)
            elif not transport.is_closing():
                transport.abort()

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def network_backend(transport: Any) -> _AsyncBackend | _Backend:
    """The deadline-capping backend :func:`install` put under ``transport``."""
    return transport._pool._network_backend  # type: ignore[no-any-return]


def install(transport: Any) -> Any:
    """Put the deadline-capping backend under an httpx transport's connection pool (a plain
    pool, or an HTTP or SOCKS proxy's: each keeps its backend as ``_network_backend``).

    httpx offers no parameter for it, hence the private attribute; a layout that has
    changed fails loudly here rather than leaving calls without deadlines."""
    pool: Any = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if pool is None or backend is None:
        raise RuntimeError(
            "cannot install I/O deadlines: this httpx/httpcore version keeps its connection "
            "pool's network backend elsewhere"
        )
    if not isinstance(backend, (_Backend, _AsyncBackend)):
        wrap = _AsyncBackend if isinstance(backend, httpcore.AsyncNetworkBackend) else _Backend
        pool._network_backend = wrap(backend)
    return transport


class ReadDeadline:
    """``asyncio.timeout_at(when)`` for one read of an async stream, which looks once more.

    When ``when`` comes, the cancellation is put off by one turn of the event loop: the
    callbacks already queued in the turn the deadline fell in run first. A read whose bytes
    arrived in time, but whose task had not run yet because the loop was busy (a congested
    loop processes the socket's readiness and the timer in the same turn), completes; a
    read still waiting is cancelled and raises TimeoutError, as with ``asyncio.timeout_at``.
    Costs one timer handle per read, like ``asyncio.timeout_at``, and no coroutine frames.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_loop", "_task", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._loop = loop
        self._when = when
        self._expired = False
        self._handle: asyncio.Handle | None = None

    def __enter__(self) -> ReadDeadline:
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("ReadDeadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = self._loop.call_at(self._when, self._due)
        return self

    def _due(self) -> None:
        self._handle = self._loop.call_soon(self._expire)

    def _expire(self) -> None:
        self._handle = None
        self._expired = True
        self._task.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
