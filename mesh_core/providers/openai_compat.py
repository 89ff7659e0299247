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

What comes back is bounded in time and size: every read of an attempt runs under its
wall-clock deadline (:mod:`.watchdog`), and bodies are inflated and counted
against the provider's :class:`~.base.Limits` as they arrive (:mod:`.decoding`), so a
trickle, a decompression bomb or an endless line costs one attempt and fails over.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import weakref
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import httpx

from .. import __version__
from ..errors import MalformedResponseError, ProviderError, ProviderTimeoutError
from ..types import CompletionRequest
from .base import (
    AsyncProviderStream,
    Limits,
    ProviderReply,
    ProviderStream,
    StreamTimer,
    Timeouts,
)
from .decoding import BodyDecoder
from .shards import Shards
from .streams import AsyncStream, SyncStream, map_transport_error
from .watchdog import IO_DEADLINE, Deadline, install
from .wire import build_payload, classify_error, parse_completion, parse_rate_limits

__all__ = ["OpenAICompatibleProvider"]

_PATH = "/chat/completions"
_USER_AGENT = f"modelmesh-lite/{__version__} python-httpx/{httpx.__version__}"
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|session|signature|password", re.I)
"""Names of extra headers whose values are kept out of error messages."""


def _deadline_error(
    exc: httpx.HTTPError, timeouts: Timeouts, deadline: Deadline, timer: StreamTimer | None
) -> ProviderError:
    """Like :func:`.streams.map_transport_error`, naming the attempt's deadline when that is
    what ended it (the I/O deadline fires as httpcore's ReadTimeout)."""
    if not isinstance(exc, httpx.ReadTimeout) or not deadline.passed():
        return map_transport_error(exc, timeouts)
    if timer is not None:
        return timer.expired(time.monotonic())
    return ProviderTimeoutError(
        f"no complete answer within {timeouts.total:g}s (total timeout)",
        timeout_seconds=timeouts.total,
    )


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


