"""An OpenAI-compatible provider over httpx.

Covers OpenAI and every service that speaks its chat-completions API through
``base_url``: Groq, Together, OpenRouter, DeepSeek, Mistral, Ollama, vLLM,
llama.cpp's server, LM Studio. One pooled sync client per provider, and one
pooled async client per provider and event loop (an httpx AsyncClient cannot
cross loops). All parsing lives in :mod:`.wire`; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import httpx

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
from .watchdog import WATCHDOG
from .wire import SSEDecoder, build_payload, classify_error, parse_completion, parse_rate_limits

__all__ = ["OpenAICompatibleProvider"]

_PATH = "/chat/completions"


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
def _httpx_timeout(timeouts: Timeouts, read: float) -> httpx.Timeout:
    """httpx's timeout for an attempt (cached: a model's timeouts do not change)."""
    # Waiting for a free pooled connection is our own queue, not the provider's fault.
    return httpx.Timeout(
        connect=timeouts.connect, read=read, write=timeouts.connect, pool=timeouts.total
    )


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
    ) -> None:
        self.provider_id = provider_id
        self.base_url = base_url.rstrip("/")
        secret = api_key.get_secret_value() if hasattr(api_key, "get_secret_value") else api_key
        self._secret: str | None = secret or None
        self._headers = {"content-type": "application/json", **(headers or {})}
        if self._secret:
            self._headers["authorization"] = f"Bearer {self._secret}"
        self._verify = verify_tls
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: httpx.Client | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self.provider_id!r}, base_url={self.base_url!r})"

    # --- clients --------------------------------------------------------------
    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        base_url=self.base_url,
                        headers=self._headers,
                        verify=self._verify,
                        limits=self._limits,
                        trust_env=False,
                    )
                client = self._client
        return client

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            with self._lock:
                client = self._aclients.get(loop)
                if client is None:
                    client = httpx.AsyncClient(
                        base_url=self.base_url,
                        headers=self._headers,
                        verify=self._verify,
                        limits=self._limits,
                        trust_env=False,
                    )
                    self._aclients[loop] = client
        return client

    def close(self) -> None:
        """Close the sync connection pool (async pools close with :meth:`aclose`)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this event loop's async pool and the sync pool."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    # --- shared helpers ---------------------------------------------------------
    def _redact(self, err: ProviderError) -> ProviderError:
        """Never let a provider echo the key back into an error message."""
        if self._secret and self._secret in err.message:
            err.message = err.message.replace(self._secret, "***")
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
        self,
        client: httpx.Client | httpx.AsyncClient,
        model_name: str,
        request: CompletionRequest,
        timeouts: Timeouts,
        stream: bool,
    ) -> httpx.Request:
        read = timeouts.first_token if stream else timeouts.total
        return client.build_request(
            "POST",
            _PATH,
            json=build_payload(request, model_name, stream=stream),
            timeout=_httpx_timeout(timeouts, read),
        )

    def _error(self, status: int, headers: httpx.Headers, body: bytes) -> ProviderError:
        return self._redact(classify_error(status, headers, body))

    # --- non-streaming ------------------------------------------------------------
    def complete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        client = self._sync_client()
        try:
            resp = client.send(self._request(client, model_name, request, timeouts, False))
        except httpx.HTTPError as exc:
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        return self._reply(resp.status_code, resp.headers, resp.content)

    async def acomplete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        client = self._async_client()
        try:
            resp = await client.send(self._request(client, model_name, request, timeouts, False))
        except httpx.HTTPError as exc:
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        return self._reply(resp.status_code, resp.headers, resp.content)

    # --- streaming ------------------------------------------------------------------
    def stream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderStream:
        client = self._sync_client()
        timer = StreamTimer(timeouts)
        try:
            resp = client.send(
                self._request(client, model_name, request, timeouts, True), stream=True
            )
        except httpx.HTTPError as exc:
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        if resp.status_code >= 400:
            try:
                body = resp.read()
            except httpx.HTTPError:
                body = b""
            finally:
                resp.close()
            raise self._error(resp.status_code, resp.headers, body)
        # From here the watchdog enforces first-token/stall; httpx's read timeout is a backstop.
        resp.request.extensions["timeout"]["read"] = timeouts.total
        return _SyncStream(self, resp, timer)

    async def astream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> AsyncProviderStream:
        client = self._async_client()
        timer = StreamTimer(timeouts)
        try:
            resp = await client.send(
                self._request(client, model_name, request, timeouts, True), stream=True
            )
        except httpx.HTTPError as exc:
            raise self._redact(_map_transport_error(exc, timeouts)) from None
        if resp.status_code >= 400:
            try:
                body = await resp.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await resp.aclose()
            raise self._error(resp.status_code, resp.headers, body)
        resp.request.extensions["timeout"]["read"] = timeouts.total
        return _AsyncStream(self, resp, timer)


class _SyncStream(ProviderStream):
    def __init__(
        self, provider: OpenAICompatibleProvider, resp: httpx.Response, timer: StreamTimer
    ) -> None:
        self._provider = provider
        self._resp = resp
        self._timer = timer
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
                guard.deadline = timer.deadline(time.monotonic())
                try:
                    raw = next(raw_iter, None)
                except httpx.HTTPError as exc:
                    if guard.fired:
                        raise timer.expired(time.monotonic()) from None
                    raise _map_transport_error(exc, timer.timeouts) from None
                guard.deadline = None
                for chunk in sse_chunks(decoder, raw):
                    if chunk is None:
                        self.done = True
                        return
                    timer.saw(chunk)
                    yield chunk
                if raw is None:
                    return
        except ProviderError as err:
            raise self._provider._redact(err) from None
        finally:
            WATCHDOG.release(guard)
            resp.close()

    def close(self) -> None:
        self._chunks.close()
        self._resp.close()


class _AsyncStream(AsyncProviderStream):
    def __init__(
        self, provider: OpenAICompatibleProvider, resp: httpx.Response, timer: StreamTimer
    ) -> None:
        self._provider = provider
        self._resp = resp
        self._timer = timer
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
                deadline = loop.time() + (timer.deadline(now) - now)
                try:
                    async with asyncio.timeout_at(deadline):
                        raw = await anext(raw_iter, None)
                except TimeoutError:
                    raise timer.expired(time.monotonic()) from None
                except httpx.HTTPError as exc:
                    raise _map_transport_error(exc, timer.timeouts) from None
                for chunk in sse_chunks(decoder, raw):
                    if chunk is None:
                        self.done = True
                        return
                    timer.saw(chunk)
                    yield chunk
                if raw is None:
                    return
        except ProviderError as err:
            raise self._provider._redact(err) from None
        finally:
            await resp.aclose()

    async def aclose(self) -> None:
        await self._chunks.aclose()
        await self._resp.aclose()
