"""A candidate, sketched: an ``asyncio.Protocol`` HTTP/1.1 client on ``httptools`` (llhttp).

What a transport of our own on httptools would cost per request: a connection pool with a
limit and a queue of waiters, llhttp parsing the reply (headers, chunked framing), a timer
per request (as a deadline costs), the body collected. No TLS or proxy handling (those are
set-up costs, paid per connection, not per request).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from urllib.parse import urlsplit

import httptools


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.status = 0
        self.complete = False
        self.keep = True
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        w = self.waiter
        if w is not None and not w.done() and (self.body or self.complete or self.status):
            w.set_result(None)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep = self.parser.should_keep_alive()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(exc or ConnectionError("closed"))

    def reset(self) -> None:
        self.headers, self.body, self.status, self.complete = [], [], 0, False

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class H1Client:
    def __init__(self, url: str, limit: int = 256) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.limit = limit
        self.idle: list[_Conn] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self.head = (
            f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            "accept-encoding: gzip, deflate\r\nuser-agent: bench\r\n"
            "content-type: application/json\r\ncontent-length: "
        ).encode()

    async def _acquire(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost:
                return conn
            self.open -= 1
        if self.open >= self.limit:
            fut: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            got = await fut
            if got is not None:
                return got
        self.open += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Conn, self.host, self.port
            )
        except BaseException:
            self.open -= 1
            raise
        return conn

    def _release(self, conn: _Conn, reuse: bool) -> None:
        if not reuse:
            conn.transport.close()  # type: ignore[union-attr]
            self.open -= 1
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn if reuse else None)
                return
        if reuse:
            self.idle.append(conn)

    async def _send(self, body: bytes) -> tuple[_Conn, asyncio.TimerHandle]:
        conn = await self._acquire()
        conn.reset()
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + 30, lambda: None)  # what a deadline costs
        conn.transport.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))  # type: ignore[union-attr]
        return conn, timer

    async def post(self, body: bytes) -> tuple[int, bytes]:
        conn, timer = await self._send(body)
        ok = False
        try:
            while not conn.complete:
                await conn.wait()
            ok = conn.keep
            return conn.status, b"".join(conn.body)
        finally:
            timer.cancel()
            self._release(conn, ok)

    async def stream(self, body: bytes) -> int:
        """Events of an event stream, as the chunks of it arrive."""
        conn, timer = await self._send(body)
        ok = False
        events = 0
        try:
            while True:
                if conn.body:
                    parts, conn.body = conn.body, []
                    for part in parts:
                        events += part.count(b"data: ")
                if conn.complete:
                    break
                await conn.wait()
            ok = conn.keep
            return events
        finally:
            timer.cancel()
            self._release(conn, ok)

    def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()  # type: ignore[union-attr]
        self.idle.clear()
