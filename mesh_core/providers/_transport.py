"""The transport: one provider's HTTP exchanges, whatever its wire protocol (sync calls over
httpx, async ones over an ``asyncio.Protocol`` on httptools: :mod:`._h1pool`).

A provider is this transport plus a :class:`~._dialect.Dialect`. The transport owns what
every protocol needs done the same way: connection pools (:mod:`._pools`, :mod:`._shards`),
wall-clock deadlines (:mod:`._watchdog`), the sync and async stream classes
(:mod:`._streams`), size caps on what comes back (:mod:`._decoding`), mapping httpx's
exceptions to the error taxonomy, and keeping credentials out of every error message. The
dialect says where a request goes, what its body is and what the replies mean; it does no
I/O, so the sync and async paths here share it whole.

Sync requests go straight to httpx *transports* (a set per provider; see :mod:`._shards`
for why a set) rather than through ``httpx.Client``; async ones to this module's own
(:mod:`._h1pool`, a set per provider and event loop, since a pool cannot cross loops),
which cost a fraction of httpx's async stack per request (BENCHMARKS.md, "Async HTTP
stack"). A router sits on every call, and the client layer (URL merging, cookies, auth and
redirect flows, event hooks) costs more per request than all of our routing while doing
nothing we use: the URLs, headers and timeouts of a model are fixed, so they are prepared
once.

What comes back is bounded in time and size: every read of an attempt runs under its
wall-clock deadline, and bodies are inflated and counted against the provider's
:class:`~._base.Limits` as they arrive, so a trickle, a decompression bomb or an endless
line costs one attempt and fails over.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import httpx

from .. import __version__
from .._errors import MalformedResponseError, ProviderError
from .._types import CompletionRequest
from ._base import (
    AsyncProviderStream,
    Limits,
    ProviderReply,
    ProviderStream,
    StreamTimer,
    Timeouts,
    encode_json,
    total_expired,
)
from ._credentials import (
    basic_token as _basic,
    reveal as _reveal,
    secret_header_values,
    shown_url as _shown_url,
    url_credentials as _credentials,
)
from ._decoding import BodyDecoder, BodyReader
from ._dialect import Dialect, StreamParser
from ._embedding_calls import EmbeddingCalls
from ._pools import LoopPools, drop_closed_loops, no_tls, tls_context
from ._reply import RateLimitInfo
from ._shards import Shards
from ._streams import AsyncStream, SyncStream, map_transport_error
from ._watchdog import IO_DEADLINE, Deadline, ReadDeadline, install

__all__ = ["HTTPProvider"]

_USER_AGENT = f"modelmesh-lite/{__version__}"
"""The same on both paths (sync calls go over httpx, async ones over :mod:`._h1pool`)."""


def _deadline_error(
    exc: httpx.HTTPError, timeouts: Timeouts, deadline: Deadline, stream: bool
) -> ProviderError:
    """Like :func:`._streams.map_transport_error`, naming the attempt's deadline when that is
    what ended it (the I/O deadline fires as httpcore's ReadTimeout)."""
    if not isinstance(exc, httpx.ReadTimeout) or not deadline.passed():
        return map_transport_error(exc, timeouts)
    return StreamTimer.opening_expired(timeouts) if stream else total_expired(timeouts)


@lru_cache(maxsize=256)
def _timeout_extension(timeouts: Timeouts, read: float) -> dict[str, float]:
    """httpx's per-request timeouts for an attempt (cached: a model's timeouts do not change).

    Callers copy it: a stream's read timeout is widened once the first byte arrives.
    """
    # Waiting for a free pooled connection is our own queue, not the provider's fault.
    return {
        "connect": timeouts.connect,
        "read": read,
        "write": timeouts.connect,
        "pool": timeouts.total,
    }


class HTTPProvider(EmbeddingCalls):
    """A provider speaking ``dialect`` to ``base_url``.

    Credentials never leave the request headers: the API key (in the header the dialect
    names), userinfo in ``base_url`` (sent as HTTP basic auth, and stripped from the URL: a
    repr never shows it; an API key as well is refused), the proxy's credentials and the
    values of extra headers named like secrets. Each of them is replaced by ``***`` in any
    error message a provider or proxy echoes it into.
    """

    def __init__(
        self,
        provider_id: str,
        dialect: Dialect,
        *,
        base_url: str,
        api_key: Any = None,
        headers: Mapping[str, str] | None = None,
        verify_tls: bool = True,
        max_connections: int = 100,
        proxy: Any = None,
        limits: Limits | None = None,
    ) -> None:
        self.provider_id = provider_id
        self.dialect = dialect
        self.requires_max_tokens: bool = getattr(dialect, "requires_max_tokens", False)
        """The protocol has no default answer length (Anthropic's): the mesh sends the
        model's ``max_output_tokens`` when the caller gives no ``max_tokens``."""
        url = httpx.URL(str(base_url))
        basic = _basic(url.username, url.password) if url.userinfo else None
        url = url.copy_with(userinfo=b"") if url.userinfo else url
        self._secret: str | None = _reveal(api_key)
        if basic and self._secret:
            raise ValueError(
                f"provider {provider_id!r}: credentials in base_url and an api_key: both would "
                "be sent as the Authorization header"
            )
        self.base_url = str(url).rstrip("/")
        self._shown = _shown_url(url)
        self._base = url
        self._urls: dict[tuple[str, bool], httpx.URL] = {}
        self._proxy: str | None = _reveal(proxy)
        self._limits = limits or Limits()
        self._headers = httpx.Headers(
            {
                "accept-encoding": "gzip, deflate",
                "user-agent": _USER_AGENT,
                "content-type": "application/json",
                **(headers or {}),
            }
        )
        self._headers.update(dialect.auth_headers(self._secret))
        if basic and not self._secret:
            self._headers["authorization"] = f"Basic {basic}"
        # Whatever could echo back into an error message, longest first.
        hidden = [self._secret, *_credentials(str(base_url)), *_credentials(self._proxy)]
        hidden += secret_header_values(headers or {})
        self._hidden = sorted({s for s in hidden if s}, key=len, reverse=True)
        self._verify = verify_tls
        self._max_connections = max_connections
        self._sync: Shards[httpx.HTTPTransport] | None = None
        # A plain dict, not weak: a loop's transports refer to it, so a weak key would never
        # go while the pools are there. Entries leave when the loop shuts down, or when it
        # is found closed (at the next new loop, and in close()).
        self._async: dict[asyncio.AbstractEventLoop, LoopPools] = {}
        self._lock = threading.Lock()
        # A provider dropped without close(): the pools of loops that will never run again
        # still release their sockets (the others close with their loop).
        self._finalizer = weakref.finalize(self, drop_closed_loops, self._async, self._lock)
        self._finalizer.atexit = False

    @classmethod
    def from_config(cls, provider_id: str, config: Any, dialect: Dialect) -> HTTPProvider:
        """From a ``providers.<id>`` section (a ``ProviderConfig``), speaking ``dialect``."""
        return cls(
            provider_id,
            dialect,
            base_url=config.base_url,
            api_key=config.api_key,
            headers=config.headers,
            verify_tls=config.verify_tls,
            max_connections=config.max_connections,
            proxy=config.proxy,
            limits=Limits.of(getattr(config, "limits", None)),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.provider_id!r}, dialect={self.dialect.name!r}, "
            f"base_url={self._shown!r})"
        )

    def _url(self, model_name: str, stream: bool) -> httpx.URL:
        """Where a call to ``model_name`` goes (built once per model and mode)."""
        key = (model_name, stream)
        url = self._urls.get(key)
        if url is None:
            url = self._at(*self.dialect.endpoint(model_name, stream=stream))
            self._urls[key] = url
        return url

    def _at(self, path: str, query: Mapping[str, str]) -> httpx.URL:
        """The URL of ``path`` (appended to the base URL's) with ``query``."""
        base = self._base
        url = base.copy_with(path=base.path.rstrip("/") + path)
        return url.copy_merge_params(dict(query)) if query else url

    # --- connection pools ------------------------------------------------------------
    def _transport_options(self) -> Callable[[int], dict[str, Any]]:
        """The options of this provider's transports, by connection limit.

        The TLS context is built here, once and outside any lock, when the URL or the
        proxy is https; a plain-HTTP provider gets the inert :func:`._pools.no_tls` context.
        """
        context = tls_context(self._verify) if self._base.scheme == "https" else no_tls()
        proxy: Any = self._proxy
        if proxy is not None and httpx.URL(proxy).scheme == "https":
            # httpcore would otherwise load the CA bundle for every connection to the proxy.
            proxy = httpx.Proxy(proxy, ssl_context=tls_context(True))

        def options(limit: int) -> dict[str, Any]:
            # Keep-alive as large as the pool: httpcore then never evicts an idle connection
            # that a queued request was just handed (encode/httpcore#1110).
            limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
            return {"verify": context, "limits": limits, "trust_env": False, "proxy": proxy}

        return options

    def _sync_shards(self) -> Shards[httpx.HTTPTransport]:
        shards = self._sync
        if shards is None:
            options = self._transport_options()
            fresh = Shards(
                lambda n: install(httpx.HTTPTransport(**options(n))), self._max_connections
            )
            with self._lock:
                if self._sync is None:
                    self._sync = fresh
                shards = self._sync
        return shards

    def _async_shards(self) -> Shards[Any]:
        loop = asyncio.get_running_loop()
        pools = self._async.get(loop)
        if pools is None or pools.closed:
            pools = self._new_loop_pools(loop)
        return pools.shards

    def _new_loop_pools(self, loop: asyncio.AbstractEventLoop) -> LoopPools:
        """This loop's pools (:mod:`._h1pool`, imported at the first async call), closed when
        the loop shuts down; the pools of loops found closed meanwhile are closed here."""
        from ._h1pool import transport_factory

        make = transport_factory(
            self._base, self._headers, self._verify, self._proxy, self._transport_options
        )
        shards: Shards[Any] = Shards(make, self._max_connections)
        pools = LoopPools(loop, shards, weakref.ref(self))
        with self._lock:
            stale = [p for other, p in self._async.items() if other.is_closed()]
            for p in stale:
                del self._async[p.loop]
            self._async[loop] = pools
        for p in stale:
            p.drop()
        pools.close_with_loop()
        return pools

    def _forget(self, pools: LoopPools) -> None:
        with self._lock:
            if self._async.get(pools.loop) is pools:
                del self._async[pools.loop]

    def close(self) -> None:
        """Close the connection pools: the sync ones, and every event loop's.

        A loop's pools are closed without awaiting it (this method is sync): the sockets of
        a closed or idle loop at once, those of a running loop on its next turn.
        :meth:`aclose` closes the current loop's pools gracefully.
        """
        with self._lock:
            shards, self._sync = self._sync, None
            loops = list(self._async.values())
            self._async.clear()
        for transport in shards.transports if shards is not None else ():
            transport.close()
        for pools in loops:
            pools.drop()

    async def aclose(self) -> None:
        """Close this event loop's pools (awaiting their connections' close), then the sync
        pools and every other loop's (as :meth:`close` does)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            pools = self._async.pop(loop, None)
        if pools is not None:
            await pools.aclose()
        self.close()

    # --- shared helpers ---------------------------------------------------------
    def _redact(self, err: ProviderError) -> ProviderError:
        """Never let a provider (or a proxy) echo a secret back into an error message."""
        for secret in self._hidden:
            if secret in err.message:
                err.message = err.message.replace(secret, "***")
                err.args = (err.message,)
        err.provider_id = self.provider_id
        return err

    def _reply(
        self, status: int, headers: Mapping[str, str], body: bytes, request: CompletionRequest
    ) -> ProviderReply:
        if status >= 400:
            raise self._error(status, headers, body)
        try:
            parsed = self.dialect.parse_reply(body, request)
        except ProviderError as err:
            raise self._redact(err) from None
        return ProviderReply(parsed, self.dialect.rate_limits(headers))

    def _request(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts, stream: bool
    ) -> httpx.Request:
        content = encode_json(self.dialect.build_payload(request, model_name, stream=stream))
        read = timeouts.first_token if stream else timeouts.total
        return self._post(self._url(model_name, stream), content, timeouts, read)

    def _post(
        self, url: httpx.URL, content: bytes, timeouts: Timeouts, read: float
    ) -> httpx.Request:
        return httpx.Request(
            "POST",
            url,
            headers=self._headers,
            content=content,
            extensions={"timeout": dict(_timeout_extension(timeouts, read))},
        )

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return self._redact(self.dialect.classify_error(status, headers, body))

    def _body_decoder(self, resp: Any) -> BodyDecoder:
        """The decoder of a reply's body: an answer up to ``max_response_bytes`` (past it, an
        error), an error reply's first ``max_error_bytes`` (enough to classify it)."""
        encoding = resp.headers.get("content-encoding")
        if resp.status_code < 400:
            return BodyDecoder(encoding, self._limits.max_response_bytes)
        limit = self._limits.max_error_bytes
        try:
            return BodyDecoder(encoding, limit, "max_error_bytes", truncate=True)
        except MalformedResponseError:  # an encoding we did not ask for: read it as it is
            return BodyDecoder(None, limit, "max_error_bytes", truncate=True)

    def _read(self, resp: httpx.Response) -> bytes:
        """The decoded body (raises MalformedResponseError past its cap), read under the
        attempt's I/O deadline; the caller closes ``resp``."""
        body = BodyReader(self._body_decoder(resp))
        for raw in resp.iter_raw():
            if body.feed(raw):
                break
        return body.result()

    async def _aread(self, exchange: Any) -> bytes:
        """:meth:`_read`, awaiting (an :class:`~._h1pool.Exchange`, under the caller's
        deadline)."""
        body = BodyReader(self._body_decoder(exchange))
        while (raw := await exchange.read()) is not None:
            if body.feed(raw):
                break
        return body.result()

    # --- non-streaming ------------------------------------------------------------
    # The reply, headers and body, is read under one wall-clock deadline, ``total`` from when
    # the request went out: no trickle of bytes, no stream of ``100 Continue`` holds it longer.
    def complete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        content = encode_json(self.dialect.build_payload(request, model_name, stream=False))
        status, headers, body = self._exchange(self._url(model_name, False), content, timeouts)
        return self._reply(status, headers, body, request)

    async def acomplete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        content = encode_json(self.dialect.build_payload(request, model_name, stream=False))
        status, headers, body = await self._aexchange(
            self._url(model_name, False), content, timeouts
        )
        return self._reply(status, headers, body, request)

    def _exchange(
        self, url: httpx.URL, content: bytes, timeouts: Timeouts
    ) -> tuple[int, httpx.Headers, bytes]:
        """POST ``content`` (JSON) to ``url`` and read the whole reply under the ``total``
        deadline: its status, headers and decoded body (capped as :meth:`_body_decoder`
        says). Raises classified, redacted ProviderErrors only; an error status is returned,
        not raised, for the dialect to classify. The one non-streaming exchange every
        call shape (completions, embeddings) goes through."""
        httpx_request = self._post(url, content, timeouts, timeouts.total)
        deadline = Deadline(budget=timeouts.total)
        lease = self._sync_shards().lease()
        token = IO_DEADLINE.set(deadline)
        try:
            resp = lease.transport.handle_request(httpx_request)
            try:
                body = self._read(resp)
            finally:
                resp.close()  # a body left unread (past a cap) closes its connection
        except httpx.HTTPError as exc:
            raise self._redact(_deadline_error(exc, timeouts, deadline, False)) from None
        except ProviderError as err:
            raise self._redact(err) from None
        finally:
            IO_DEADLINE.reset(token)
            lease.release()
        return resp.status_code, resp.headers, body

    async def _aexchange(
        self, url: httpx.URL, content: bytes, timeouts: Timeouts
    ) -> tuple[int, Mapping[str, str], bytes]:
        """:meth:`_exchange`, awaiting, on this event loop's pools (:mod:`._h1pool`): the
        reply is read under one :class:`~._watchdog.ReadDeadline`, ``total`` from when the
        request was sent."""
        lease = self._async_shards().lease()
        exchange: Any = None
        try:
            exchange = await lease.transport.send(url, content, timeouts)
            loop = asyncio.get_running_loop()
            with ReadDeadline(loop, loop.time() + timeouts.total):
                await exchange.receive_head()
                body = await self._aread(exchange)
        except TimeoutError:
            raise self._redact(total_expired(timeouts)) from None
        except ProviderError as err:
            raise self._redact(err) from None
        finally:
            if exchange is not None:
                await exchange.aclose()  # a body left unread (past a cap) closes its connection
            lease.release()
        return exchange.status_code, exchange.headers, body

    # --- streaming ------------------------------------------------------------------
    # Until the headers are in (and an error reply's body), the first-token deadline (capped
    # by ``total``) is the I/O deadline; then the stream's own deadlines take over.
    # All of a stream's deadlines count from when its request has been sent: the opening's
    # is a budget that starts at the first read (see Deadline), and the stream's timer starts
    # when that one did. Building the pools or connecting is this process's time.
    def stream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderStream:
        httpx_request = self._request(model_name, request, timeouts, True)
        lease = self._sync_shards().lease()
        deadline = Deadline(budget=min(timeouts.first_token, timeouts.total))
        token = IO_DEADLINE.set(deadline)
        try:
            resp = lease.transport.handle_request(httpx_request)
            if resp.status_code >= 400:
                try:
                    body = self._read(resp)
                finally:
                    resp.close()
                raise self._error(resp.status_code, resp.headers, body)
        except httpx.HTTPError as exc:
            lease.release()
            raise self._redact(_deadline_error(exc, timeouts, deadline, True)) from None
        except BaseException:
            lease.release()
            raise
        finally:
            IO_DEADLINE.reset(token)
        # From here the stream's own deadlines cap its reads; httpx's read timeout is a backstop.
        httpx_request.extensions["timeout"]["read"] = timeouts.total
        timer = StreamTimer(timeouts, deadline.sent)
        parser, rate_limits = self._parsing(request, resp)
        return SyncStream(resp, timer, lease, self._limits, self._redact, parser, rate_limits)

    async def astream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> AsyncProviderStream:
        content = encode_json(self.dialect.build_payload(request, model_name, stream=True))
        lease = self._async_shards().lease()
        exchange: Any = None
        try:
            exchange = await lease.transport.send(self._url(model_name, True), content, timeouts)
            sent = time.monotonic()
            loop = asyncio.get_running_loop()
            with ReadDeadline(loop, loop.time() + min(timeouts.first_token, timeouts.total)):
                await exchange.receive_head()
                if exchange.status_code >= 400:
                    body = await self._aread(exchange)
                    raise self._error(exchange.status_code, exchange.headers, body)
        except BaseException as exc:
            if exchange is not None:
                await exchange.aclose()
            lease.release()
            if isinstance(exc, TimeoutError):
                raise self._redact(StreamTimer.opening_expired(timeouts)) from None
            if isinstance(exc, ProviderError):
                raise self._redact(exc) from None
            raise
        timer = StreamTimer(timeouts, sent)
        parser, rate_limits = self._parsing(request, exchange)
        return AsyncStream(exchange, timer, lease, self._limits, self._redact, parser, rate_limits)

    def _parsing(
        self, request: CompletionRequest, resp: Any
    ) -> tuple[StreamParser, RateLimitInfo | None]:
        """What a stream needs of the dialect: its event parser, and the rate limits."""
        return self.dialect.stream_parser(request), self.dialect.rate_limits(resp.headers)
