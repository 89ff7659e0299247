"""The provider interface and what every provider shares: timeouts, replies, stream timing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from .._errors import ErrorKind, ProviderTimeoutError, provider_error
from .._types import CompletionChunk, CompletionRequest, EmbeddingRequest
from ._embeddings import EmbeddingReply
from ._reply import ParsedResponse, RateLimitInfo
from ._sse import SSEDecoder
from ._wire import DONE, parse_chunk

__all__ = [
    "AsyncProviderStream",
    "EmbeddingProvider",
    "Limits",
    "Provider",
    "ProviderReply",
    "ProviderStream",
    "StreamTimer",
    "Timeouts",
    "can_embed",
    "embedder",
    "encode_json",
    "sse_chunks",
    "total_expired",
]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Limits of one attempt, in seconds. ``first_token`` and ``total`` are wall-clock
    deadlines, not socket timeouts: a server that trickles bytes, or sends interim
    ``100 Continue`` responses forever, is held to them all the same."""

    connect: float = 5.0
    first_token: float = 30.0
    """Streaming: until the first token arrives (the headers, and an error reply, too).
    Non-streaming: not used (see ``total``)."""
    stall: float = 30.0
    """Streaming: the longest silence allowed between two chunks."""
    total: float = 300.0
    """The whole attempt: headers and body; for a non-streaming call, the complete answer."""

    def merged(self, override: Any) -> Timeouts:
        """These timeouts with the non-None fields of ``override`` (a TimeoutsConfig) applied."""
        if override is None:
            return self
        changes = {
            k: getattr(override, k)
            for k in ("connect", "first_token", "stall", "total")
            if getattr(override, k, None) is not None
        }
        return replace(self, **changes) if changes else self


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what one provider may send back, in decompressed bytes
    (``providers.<id>.limits``). Past one, the reply is a MalformedResponseError: it counts
    against the model and the mesh fails over, so a hostile or broken provider costs one
    attempt, never the process's memory."""

    max_response_bytes: int = 32 << 20
    """A whole answer, plain or streamed."""
    max_error_bytes: int = 64 << 10
    """Read of an error reply to classify it (the rest is never read, nor inflated)."""
    max_sse_line_bytes: int = 4 << 20
    """One line, and one event, of a stream."""

    @classmethod
    def of(cls, config: Any) -> Limits:
        """From a ``LimitsConfig`` (or None: the defaults)."""
        if config is None:
            return cls()
        return cls(
            int(config.max_response_bytes),
            int(config.max_error_bytes),
            int(config.max_sse_line_bytes),
        )


@dataclass(frozen=True, slots=True)
class ProviderReply:
    """What a non-streaming call gives the router, whatever the dialect."""

    response: ParsedResponse
    rate_limits: RateLimitInfo | None = None


class StreamTimer:
    """Deadlines of a streaming attempt: first token, then stall between chunks, and total,
    all measured from ``start``, when the request was sent (not from before the connection
    pools were built, or a connection made: that is this process's time, not the provider's).

    Pure bookkeeping on a monotonic clock; the drivers turn :meth:`deadline` into the
    capped timeout of a blocking read (sync) or a :class:`~.watchdog.ReadDeadline` (async).
    """

    __slots__ = ("_first", "_total_at", "got_token", "timeouts")

    def __init__(self, timeouts: Timeouts, start: float | None = None) -> None:
        start = time.monotonic() if start is None else start
        self.timeouts = timeouts
        self.got_token = False
        self._first = start + timeouts.first_token
        self._total_at = start + timeouts.total

    def deadline(self, now: float) -> float:
        """When the next read must have returned, measured from ``now`` (read start)."""
        limit = self._first if not self.got_token else now + self.timeouts.stall
        return min(limit, self._total_at)

    def saw(self, chunk: CompletionChunk) -> None:
        if chunk.has_token:
            self.got_token = True

    def expired(self, at: float) -> ProviderTimeoutError:
        """The error for the deadline ``at`` (a value :meth:`deadline` returned) having passed.

        Named by the deadline the read was armed with, not by the stream's state when the
        error is built: a first-token deadline is never reported as a stall.
        """
        t = self.timeouts
        if at >= self._total_at:
            return total_expired(t)
        if at == self._first:
            return ProviderTimeoutError(
                f"no first token within {t.first_token:g}s", timeout_seconds=t.first_token
            )
        return ProviderTimeoutError(f"stream stalled for {t.stall:g}s", timeout_seconds=t.stall)

    @staticmethod
    def opening_expired(timeouts: Timeouts) -> ProviderTimeoutError:
        """The error for a stream whose headers did not come in time (the opening's deadline
        is the first token's, or ``total`` when that is shorter)."""
        timer = StreamTimer(timeouts, 0.0)
        return timer.expired(timer.deadline(0.0))


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_json(payload: dict[str, Any]) -> bytes:
    """A request body: JSON the way httpx encodes ``json=`` (compact, UTF-8, no NaN)."""
    return _JSON.encode(payload).encode()


