"""Embedding calls of the HTTP transport: a batch of texts in, vectors out.

A mixin of :class:`~._transport.HTTPProvider`, kept apart so the transport module holds
only what every call shares. An embedding call is one non-streaming exchange
(``_exchange`` / ``_aexchange``: the same deadlines, size caps, redaction and connection
pools as a completion); the dialect (:class:`~._dialect.EmbeddingDialect`, sans I/O) says
where it goes, what its body is and what the reply means.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ErrorKind, ProviderError, provider_error
from .._types import EmbeddingRequest
from ._base import encode_json
from ._dialect import EmbeddingDialect
from ._embeddings import EmbeddingReply

if TYPE_CHECKING:
    import httpx

    from ._base import Timeouts

__all__ = ["EmbeddingCalls"]


class EmbeddingCalls:
    """``embed`` / ``aembed`` over the transport's exchange (see the module docstring)."""

    provider_id: str
    dialect: Any

    if TYPE_CHECKING:

        def _at(self, path: str, query: Mapping[str, str]) -> httpx.URL: ...
        def _exchange(
            self, url: httpx.URL, content: bytes, timeouts: Timeouts
        ) -> tuple[int, Mapping[str, str], bytes]: ...
        async def _aexchange(
            self, url: httpx.URL, content: bytes, timeouts: Timeouts
        ) -> tuple[int, Mapping[str, str], bytes]: ...
        def _redact(self, err: ProviderError) -> ProviderError: ...
        def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError: ...

    @property
    def can_embed(self) -> bool:
        """Whether the dialect has an embeddings API (Anthropic's has none)."""
        return isinstance(self.dialect, EmbeddingDialect)

    def embed(
        self, model_name: str, request: EmbeddingRequest, timeouts: Timeouts
    ) -> EmbeddingReply:
        """One batch of ``request.texts`` embedded by ``model_name``."""
        dialect, url, content = self._embedding_call(model_name, request)
        status, headers, body = self._exchange(url, content, timeouts)
        return self._embedding_reply(dialect, status, headers, body, request)

    async def aembed(
        self, model_name: str, request: EmbeddingRequest, timeouts: Timeouts
    ) -> EmbeddingReply:
        """:meth:`embed`, awaiting."""
        dialect, url, content = self._embedding_call(model_name, request)
        status, headers, body = await self._aexchange(url, content, timeouts)
        return self._embedding_reply(dialect, status, headers, body, request)

    def _embedding_call(
        self, model_name: str, request: EmbeddingRequest
    ) -> tuple[EmbeddingDialect, httpx.URL, bytes]:
        """The dialect, URL and body of an embedding call (BadRequestError for a dialect with
        no embeddings API: the mesh never routes one there, a direct caller learns why)."""
        dialect = self.dialect
        if not isinstance(dialect, EmbeddingDialect):
            raise self._redact(
                provider_error(
                    ErrorKind.BAD_REQUEST,
                    f"provider {self.provider_id!r} ({dialect.name}) has no embeddings API",
                )
            )
        url = self._at(*dialect.embedding_endpoint(model_name, len(request.texts)))
        return dialect, url, encode_json(dialect.build_embedding_payload(request, model_name))

    def _embedding_reply(
        self,
        dialect: EmbeddingDialect,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        request: EmbeddingRequest,
    ) -> EmbeddingReply:
        if status >= 400:
            raise self._error(status, headers, body)
        try:
            parsed = dialect.parse_embeddings(body, request)
        except ProviderError as err:
            raise self._redact(err) from None
        return EmbeddingReply(parsed, self.dialect.rate_limits(headers))
