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

Transports are cheap to build, so a first call, and the first call in each new event loop
(``asyncio.run`` per request), costs what a bare httpx call costs: the TLS context, the
one expensive part (loading the CA bundle), is built once per process and verification
setting and shared by every transport, sync or async, and none is built for a plain
``http://`` provider. An event loop's pools close when the loop shuts down
(``asyncio.run`` and ``asyncio.Runner`` finalise the async generators still open, and one
per loop is there to close its pools), or, for a loop closed without that step, at the
next new loop or :meth:`~OpenAICompatibleProvider.close`, which closes every loop's pools.

What comes back is bounded in time and size: every read of an attempt runs under its
wall-clock deadline (:mod:`.watchdog`), and bodies are inflated and counted
against the provider's :class:`~.base.Limits` as they arrive (:mod:`.decoding`), so a
trickle, a decompression bomb or an endless line costs one attempt and fails over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
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
    total_expired,
)
from ._decoding import BodyDecoder
from ._shards import Shards
from ._streams import AsyncStream, SyncStream, map_transport_error
from ._watchdog import IO_DEADLINE, Deadline, install, network_backend
from ._wire import build_payload, classify_error, parse_completion, parse_rate_limits

__all__ = ["OpenAICompatibleProvider"]

_PATH = "/chat/completions"
_USER_AGENT = f"modelmesh-lite/{__version__} python-httpx/{httpx.__version__}"
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|session|signature|password", re.I)
"""Names of extra headers whose values are kept out of error messages."""


def _deadline_error(
    exc: httpx.HTTPError, timeouts: Timeouts, deadline: Deadline, stream: bool
) -> ProviderError:
    """Like :func:`.streams.map_transport_error`, naming the attempt's deadline when that is
    what ended it (the I/O deadline fires as httpcore's ReadTimeout)."""
    if not isinstance(exc, httpx.ReadTimeout) or not deadline.passed():
        return map_transport_error(exc, timeouts)
    return StreamTimer.opening_expired(timeouts) if stream else total_expired(timeouts)


