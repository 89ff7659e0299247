"""The async transport: a provider's connection pool on one event loop, and its exchanges.

Part of the transport (:mod:`._transport`): :class:`H1Transport` sends a request over a
pooled :class:`~._h1.Connection` and hands back an :class:`Exchange` to read the reply
from. The pool keeps at most ``limit`` connections (connecting ones included), reuses the
most recently used idle one (a warm connection, and the others can expire), closes
connections idle for longer than :data:`KEEPALIVE_EXPIRY` or found closed by the server
before reuse (as httpx does: :meth:`~._h1.Connection.stale`), and queues
requests beyond the limit in order. Connections go direct, over TLS with the provider's
shared context, or through an ``http://``/``https://`` proxy (plain requests in absolute
form, TLS through a ``CONNECT`` tunnel). A SOCKS proxy is what this transport does not
speak: such a provider's async calls go through httpx (:mod:`._h1socks`).

A cancelled request gives its connection back closed unless its reply was read whole:
half-read bytes never reach the next request. A request cancelled while queued leaves
the queue (and passes on a connection it was handed meanwhile).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections import deque
from typing import Any

import httpx

from .._errors import ErrorKind, provider_error
from ._base import Timeouts
from ._h1 import Connection, Headers, connection_error
from ._pools import tls_context
from ._watchdog import close_now

__all__ = ["KEEPALIVE_EXPIRY", "ConnectionPool", "Exchange", "H1Transport", "Route"]

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept (httpx's default): a server that closes idle
connections sooner races the next request on them."""


