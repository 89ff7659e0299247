"""An OpenAI-compatible provider over httpx.

Covers OpenAI and every service that speaks its chat-completions API through
``base_url``: Groq, Together, OpenRouter, DeepSeek, Mistral, Ollama, vLLM,
llama.cpp's server, LM Studio. All parsing lives in :mod:`.wire`; this module
only moves bytes.

Requests go straight to httpx *transports* (a sync set per provider, an async set
per provider and event loop, since an async pool cannot cross loops; see
:mod:`.shards` for why a set) rather than through ``httpx.Client``. A router sits
on every call, and the client layer (URL merging, cookies, auth and redirect flows,
event hooks) costs more per request than all of our routing while doing nothing we
use: the URL, headers and timeouts of a model are fixed, so they are prepared once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import httpx

from .. import __version__
from ..errors import ErrorKind, ProviderError, provider_error
from ..types import CompletionChunk, CompletionRequest
from .base import (
    AsyncProviderStream,
    ProviderReply,
    ProviderStream,
    StreamTimer,
    Timeouts,
    sse_chunks,
)
from .shards import Lease, Shards
from .watchdog import WATCHDOG
from .wire import SSEDecoder, build_payload, classify_error, parse_completion, parse_rate_limits

__all__ = ["OpenAICompatibleProvider"]

_PATH = "/chat/completions"
_DRAIN_GRACE = 0.1
"""Seconds a stream waits after ``[DONE]`` for the body's end (which keeps the connection)."""
_USER_AGENT = f"modelmesh-lite/{__version__} python-httpx/{httpx.__version__}"


def _map_transport_error(exc: httpx.HTTPError, timeouts: Timeouts) -> ProviderError:
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


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _encode(payload: dict[str, Any]) -> bytes:
    """JSON the way httpx encodes ``json=`` bodies (compact, UTF-8, no NaN)."""
    return _JSON.encode(payload).encode()


def _reveal(secret: Any) -> str | None:
    """The plain value of a SecretStr (or a str); None when empty."""
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    return value or None


def _password(url: str | None) -> str | None:
    return httpx.URL(url).password if url else None


