"""The OpenAI-compatible provider: the transport speaking the OpenAI dialect.

Covers OpenAI and every service that speaks its chat-completions API through
``base_url``: Groq, Together, OpenRouter, DeepSeek, Mistral, Ollama, vLLM, llama.cpp's
server, LM Studio. The bytes move in :mod:`._transport`; what they mean is :mod:`._wire`.
This class exists so that the constructor users and tests have always called keeps working
without naming a dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._base import Limits
from ._transport import HTTPProvider
from ._wire import OpenAIDialect

__all__ = ["OpenAICompatibleProvider"]

_DIALECT = OpenAIDialect()


class OpenAICompatibleProvider(HTTPProvider):
    """Speaks ``POST {base_url}/chat/completions`` with a bearer token (see
    :class:`~._transport.HTTPProvider` for how credentials are kept out of errors)."""

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
        super().__init__(
            provider_id,
            _DIALECT,
            base_url=base_url,
            api_key=api_key,
            headers=headers,
            verify_tls=verify_tls,
            max_connections=max_connections,
            proxy=proxy,
            limits=limits,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self.provider_id!r}, base_url={self._shown!r})"
