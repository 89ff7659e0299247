"""Providers: one transport (:class:`HTTPProvider`) speaking one dialect per wire protocol.

Built-in provider types (``providers.<id>.type``): ``openai-compatible`` (alias ``openai``),
``anthropic``, ``gemini`` and ``azure-openai`` (alias ``azure``). Add your own with
:func:`register_provider_type`, or pass provider instances to ``Mesh(config, providers=...)``.
"""

from __future__ import annotations

from typing import Any

from ._anthropic import AnthropicDialect
from ._azure import AzureOpenAIDialect
from ._base import AsyncProviderStream, Limits, Provider, ProviderReply, ProviderStream, Timeouts
from ._dialect import Dialect, StreamParser
from ._gemini import GeminiDialect
from ._openai_compat import OpenAICompatibleProvider
from ._registry import (
    ProviderFactory,
    ProviderType,
    create_provider,
    provider_type,
    provider_types,
    register_provider_type,
)
from ._reply import ParsedResponse, RateLimitInfo
from ._transport import HTTPProvider
from ._wire import OpenAIDialect

__all__ = [
    "AnthropicDialect",
    "AsyncProviderStream",
    "AzureOpenAIDialect",
    "Dialect",
    "GeminiDialect",
    "HTTPProvider",
    "Limits",
    "OpenAICompatibleProvider",
    "OpenAIDialect",
    "ParsedResponse",
    "Provider",
    "ProviderFactory",
    "ProviderReply",
    "ProviderStream",
    "ProviderType",
    "RateLimitInfo",
    "StreamParser",
    "Timeouts",
    "create_provider",
    "provider_type",
    "provider_types",
    "register_provider_type",
]


def _openai(provider_id: str, config: Any) -> Provider:
    return OpenAICompatibleProvider(
        provider_id,
        base_url=config.base_url,
        api_key=config.api_key,
        headers=config.headers,
        verify_tls=config.verify_tls,
        max_connections=config.max_connections,
        proxy=config.proxy,
        limits=Limits.of(getattr(config, "limits", None)),
    )


def _anthropic(provider_id: str, config: Any) -> Provider:
    dialect = AnthropicDialect(
        getattr(config, "api_version", None),
        auth=getattr(config, "auth", None),
        default_max_tokens=getattr(config, "default_max_tokens", 4096),
    )
    return HTTPProvider.from_config(provider_id, config, dialect)


def _gemini(provider_id: str, config: Any) -> Provider:
    dialect = GeminiDialect(getattr(config, "api_version", None))
    return HTTPProvider.from_config(provider_id, config, dialect)


def _azure(provider_id: str, config: Any) -> Provider:
    dialect = AzureOpenAIDialect(
        getattr(config, "api_version", None),
        auth=getattr(config, "auth", None),
        deployments=getattr(config, "deployments", None),
    )
    return HTTPProvider.from_config(provider_id, config, dialect)


register_provider_type(
    "openai-compatible", _openai, default_base_url="https://api.openai.com/v1", aliases=("openai",)
)
register_provider_type("anthropic", _anthropic, default_base_url="https://api.anthropic.com")
register_provider_type(
    "gemini", _gemini, default_base_url="https://generativelanguage.googleapis.com"
)
register_provider_type("azure-openai", _azure, aliases=("azure",))