class OpenAICompatibleProvider:
    """Speaks ``POST {base_url}/chat/completions``. The API key never leaves the headers."""

    def __init__(
        self,
        provider_id: str,
        *,
        base_url: str,
        api_key: Any = None,
        headers: Mapping[str, str] | None = None,
        verify_tls: bool = True,
        max_connections: int = 100,
        proxy: Any = None,
    ) -> None:
        self.provider_id = provider_id
        self.base_url = base_url.rstrip("/")
        self._url = httpx.URL(self.base_url + _PATH)
        self._secret: str | None = _reveal(api_key)
        self._proxy: str | None = _reveal(proxy)
        # Whatever could echo back into an error message: the key, the proxy's password.
        self._hidden = [s for s in (self._secret, _password(self._proxy)) if s]
        self._headers = httpx.Headers(
            {
                "accept-encoding": "gzip, deflate",
                "user-agent": _USER_AGENT,
                "content-type": "application/json",
                **(headers or {}),
            }
        )
        if self._secret:
            self._headers["authorization"] = f"Bearer {self._secret}"
        self._verify = verify_tls
        self._max_connections = max_connections
        self._sync: Shards[httpx.HTTPTransport] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, Shards[httpx.AsyncHTTPTransport]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self.provider_id!r}, base_url={self.base_url!r})"

    # --- connection pools ------------------------------------------------------------
    def _transport_options(self, limit: int) -> dict[str, Any]:
        # Keep-alive as large as the pool: httpcore then never evicts an idle connection
        # that a queued request was just handed (encode/httpcore#1110).
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        return {"verify": self._verify, "limits": limits, "trust_env": False, "proxy": self._proxy}

    def _sync_shards(self) -> Shards[httpx.HTTPTransport]:
        shards = self._sync
        if shards is None:
            with self._lock:
                if self._sync is None:
                    self._sync = Shards(
                        lambda n: httpx.HTTPTransport(**self._transport_options(n)),
                        self._max_connections,
                    )
                shards = self._sync
        return shards

    def _async_shards(self) -> Shards[httpx.AsyncHTTPTransport]:
        loop = asyncio.get_running_loop()
        shards = self._async.get(loop)
        if shards is None:
            with self._lock:
                shards = self._async.get(loop)
                if shards is None:
                    shards = Shards(
                        lambda n: httpx.AsyncHTTPTransport(**self._transport_options(n)),
                        self._max_connections,
                    )
                    self._async[loop] = shards
        return shards

    def close(self) -> None:
        """Close the sync connection pools (async pools close with :meth:`aclose`)."""
        with self._lock:
            shards, self._sync = self._sync, None
        for transport in shards.transports if shards is not None else ():
            transport.close()

    async def aclose(self) -> None:
        """Close this event loop's async pools and the sync pools."""
        shards = self._async.pop(asyncio.get_running_loop(), None)
        for transport in shards.transports if shards is not None else ():
            await transport.aclose()
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

    def _reply(self, status: int, headers: httpx.Headers, body: bytes) -> ProviderReply:
        if status >= 400:
            raise self._error(status, headers, body)
        try:
            parsed = parse_completion(body)
        except ProviderError as err:
            raise self._redact(err) from None
        return ProviderReply(parsed, parse_rate_limits(headers))

    def _request(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts, stream: bool
    ) -> httpx.Request:
        read = timeouts.first_token if stream else timeouts.total
        return httpx.Request(
            "POST",
            self._url,
            headers=self._headers,
            content=_encode(build_payload(request, model_name, stream=stream)),
            extensions={"timeout": dict(_timeout_extension(timeouts, read))},
        )

    def _error(self, status: int, headers: httpx.Headers, body: bytes) -> ProviderError:
        return self._redact(classify_error(status, headers, body))

    # --- non-streaming ------------------------------------------------------------
    def complete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        lease = self._sync_shards().lease()
        try:
            resp = lease.transport.handle_request(
                self._request(model_name, request, timeouts, False)
            )
            try:
                body = resp.read()
            finally:
                resp.close()
        except httpx.HTTPError as exc:
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        finally:
            lease.release()
        return self._reply(resp.status_code, resp.headers, body)

    async def acomplete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        lease = self._async_shards().lease()
        try:
            resp = await lease.transport.handle_async_request(
                self._request(model_name, request, timeouts, False)
            )
            try:
                body = await resp.aread()
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        finally:
            lease.release()
        return self._reply(resp.status_code, resp.headers, body)

    # --- streaming ------------------------------------------------------------------
    def stream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderStream:
        timer = StreamTimer(timeouts)
        httpx_request = self._request(model_name, request, timeouts, True)
        lease = self._sync_shards().lease()
        try:
            resp = lease.transport.handle_request(httpx_request)
            if resp.status_code >= 400:
                try:
                    body = resp.read()
                except httpx.HTTPError:
                    body = b""
                finally:
                    resp.close()
                raise self._error(resp.status_code, resp.headers, body)
        except httpx.HTTPError as exc:
            lease.release()
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        except BaseException:
            lease.release()
            raise
        # From here the watchdog enforces first-token/stall; httpx's read timeout is a backstop.
        httpx_request.extensions["timeout"]["read"] = timeouts.total
        return _SyncStream(self, resp, timer, lease)

    async def astream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> AsyncProviderStream:
        timer = StreamTimer(timeouts)
        httpx_request = self._request(model_name, request, timeouts, True)
        lease = self._async_shards().lease()
        try:
            resp = await lease.transport.handle_async_request(httpx_request)
            if resp.status_code >= 400:
                try:
                    body = await resp.aread()
                except httpx.HTTPError:
                    body = b""
                finally:
                    await resp.aclose()
                raise self._error(resp.status_code, resp.headers, body)
        except httpx.HTTPError as exc:
            lease.release()
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        except BaseException:
            lease.release()
            raise
        httpx_request.extensions["timeout"]["read"] = timeouts.total
        return _AsyncStream(self, resp, timer, lease)


