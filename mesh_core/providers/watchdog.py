"""Wall-clock deadlines for socket reads.

httpx applies its timeouts to each socket operation: a server that trickles a byte a
second, or sends ``HTTP/1.1 100 Continue`` forever, is never silent long enough for a
read timeout and holds a call for as long as it likes. Two mechanisms make an attempt's
deadlines absolute:

* :data:`IO_DEADLINE` holds the :class:`Deadline` of the reads the current thread or task
  performs, and the network backend :func:`install` puts under every transport caps each
  read by the time left until it, failing at once with httpcore's ``ReadTimeout`` when
  none is left. That costs a context-variable lookup and a clock read per read, and no
  thread; the provider sets it around a whole non-streaming exchange (headers and body,
  or an error body) and around a stream's opening (until its headers, and an error
  body). Connecting and sending keep their own per-operation ``connect`` timeout: they
  are not where a hostile server can stretch time (a loopback or kept-alive connect is
  immediate, a request fits the socket buffer), while under a congested event loop a
  capped connect or send would fail requests the provider never saw, and blame it.
* :class:`Watchdog` (a sync stream's body): one daemon thread watches the armed
  deadlines of every open stream and shuts the socket down when one passes, which wakes
  the blocked read; the stream then reports a timeout instead of a reset. The thread
  sleeps while nothing is armed. (An async stream's reads run under
  ``asyncio.timeout_at``.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import httpcore

__all__ = ["IO_DEADLINE", "Deadline", "SocketGuard", "Watchdog", "install"]

_TICK = 0.02


class Deadline:
    """When the reads of an attempt must be done (``time.monotonic()``).

    Either fixed (``at``), or ``budget`` seconds from the first read, that is from when the
    request has been sent: a non-streaming answer's ``total`` measures the provider, not
    the time this process took to get the request out (a congested event loop, a busy
    machine), which says nothing about the provider's health.
    """

    __slots__ = ("at", "budget")

    def __init__(self, *, at: float | None = None, budget: float = 0.0) -> None:
        self.at = at
        self.budget = budget

    def left(self) -> float:
        now = time.monotonic()
        at = self.at
        if at is None:
            at = self.at = now + self.budget
        return at - now

    def passed(self) -> bool:
        """Whether it was armed and has passed (a timeout raised now is this deadline's)."""
        return self.at is not None and time.monotonic() >= self.at - 0.01


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
        raise httpcore.ReadTimeout("the attempt's deadline passed")
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


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def install(transport: Any) -> Any:
    """Put the deadline-capping backend under an httpx transport's connection pool (a plain
    pool, or an HTTP or SOCKS proxy's: each keeps its backend as ``_network_backend``).

    httpx offers no parameter for it, hence the private attribute; a layout that has
    changed fails loudly here rather than leaving calls without deadlines."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        raise RuntimeError(
            "cannot install I/O deadlines: this httpx/httpcore version keeps its connection "
            "pool's network backend elsewhere"
        )
    if not isinstance(backend, (_Backend, _AsyncBackend)):
        wrap = _AsyncBackend if isinstance(backend, httpcore.AsyncNetworkBackend) else _Backend
        pool._network_backend = wrap(backend)
    return transport


class SocketGuard:
    __slots__ = ("_sock", "deadline", "fired")

    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self.deadline: float | None = None
        self.fired = False

    def _fire(self) -> None:
        self.fired = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    def __init__(self) -> None:
        self._guards: set[SocketGuard] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def guard(self, sock: socket.socket | None) -> SocketGuard:
        g = SocketGuard(sock)
        with self._cond:
            self._guards.add(g)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="modelmesh-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return g

    def release(self, g: SocketGuard) -> None:
        with self._cond:
            self._guards.discard(g)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._guards:
                    self._cond.wait()
                now = time.monotonic()
                expired = [g for g in self._guards if g.deadline is not None and now >= g.deadline]
                for g in expired:
                    self._guards.discard(g)
            for g in expired:
                g._fire()
            time.sleep(_TICK)


WATCHDOG = Watchdog()