class Route:
    """Where a provider's connections go: the origin, maybe through a proxy."""

    __slots__ = ("host", "port", "proxy", "proxy_auth", "proxy_ssl", "scheme", "ssl")

    def __init__(
        self, base: httpx.URL, ssl_context: ssl.SSLContext | None, proxy: str | None
    ) -> None:
        self.scheme = base.scheme
        self.host = base.host
        self.port = base.port or (443 if base.scheme == "https" else 80)
        self.ssl = ssl_context if base.scheme == "https" else None
        self.proxy: tuple[str, int] | None = None
        self.proxy_auth: bytes | None = None
        self.proxy_ssl: ssl.SSLContext | None = None
        if proxy is not None:
            url = httpx.URL(proxy)
            self.proxy = (url.host, url.port or (443 if url.scheme == "https" else 80))
            if url.scheme == "https":
                self.proxy_ssl = tls_context(True)
            if url.userinfo:
                token = base64.b64encode(f"{url.username}:{url.password}".encode())
                self.proxy_auth = b"Basic " + token

    @property
    def forwards(self) -> bool:
        """Plain requests through a proxy: sent to it, in absolute form."""
        return self.proxy is not None and self.ssl is None

    async def connect(self, timeout: float) -> Connection:
        """A new connection, TLS and tunnel included, within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        host, port = self.proxy or (self.host, self.port)
        first_ssl = self.proxy_ssl if self.proxy else self.ssl
        conn: Connection | None = None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    Connection,
                    host,
                    port,
                    ssl=first_ssl,
                    server_hostname=host if first_ssl else None,
                )
                if self.proxy is not None and self.ssl is not None:
                    await conn.tunnel(f"{self.host}:{self.port}", self.proxy_auth, timeout)
                    assert conn.transport is not None
                    tls = await loop.start_tls(
                        conn.transport, conn, self.ssl, server_hostname=self.host
                    )
                    if tls is None:
                        raise connection_error("ConnectError: the TLS handshake did not complete")
                    conn.upgraded(tls)
        except TimeoutError:
            if conn is not None:
                conn.abort()
            raise provider_error(ErrorKind.TIMEOUT, f"connect timeout after {timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            if conn is not None:
                conn.abort()
            raise connection_error(f"ConnectError: {str(exc) or type(exc).__name__}") from None
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        return conn


class ConnectionPool:
    """At most ``limit`` connections of one route, on one event loop."""

    def __init__(self, route: Route, limit: int) -> None:
        self._route = route
        self._limit = limit
        self._ssl_context = route.ssl
        self.connections: list[Connection] = []
        self._idle: list[Connection] = []
        self._count = 0  # open or being opened
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    async def acquire(self, timeouts: Timeouts) -> Connection:
        """A connection for one exchange: an idle one, a new one, or one freed for it.

        Waiting for a free connection is our own queue (bounded by ``total``, and a local
        error); connecting is bounded by ``connect``.
        """
        if self._closed:
            raise connection_error("the connection pool is closed")
        idle = self._idle
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                conn = idle.pop()
                if conn.is_idle() and now - conn.idle_since < KEEPALIVE_EXPIRY and not conn.stale():
                    conn.begin()
                    return conn
                self._discard(conn)
        if self._count >= self._limit:
            got = await self._queue(timeouts.total)
            if got is not None:
                if not got.closed and not got.stale():
                    got.begin()
                    return got
                # Closed by the server since: its slot is ours, for a new connection.
                got.abort()
                with contextlib.suppress(ValueError):
                    self.connections.remove(got)
        else:
            self._count += 1
        # A connection slot is ours: open it (and give the slot back if that fails).
        try:
            conn = await self._route.connect(timeouts.connect)
        except BaseException:
            self._free_slot()
            raise
        if self._closed:
            conn.abort()
            self._free_slot()
            raise connection_error("the connection pool is closed")
        self.connections.append(conn)
        conn.begin()
        return conn

    async def _queue(self, timeout: float) -> Connection | None:
        """Wait to be handed a connection, or (None) a slot to open one with."""
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException as exc:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over as we were cancelled: pass it on
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed)
            if isinstance(exc, TimeoutError):
                raise provider_error(
                    ErrorKind.TIMEOUT,
                    "no free connection in the local pool",
                    details={"local": True},
                ) from None
            raise

    def release(self, conn: Connection) -> None:
        """Take a connection back after an exchange: kept if its reply was read whole."""
        conn.busy = False
        if conn.reusable() and not self._closed:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    conn.busy = True  # handed over as it is: a waiter cancelled meanwhile
                    waiter.set_result(conn)  # passes it on (see _queue)
                    return
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
            return
        self._discard(conn)

    def _discard(self, conn: Connection) -> None:
        conn.abort()
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)
        self._free_slot()

    def _free_slot(self) -> None:
        """A slot freed: the first waiter opens a connection with it, or the count drops."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._count -= 1

    def _close_all(self) -> list[Connection]:
        self._closed = True
        conns, self.connections, self._idle = self.connections, [], []
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(connection_error("the connection pool is closed"))
        return conns

    async def aclose(self) -> None:
        """Close every connection, and let the loop release their sockets."""
        conns = self._close_all()
        for conn in conns:
            conn.abort()
        if conns:
            await asyncio.sleep(0)  # the transports' connection_lost: their sockets close

    def drop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close every connection without awaiting ``loop`` (closed, idle, or this thread's)."""
        closed = loop.is_closed()
        now = closed or not loop.is_running()
        for conn in self._close_all():
            transport: Any = conn.transport
            if now:
                while hasattr(transport, "_ssl_protocol"):  # the socket under TLS layers
                    transport = transport._ssl_protocol._transport
                conn.closed = True
                if isinstance(transport, asyncio.Transport):
                    close_now(transport, closed)
            else:
                conn.abort()


class Exchange:
    """One request's reply: its head (:meth:`receive_head`), then its raw body (:meth:`read`).

    :meth:`aclose` (or :meth:`close`) gives the connection back, kept if the reply was read
    whole; idempotent.
    """

    __slots__ = ("_conn", "_pool", "headers", "status_code")

    def __init__(self, pool: ConnectionPool, conn: Connection) -> None:
        self._pool: ConnectionPool | None = pool
        self._conn = conn
        self.status_code = 0
        self.headers: Headers | None = None

    async def receive_head(self) -> None:
        self.headers = await self._conn.receive_head()
        self.status_code = self._conn.status_code

    async def read(self) -> bytes | None:
        return await self._conn.read()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release(self._conn)

    async def aclose(self) -> None:
        self.close()


class H1Transport:
    """A provider's requests on one event loop, over a :class:`ConnectionPool`."""

    def __init__(self, route: Route, headers: httpx.Headers, limit: int) -> None:
        self._route = route
        self._pool = ConnectionPool(route, limit)
        self._headers = headers
        self._heads: dict[str, bytes] = {}

    def _head(self, url: httpx.URL) -> bytes:
        """The request's head up to its length (built once per URL)."""
        key = str(url)
        head = self._heads.get(key)
        if head is None:
            target = key if self._route.forwards else url.raw_path.decode("ascii")
            lines = [f"POST {target} HTTP/1.1".encode("ascii"), b"Host: " + url.netloc]
            for name, value in self._headers.raw:
                if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
                    raise ValueError(f"header {name.decode(errors='replace')!r}: a line break")
                lines.append(name + b": " + value)
            if self._route.forwards and self._route.proxy_auth is not None:
                lines.append(b"Proxy-Authorization: " + self._route.proxy_auth)
            head = self._heads[key] = b"\r\n".join(lines) + b"\r\nContent-Length: "
        return head

    async def send(self, url: httpx.URL, content: bytes, timeouts: Timeouts) -> Exchange:
        """POST ``content``; returns once it is sent (the reply is the caller's to read)."""
        head = self._head(url)
        pool = self._pool
        conn = await pool.acquire(timeouts)
        try:
            await conn.write(b"%s%d\r\n\r\n%s" % (head, len(content), content), timeouts.connect)
        except BaseException:
            pool.release(conn)  # not reusable: its exchange never completed
            raise
        return Exchange(pool, conn)

    async def aclose(self) -> None:
        await self._pool.aclose()

    def drop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pool.drop(loop)


def transport_factory(
    base: httpx.URL,
    headers: httpx.Headers,
    verify: bool,
    proxy: str | None,
    httpx_options: Any,
) -> Any:
    """How a provider builds the async transports of a loop, by connection limit.

    The TLS context is built here, once and outside any lock, when the URL is https. A
    SOCKS proxy gets httpx's transport (:mod:`._h1socks`; ``httpx_options`` builds its
    options), every other provider this module's.
    """
    if proxy is not None and httpx.URL(proxy).scheme.startswith("socks"):
        from ._h1socks import HttpxTransport

        options = httpx_options()
        return lambda limit: HttpxTransport(options(limit), headers)
    route = Route(base, tls_context(verify) if base.scheme == "https" else None, proxy)
    return lambda limit: H1Transport(route, headers, limit)