def total_expired(timeouts: Timeouts) -> ProviderTimeoutError:
    """The error for an attempt past its ``total`` timeout."""
    return ProviderTimeoutError(
        f"no complete answer within {timeouts.total:g}s (total timeout)",
        timeout_seconds=timeouts.total,
    )


def sse_chunks(decoder: SSEDecoder, raw: bytes | None) -> Iterator[CompletionChunk | None]:
    """OpenAI chunks decoded from ``raw`` (None: end of stream); a None item means ``[DONE]``.
    (The streams use the dialect's parser; this is the OpenAI one, unrolled, for tests.)"""
    events = decoder.close() if raw is None else decoder.feed(raw)
    for data in events:
        if data.strip() == DONE:
            yield None
            return
        yield parse_chunk(data)


class ProviderStream(Iterator[CompletionChunk]):
    """A streaming answer. ``done`` tells whether the provider ended it with its end marker
    (``[DONE]``, ``message_stop``)."""

    rate_limits: RateLimitInfo | None = None
    done: bool = False

    def close(self) -> None: ...


class AsyncProviderStream(AsyncIterator[CompletionChunk]):
    rate_limits: RateLimitInfo | None = None
    done: bool = False

    async def aclose(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    """Calls one provider. Raises :class:`~mesh_core._errors.ProviderError` subclasses only."""

    provider_id: str

    def complete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply: ...

    async def acomplete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply: ...

    def stream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderStream: ...

    async def astream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> AsyncProviderStream: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A provider that can also embed. Optional, and separate from :class:`Provider` so that
    providers written before embeddings (and third-party ones) stay valid: the mesh only
    sends an embedding request to a provider that has these methods (see :func:`can_embed`).
    Raises :class:`~mesh_core._errors.ProviderError` subclasses only."""

    def embed(
        self, model_name: str, request: EmbeddingRequest, timeouts: Timeouts
    ) -> EmbeddingReply: ...

    async def aembed(
        self, model_name: str, request: EmbeddingRequest, timeouts: Timeouts
    ) -> EmbeddingReply: ...


def can_embed(provider: object) -> bool:
    """Whether ``provider`` can serve embedding requests: it has ``embed`` and ``aembed``,
    and does not say otherwise through a ``can_embed`` attribute (an HTTP provider whose
    dialect has no embeddings API, Anthropic's, says False)."""
    said = getattr(provider, "can_embed", None)
    if isinstance(said, bool) and not said:
        return False
    return isinstance(provider, EmbeddingProvider)


def embedder(provider: object) -> EmbeddingProvider:
    """``provider`` as an embedding provider, or a BadRequestError saying it cannot embed
    (the mesh rules such providers out before calling; this is the last word)."""
    if not can_embed(provider):
        pid = getattr(provider, "provider_id", type(provider).__name__)
        raise provider_error(
            ErrorKind.BAD_REQUEST,
            f"provider {pid!r} cannot embed (it has no embed/aembed, or no embeddings API)",
        )
    return provider  # type: ignore[return-value]
