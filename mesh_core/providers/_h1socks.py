"""The async transport of a provider behind a SOCKS proxy: httpx's, behind the same seam.

Part of the transport (:mod:`._transport`). The httptools transport (:mod:`._h1pool`)
does not speak SOCKS; httpx does (with its ``socks`` extra), so a provider whose proxy is
``socks5://`` sends its async requests through an httpx transport wrapped to look like
:class:`~._h1pool.H1Transport`: the same :class:`Exchange` surface, its exceptions
mapped to the same errors, the same deadlines (the caller's
:class:`~._watchdog.ReadDeadline` around every read; here connecting counts against the
reply's deadline too, since httpx sends and waits for the head in one call). It costs
what httpx costs (see BENCHMARKS.md); every other provider is unaffected.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ._base import Timeouts
from ._streams import map_transport_error
from ._watchdog import install, network_backend

__all__ = ["HttpxTransport"]


class _HttpxExchange:
    """:class:`~._h1pool.Exchange` over an httpx request (sent by :meth:`receive_head`)."""

    __slots__ = (
        "_chunks",
        "_request",
        "_response",
        "_timeouts",
        "_transport",
        "headers",
        "status_code",
    )

    def __init__(
        self, transport: httpx.AsyncHTTPTransport, request: httpx.Request, timeouts: Timeouts
    ) -> None:
        self._transport = transport
        self._request = request
        self._timeouts = timeouts
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self.status_code = 0
        self.headers: httpx.Headers | None = None

    async def receive_head(self) -> None:
        try:
            response = await self._transport.handle_async_request(self._request)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._timeouts) from None
        self._response = response
        self.status_code, self.headers = response.status_code, response.headers
        self._chunks = response.aiter_raw()

    async def read(self) -> bytes | None:
        assert self._chunks is not None
        try:
            return await anext(self._chunks, None)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._timeouts) from None

    async def aclose(self) -> None:
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            await chunks.aclose()  # type: ignore[attr-defined]
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()


class HttpxTransport:
    """An httpx async transport (built with ``options``) as an :class:`~._h1pool.H1Transport`."""

    def __init__(self, options: dict[str, Any], headers: httpx.Headers) -> None:
        self._transport = install(httpx.AsyncHTTPTransport(**options))
        self._pool = self._transport._pool
        self._headers = headers

    async def send(self, url: httpx.URL, content: bytes, timeouts: Timeouts) -> _HttpxExchange:
        extensions = {
            "timeout": {
                "connect": timeouts.connect,
                "read": timeouts.total,
                "write": timeouts.connect,
                "pool": timeouts.total,
            }
        }
        request = httpx.Request(
            "POST", url, headers=self._headers, content=content, extensions=extensions
        )
        return _HttpxExchange(self._transport, request, timeouts)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def drop(self, loop: asyncio.AbstractEventLoop) -> None:
        backend: Any = network_backend(self._transport)
        backend.drop_connections(loop)
