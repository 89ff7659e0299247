"""The floor: a minimal raw asyncio HTTP/1.1 client, for what the machine can do at all.

One kept-alive connection per concurrent worker (no pool to manage), the request's bytes
built once, a reply parsed by finding the end of its head and its ``content-length`` (or
counting a chunked stream's events up to its last chunk). No timeouts, no decoding, no
size caps, no TLS, no proxies: nothing any real client can do without. Whatever a real
client costs above this is what its features, and its implementation, cost.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(exc or ConnectionError("closed"))


class FloorClient:
    """``await client.post(body)`` per worker; each worker index owns one connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self._conns: dict[int, _Conn] = {}

    def _head(self, body: bytes) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()

    async def _conn(self, worker: int) -> _Conn:
        conn = self._conns.get(worker)
        if conn is None:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
            self._conns[worker] = conn
        return conn

    async def _wait(self, conn: _Conn) -> None:
        conn.waiter = asyncio.get_running_loop().create_future()
        await conn.waiter

    async def post(self, worker: int, body: bytes) -> bytes:
        """The reply's body (a plain ``content-length`` reply)."""
        conn = await self._conn(worker)
        conn.transport.write(self._head(body) + body)  # type: ignore[union-attr]
        while True:
            buf = conn.buf
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                i = buf.find(b"content-length:", 0, end)
                if i < 0:
                    i = buf.lower().find(b"content-length:", 0, end)
                length = int(buf[i + 15 : buf.find(b"\r\n", i)])
                if len(buf) >= end + 4 + length:
                    out = bytes(buf[end + 4 : end + 4 + length])
                    del buf[: end + 4 + length]
                    return out
            await self._wait(conn)

    async def stream(self, worker: int, body: bytes) -> int:
        """Events in a chunked event-stream reply (read to its last chunk)."""
        conn = await self._conn(worker)
        conn.transport.write(self._head(body) + body)  # type: ignore[union-attr]
        while True:
            end = conn.buf.find(b"\r\n0\r\n\r\n")
            if end >= 0:
                events = conn.buf.count(b"data: ", 0, end)
                del conn.buf[: end + 7]
                return events
            await self._wait(conn)

    def close(self) -> None:
        for conn in self._conns.values():
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()
