"""What a wire protocol is, to the transport: the :class:`Dialect` interface.

A provider is one transport (:mod:`._transport`: connections, deadlines, size caps,
redaction) plus one dialect. A dialect is sans I/O: it says where a request goes and with
which headers, turns a :class:`~mesh_core._types.CompletionRequest` (OpenAI-shaped messages
and tools, the mesh's lingua franca) into the provider's JSON body, and turns the provider's
bytes back into a :class:`~._reply.ParsedResponse`, :class:`~mesh_core._types.CompletionChunk`
s, a classified :class:`~mesh_core._errors.ProviderError` and :class:`~._reply.RateLimitInfo`.
Being pure, every dialect is tested without a socket, and the sync and async paths of the
transport share it whole. A new protocol is one dialect module plus its tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from .._errors import ProviderError
from .._types import CompletionChunk, CompletionRequest, EmbeddingRequest
from ._embeddings import ParsedEmbeddings
from ._reply import ParsedResponse, RateLimitInfo

__all__ = ["Dialect", "EmbeddingDialect", "StreamParser"]


class StreamParser(Protocol):
    """Turns one streamed answer's SSE ``data`` payloads into chunks, in order.

    Stateful (Anthropic numbers content blocks, Gemini repeats tool calls whole), so one
    per stream. ``done`` turns true at the provider's end-of-answer marker (OpenAI's
    ``[DONE]``, Anthropic's ``message_stop``): the transport then stops decoding and only
    drains the body. A provider error reported inside the stream is raised as the
    classified :class:`~mesh_core._errors.ProviderError`.
    """

    done: bool

    def feed(self, data: str) -> Iterable[CompletionChunk]: ...


@runtime_checkable
class Dialect(Protocol):
    """One wire protocol, sans I/O (see the module docstring)."""

    name: str
    """Short name, for reprs and errors (``openai``, ``anthropic``, ``azure-openai``)."""

    def endpoint(self, model_name: str, *, stream: bool) -> tuple[str, Mapping[str, str]]:
        """The path (appended to the base URL's) and query parameters of a call."""
        ...

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """The credential and protocol-version headers (no key: none but the version)."""
        ...

    def build_payload(
        self, request: CompletionRequest, model_name: str, *, stream: bool
    ) -> dict[str, Any]:
        """The JSON body of a call."""
        ...

    def parse_reply(self, body: bytes, request: CompletionRequest) -> ParsedResponse:
        """A complete answer, or MalformedResponseError (and nothing else)."""
        ...

    def stream_parser(self, request: CompletionRequest) -> StreamParser:
        """A parser for one streamed answer to ``request``."""
        ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """An error reply (status >= 400) as a classified provider error."""
        ...

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """The rate-limit headroom the reply's headers report, if any."""
        ...


@runtime_checkable
class EmbeddingDialect(Protocol):
    """A dialect that can also embed (OpenAI, Azure, Gemini; not Anthropic, which has no
    embeddings API). Optional: a :class:`Dialect` without these hooks makes a provider
    that cannot serve embedding pools. Sans I/O like the rest; errors and rate limits are
    read with the dialect's own ``classify_error`` and ``rate_limits``."""

    def embedding_endpoint(self, model_name: str, count: int) -> tuple[str, Mapping[str, str]]:
        """The path and query parameters of a call embedding ``count`` texts."""
        ...

    def build_embedding_payload(self, request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
        """The JSON body of a call embedding ``request.texts`` (one batch)."""
        ...

    def parse_embeddings(self, body: bytes, request: EmbeddingRequest) -> ParsedEmbeddings:
        """One vector per text of ``request``, in order, or MalformedResponseError."""
        ...