class _Decoding:
    """What both stream classes decide about the bytes they read, sans I/O."""

    done: bool
    _timer: StreamTimer

    def _deadline(self, now: float) -> float:
        """Until when the next read may wait: the stream's timeouts, or after ``[DONE]`` a
        short grace for the end of the body (a server that holds it open costs its
        connection, not the caller's time)."""
        if self.done:
            return now + _DRAIN_GRACE
        return self._timer.deadline(now)

    def _decode(self, decoder: SSEDecoder, raw: bytes | None) -> Iterator[CompletionChunk]:
        """The chunks in ``raw``. After ``[DONE]`` the rest of the body is still read (and
        ignored): a response closed before its end takes its connection with it, so every
        stream would cost a new connection, and a TLS handshake."""
        if self.done:
            return
        for chunk in sse_chunks(decoder, raw):
            if chunk is None:
                self.done = True
                return
            self._timer.saw(chunk)
            yield chunk


class _SyncStream(_Decoding, ProviderStream):
    def __init__(
        self,
        provider: OpenAICompatibleProvider,
        resp: httpx.Response,
        timer: StreamTimer,
        lease: Lease[Any],
    ) -> None:
        self._provider = provider
        self._resp = resp
        self._timer = timer
        self._lease = lease
        self.rate_limits = parse_rate_limits(resp.headers)
        self._chunks = self._run()

    def __next__(self) -> CompletionChunk:
        return next(self._chunks)

    def _run(self):
        timer, resp = self._timer, self._resp
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        guard = WATCHDOG.guard(sock)
        decoder = SSEDecoder()
        raw_iter = resp.iter_raw()
        try:
            while True:
                guard.deadline = self._deadline(time.monotonic())
                try:
                    raw = next(raw_iter, None)
                except httpx.HTTPError as exc:
                    if self.done:  # the answer was complete; only the connection is lost
                        return
                    if guard.fired:
                        raise timer.expired(time.monotonic()) from None
                    raise _map_transport_error(exc, timer.timeouts) from None
                guard.deadline = None
                yield from self._decode(decoder, raw)
                if raw is None:
                    return
        except ProviderError as err:
            raise self._provider._redact(err) from None
        finally:
            WATCHDOG.release(guard)
            raw_iter.close()
            resp.close()
            self._lease.release()

    def close(self) -> None:
        self._chunks.close()
        self._resp.close()
        self._lease.release()


class _AsyncStream(_Decoding, AsyncProviderStream):
    def __init__(
        self,
        provider: OpenAICompatibleProvider,
        resp: httpx.Response,
        timer: StreamTimer,
        lease: Lease[Any],
    ) -> None:
        self._provider = provider
        self._resp = resp
        self._timer = timer
        self._lease = lease
        self.rate_limits = parse_rate_limits(resp.headers)
        self._chunks = self._run()

    async def __anext__(self) -> CompletionChunk:
        return await self._chunks.__anext__()

    async def _run(self):
        timer, resp = self._timer, self._resp
        loop = asyncio.get_running_loop()
        decoder = SSEDecoder()
        raw_iter = resp.aiter_raw()
        try:
            while True:
                now = time.monotonic()
                deadline = loop.time() + (self._deadline(now) - now)
                try:
                    async with asyncio.timeout_at(deadline):
                        raw = await anext(raw_iter, None)
                except (TimeoutError, httpx.HTTPError) as exc:
                    if self.done:  # the answer was complete; only the connection is lost
                        return
                    if isinstance(exc, TimeoutError):
                        raise timer.expired(time.monotonic()) from None
                    raise _map_transport_error(exc, timer.timeouts) from None
                for chunk in self._decode(decoder, raw):
                    yield chunk
                if raw is None:
                    return
        except ProviderError as err:
            raise self._provider._redact(err) from None
        finally:
            # Closed here, not left to the garbage collector: a suspended async generator
            # is finalised by a task the event loop schedules later, outliving the request.
            await raw_iter.aclose()
            await resp.aclose()
            self._lease.release()

    async def aclose(self) -> None:
        await self._chunks.aclose()
        await self._resp.aclose()
        self._lease.release()