_TLS: dict[bool, ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


def _tls_context(verify: bool) -> ssl.SSLContext:
    """The TLS context of every transport that verifies (or not) certificates: built once
    per process, as httpx builds it (certifi's CA bundle, no environment).

    Loading the CA bundle is most of what building a transport costs (15-90 ms, against a
    few microseconds for the rest), and the context is read-only once built, so transports,
    event loops and providers share it. Threads that need it while it is being built wait
    for it, since they would otherwise build their own; nobody else takes this lock.
    """
    context = _TLS.get(verify)
    if context is None:
        with _TLS_LOCK:
            context = _TLS.get(verify)
            if context is None:
                context = _TLS[verify] = httpx.create_ssl_context(verify=verify, trust_env=False)
    return context


@lru_cache(maxsize=1)
def _no_tls() -> ssl.SSLContext:
    """The context handed to the transports of a plain-HTTP provider (httpx wants one).

    Never used: the URL is fixed and redirects are not followed. Were it used, it would fail
    closed: it verifies certificates and trusts no authority.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _LoopPools:
    """One event loop's transports, and how they close with it.

    :meth:`close_with_loop` starts an async generator that does nothing but wait: the loop
    registers it (its first-iteration hook), and its shutdown (``loop.shutdown_asyncgens()``,
    which ``asyncio.run``, ``asyncio.Runner``, anyio and pytest-asyncio run before closing a
    loop) finalises it, inside the loop, where its ``finally`` awaits the transports' close.
    Nothing global is patched. A loop closed without that step is caught by :meth:`drop`.
    """

    __slots__ = ("_closer", "_owner", "closed", "loop", "shards")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        shards: Shards[httpx.AsyncHTTPTransport],
        owner: weakref.ref[OpenAICompatibleProvider],
    ) -> None:
        self.loop = loop
        self.shards = shards
        self.closed = False
        self._owner = owner
        self._closer: Any = None

    def close_with_loop(self) -> None:
        """Have the loop's shutdown close these pools (see the class docstring)."""
        if sys.get_asyncgen_hooks().firstiter is None:
            return  # a loop that does not track async generators: drop() it is
        closer = _close_at_shutdown(self)
        # Runs the generator up to its ``yield`` without awaiting anything (so this stays a
        # plain function): StopIteration is that first step completing.
        with contextlib.suppress(StopIteration):
            closer.asend(None).send(None)
        self._closer = closer

    async def aclose(self) -> None:
        """Close the transports, awaiting their connections (on this loop)."""
        if self.closed:
            return
        self.closed = True
        owner = self._owner()
        if owner is not None:
            owner._forget(self)
        for transport in self.shards.transports:
            await transport.aclose()
        self._finish()

    def drop(self) -> None:
        """Close the transports without awaiting the loop (from any thread).

        A closed loop's sockets, and a loop's that is not running, close here and now; a
        loop running on this thread closes them on its next turn; a loop running on another
        thread is asked to, thread-safely.
        """
        if self.closed:
            return
        self.closed = True
        loop = self.loop
        backends = [network_backend(t) for t in self.shards.transports]
        if loop.is_running() and _running_loop() is not loop:
            try:
                loop.call_soon_threadsafe(_drop_all, backends, loop)
            except RuntimeError:  # closed in the meantime
                _drop_all(backends, loop)
        else:
            _drop_all(backends, loop)
        self._finish()

    def _finish(self) -> None:
        """End the shutdown generator, so that nothing is left for the loop to finalise
        (a generator the collector finds unfinished would be handed to its loop, closed
        or not)."""
        closer, self._closer = self._closer, None
        if closer is not None:
            step = closer.aclose()
            try:
                step.send(None)  # its ``finally`` sees ``closed`` and returns at once
            except (StopIteration, RuntimeError):  # done; or the loop is finalising it now
                pass
            else:  # cannot happen (nothing is awaited); never leave it half-run
                step.close()


def _drop_all(backends: list[Any], loop: asyncio.AbstractEventLoop) -> None:
    for backend in backends:
        backend.drop_connections(loop)


async def _close_at_shutdown(pools: _LoopPools) -> AsyncIterator[None]:
    """Waits at its ``yield`` until the loop shuts down (or :meth:`_LoopPools._finish`)."""
    try:
        yield
    finally:
        if not pools.closed:
            pools._closer = None  # being finalised by the loop itself
            await pools.aclose()


def _drop_closed_loops(
    loops: dict[asyncio.AbstractEventLoop, _LoopPools], lock: threading.Lock
) -> None:
    """The finaliser of a provider collected without close(): the pools of loops that are
    closed release their sockets (an open loop finalises its generator, which closes them)."""
    with lock:
        stale = [p for loop, p in loops.items() if loop.is_closed()]
    for pools in stale:
        pools.drop()


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
        # A plain dict, not weak: a loop's transports refer to it, so a weak key would never
        # go while the pools are there. Entries leave when the loop shuts down, or when it
        # is found closed (at the next new loop, and in close()).
        self._async: dict[asyncio.AbstractEventLoop, _LoopPools] = {}
        self._lock = threading.Lock()
        # A provider dropped without close(): the pools of loops that will never run again
        # still release their sockets (the others close with their loop).
        self._finalizer = weakref.finalize(self, _drop_closed_loops, self._async, self._lock)
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self.provider_id!r}, base_url={self._shown!r})"

    # --- connection pools ------------------------------------------------------------
    def _transport_options(self) -> Callable[[int], dict[str, Any]]:
        """The options of this provider's transports, by connection limit.

        The TLS context is built here, once and outside any lock, when the URL or the
        proxy is https; a plain-HTTP provider gets the inert :func:`_no_tls` context.
        """
        context = _tls_context(self._verify) if self._url.scheme == "https" else _no_tls()
        proxy: Any = self._proxy
        if proxy is not None and httpx.URL(proxy).scheme == "https":
            # httpcore would otherwise load the CA bundle for every connection to the proxy.
            proxy = httpx.Proxy(proxy, ssl_context=_tls_context(True))

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

    def _async_shards(self) -> Shards[httpx.AsyncHTTPTransport]:
        loop = asyncio.get_running_loop()
        pools = self._async.get(loop)
        if pools is None or pools.closed:
            pools = self._new_loop_pools(loop)
        return pools.shards

    def _new_loop_pools(self, loop: asyncio.AbstractEventLoop) -> _LoopPools:
        """This loop's pools, closed when the loop shuts down; the pools of loops found
        closed meanwhile (closed without shutting down) are closed here."""
        options = self._transport_options()
        shards = Shards(
            lambda n: install(httpx.AsyncHTTPTransport(**options(n))), self._max_connections
        )
        pools = _LoopPools(loop, shards, weakref.ref(self))
        with self._lock:
            stale = [p for other, p in self._async.items() if other.is_closed()]
            for p in stale:
                del self._async[p.loop]
            self._async[loop] = pools
        for p in stale:
            p.drop()
        pools.close_with_loop()
        return pools

    def _forget(self, pools: _LoopPools) -> None:
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
        body = _Body(self._body_decoder(resp))
        for raw in resp.iter_raw():
            if body.feed(raw):
                break
        return body.result()

    async def _aread(self, resp: httpx.Response) -> bytes:
        """:meth:`_read`, awaiting."""
        body = _Body(self._body_decoder(resp))
        async for raw in resp.aiter_raw():
            if body.feed(raw):
                break
        return body.result()

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
            raise self._redact(_deadline_error(exc, timeouts, deadline, False)) from None
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
            raise self._redact(_deadline_error(exc, timeouts, deadline, False)) from None
        except ProviderError as err:
            raise self._redact(err) from None
        finally:
            IO_DEADLINE.reset(token)
            lease.release()
        return self._reply(resp.status_code, resp.headers, body)

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
        return SyncStream(resp, timer, lease, self._limits, self._redact)

    async def astream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> AsyncProviderStream:
        httpx_request = self._request(model_name, request, timeouts, True)
        lease = self._async_shards().lease()
        deadline = Deadline(budget=min(timeouts.first_token, timeouts.total))
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
            raise self._redact(_deadline_error(exc, timeouts, deadline, True)) from None
        except BaseException:
            lease.release()
            raise
        finally:
            IO_DEADLINE.reset(token)
        httpx_request.extensions["timeout"]["read"] = timeouts.total
        timer = StreamTimer(timeouts, deadline.sent)
        return AsyncStream(resp, timer, lease, self._limits, self._redact)


class _Body:
    """A body being read, sans I/O: what both read loops share. An error body that
    does not decode is classified as it is; an answer that does not is malformed."""

    def __init__(self, decoder: BodyDecoder) -> None:
        self._decoder = decoder
        self._parts: list[bytes] = []
        self._failed = False

    def feed(self, raw: bytes) -> bool:
        """Take some raw bytes; True when enough was read (a truncated error body)."""
        if self._failed:
            return True
        try:
            self._parts.append(self._decoder.feed(raw))
        except MalformedResponseError:
            if not self._decoder.truncate:
                raise
            self._failed = True
            return True
        return self._decoder.full

    def result(self) -> bytes:
        if not self._failed and not self._decoder.full:
            try:
                self._parts.append(self._decoder.flush())
            except MalformedResponseError:
                if not self._decoder.truncate:
                    raise
        return b"".join(self._parts)