def _basic(username: str, password: str) -> str:
    """The token of ``Authorization: Basic`` (as httpx builds it, for proxies too)."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _credentials(url: str | None) -> list[str]:
    """What of a URL's userinfo must never be shown: the password (or a lone user name,
    which is then a token) and the basic token made of them."""
    if not url:
        return []
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return []
    user, password = parsed.username, parsed.password
    return [s for s in (password or user, _basic(user, password)) if s]


def _shown_url(url: httpx.URL) -> str:
    """A URL fit for a repr: no userinfo (already stripped), and no query values."""
    shown = str(url.copy_with(query=None)).rstrip("/")
    return shown + ("?***" if url.query else "")


class OpenAICompatibleProvider:
    """Speaks ``POST {base_url}/chat/completions``.

    Credentials never leave the request headers: the API key (a bearer token), userinfo in
    ``base_url`` (sent as HTTP basic auth, and stripped from the URL: a repr never shows
    it; an API key as well is refused, both would be the Authorization header), the
    proxy's credentials and the values of extra headers named like secrets. Each of them
    is replaced by ``***`` in any error message a provider or proxy echoes it into.
    """

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
        limits: Limits | None = None,
    ) -> None:
        self.provider_id = provider_id
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
        self._url = url.copy_with(path=url.path.rstrip("/") + _PATH)
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
        if self._secret:
            self._headers["authorization"] = f"Bearer {self._secret}"
        elif basic:
            self._headers["authorization"] = f"Basic {basic}"
        # Whatever could echo back into an error message, longest first.
        hidden = [self._secret, *_credentials(str(base_url)), *_credentials(self._proxy)]
        hidden += [
            v for k, v in (headers or {}).items() if _SECRET_HEADER.search(k) and len(v) >= 4
        ]
        self._hidden = sorted({s for s in hidden if s}, key=len, reverse=True)
        self._verify = verify_tls
        self._max_connections = max_connections
        self._sync: Shards[httpx.HTTPTransport] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, Shards[httpx.AsyncHTTPTransport]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self.provider_id!r}, base_url={self._shown!r})"

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
                        lambda n: install(httpx.HTTPTransport(**self._transport_options(n))),
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
                        lambda n: install(httpx.AsyncHTTPTransport(**self._transport_options(n))),
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

    def _body_decoder(self, resp: httpx.Response) -> BodyDecoder:
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
        decoder = self._body_decoder(resp)
        parts = []
        try:
            for raw in resp.iter_raw():
                parts.append(decoder.feed(raw))
                if decoder.full:
                    return b"".join(parts)
            parts.append(decoder.flush())
        except MalformedResponseError:
            if not decoder.truncate:
                raise
        return b"".join(parts)  # an error body that does not decode: classified as it is

    async def _aread(self, resp: httpx.Response) -> bytes:
        """:meth:`_read`, awaiting."""
        decoder = self._body_decoder(resp)
        parts = []
        try:
            async for raw in resp.aiter_raw():
                parts.append(decoder.feed(raw))
                if decoder.full:
                    return b"".join(parts)
            parts.append(decoder.flush())
        except MalformedResponseError:
            if not decoder.truncate:
                raise
        return b"".join(parts)

    # --- non-streaming ------------------------------------------------------------
    # The reply, headers and body, is read under one wall-clock deadline, ``total`` from when
    # the request went out: no trickle of bytes, no stream of ``100 Continue`` holds it longer.
    def complete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        httpx_request = self._request(model_name, request, timeouts, False)
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
            raise self._redact(_deadline_error(exc, timeouts, deadline, None)) from None
        except ProviderError as err:
            raise self._redact(err) from None
        finally:
            IO_DEADLINE.reset(token)
            lease.release()
        return self._reply(resp.status_code, resp.headers, body)

    async def acomplete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        httpx_request = self._request(model_name, request, timeouts, False)
        deadline = Deadline(budget=timeouts.total)
        lease = self._async_shards().lease()
        token = IO_DEADLINE.set(deadline)
        try:
            resp = await lease.transport.handle_async_request(httpx_request)
            try:
                body = await self._aread(resp)
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            raise self._redact(_deadline_error(exc, timeouts, deadline, None)) from None
        except ProviderError as err:
            raise self._redact(err) from None
        finally:
            IO_DEADLINE.reset(token)
            lease.release()
        return self._reply(resp.status_code, resp.headers, body)

    # --- streaming ------------------------------------------------------------------
    # Until the headers are in (and an error reply's body), the first-token deadline (capped
    # by ``total``) is the I/O deadline; then the stream's own deadlines take over.
    def stream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderStream:
        timer = StreamTimer(timeouts)
        httpx_request = self._request(model_name, request, timeouts, True)
        deadline = Deadline(at=timer.deadline(time.monotonic()))
        lease = self._sync_shards().lease()
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
            raise self._redact(_deadline_error(exc, timeouts, deadline, timer)) from None
        except BaseException:
            lease.release()
            raise
        finally:
            IO_DEADLINE.reset(token)
        # From here the watchdog enforces first-token/stall; httpx's read timeout is a backstop.
        httpx_request.extensions["timeout"]["read"] = timeouts.total
        return SyncStream(resp, timer, lease, self._limits, self._redact)

    async def astream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> AsyncProviderStream:
        timer = StreamTimer(timeouts)
        httpx_request = self._request(model_name, request, timeouts, True)
        deadline = Deadline(at=timer.deadline(time.monotonic()))
        lease = self._async_shards().lease()
        token = IO_DEADLINE.set(deadline)
        try:
            resp = await lease.transport.handle_async_request(httpx_request)
            if resp.status_code >= 400:
                try:
                    body = await self._aread(resp)
                finally:
                    await resp.aclose()
                raise self._error(resp.status_code, resp.headers, body)
        except httpx.HTTPError as exc:
            lease.release()
            raise self._redact(_deadline_error(exc, timeouts, deadline, timer)) from None
        except BaseException:
            lease.release()
            raise
        finally:
            IO_DEADLINE.reset(token)
        httpx_request.extensions["timeout"]["read"] = timeouts.total
        return AsyncStream(resp, timer, lease, self._limits, self._redact)
