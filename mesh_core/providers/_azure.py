"""The Azure OpenAI dialect: OpenAI's chat completions at Azure's URLs, with Azure's key.

Azure serves the OpenAI protocol per *deployment*: ``POST {endpoint}/openai/deployments/
{deployment}/chat/completions?api-version=...``, authenticated by an ``api-key`` header (or
``Authorization: Bearer`` with a Microsoft Entra ID token). The bodies, streams, error
shapes and ``x-ratelimit-*`` headers are OpenAI's, so everything but the endpoint and the
credential is inherited. One difference in meaning: Azure's content filter withholds an
answer (``finish_reason: content_filter`` with nothing else), and a withheld answer is a
content-policy error here, as Azure's filtered prompts (HTTP 400, ``content_filter``) are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from urllib.parse import quote

from .._errors import ErrorKind, provider_error
from .._types import CompletionChunk, CompletionRequest
from ._reply import ParsedResponse
from ._wire import OpenAIDialect, OpenAIStreamParser, parse_completion

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIDialect"]

DEFAULT_API_VERSION = "2024-10-21"
"""The latest generally available data-plane API version when this was written."""

_FILTERED = "content_filter"


def _withheld() -> Exception:
    return provider_error(
        ErrorKind.CONTENT_POLICY,
        "the answer was withheld by Azure OpenAI's content filter (finish_reason: content_filter)",
    )


class _FilteredStream(OpenAIStreamParser):
    """OpenAI's events, with a filter that withholds the answer before any token an error."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        super().__init__()
        self._tokens = False

    def feed(self, data: str) -> Iterator[CompletionChunk]:
        for chunk in super().feed(data):
            self._tokens = self._tokens or chunk.has_token
            if chunk.finish_reason == _FILTERED and not self._tokens:
                raise _withheld()
            yield chunk


class AzureOpenAIDialect(OpenAIDialect):
    """``/openai/deployments/{deployment}/chat/completions?api-version=...``.

    ``deployments`` maps a model name to its deployment (default: the same name);
    ``auth`` is ``api-key`` (the header) or ``bearer`` (an Entra ID token).
    """

    name = "azure-openai"

    def __init__(
        self,
        api_version: str | None = None,
        *,
        auth: str | None = None,
        deployments: Mapping[str, str] | None = None,
    ) -> None:
        self.api_version = api_version or DEFAULT_API_VERSION
        self.auth = auth or "api-key"
        self.deployments = dict(deployments or {})

    def endpoint(self, model_name: str, *, stream: bool) -> tuple[str, Mapping[str, str]]:
        deployment = quote(self.deployments.get(model_name, model_name), safe="")
        path = f"/openai/deployments/{deployment}/chat/completions"
        return path, {"api-version": self.api_version}

    def embedding_endpoint(self, model_name: str, count: int) -> tuple[str, Mapping[str, str]]:
        deployment = quote(self.deployments.get(model_name, model_name), safe="")
        return f"/openai/deployments/{deployment}/embeddings", {"api-version": self.api_version}

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        if not api_key:
            return {}
        if self.auth == "bearer":
            return {"authorization": f"Bearer {api_key}"}
        return {"api-key": api_key}

    def parse_reply(self, body: bytes, request: CompletionRequest) -> ParsedResponse:
        parsed = parse_completion(body)
        if parsed.finish_reason == _FILTERED and not parsed.content and not parsed.tool_calls:
            raise _withheld()
        return parsed

    def stream_parser(self, request: CompletionRequest) -> _FilteredStream:
        return _FilteredStream()
