"""Providers: one transport (:class:`HTTPProvider`) speaking one dialect per wire protocol.

Built-in provider types (``providers.<id>.type``): ``openai-compatible`` (alias ``openai``),
``anthropic``, ``gemini`` and ``azure-openai`` (alias ``azure``); ``langchain`` and
``llamaindex`` wrap a model object of that framework (``class`` and ``kwargs``; see
:mod:`._foreign`), their adapters imported only when such a provider is built. Add your own
with :func:`register_provider_type`, or pass provider instances to
``Mesh(config, providers=...)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._anthropic import AnthropicDialect
from ._azure import AzureOpenAIDialect
from ._base import (
    AsyncProviderStream,
    EmbeddingProvider,
    Limits,
    Provider,
    ProviderReply,
    ProviderStream,
    Timeouts,
    can_embed,
)
from ._dialect import Dialect, EmbeddingDialect, StreamParser
from ._embeddings import EmbeddingReply, ParsedEmbeddings
from ._foreign import ForeignAdapter, ForeignProvider
from ._foreign_errors import classify_foreign_error
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
    "EmbeddingDialect",
    "EmbeddingProvider",
    "EmbeddingReply",
    "ForeignAdapter",
    "ForeignProvider",
    "GeminiDialect",
    "HTTPProvider",
    "Limits",
    "OpenAICompatibleProvider",
    "OpenAIDialect",
    "ParsedEmbeddings",
    "ParsedResponse",
    "Provider",
    "ProviderFactory",
    "ProviderReply",
    "ProviderStream",
    "ProviderType",
    "RateLimitInfo",
    "StreamParser",
    "Timeouts",
    "can_embed",
    "classify_foreign_error",
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


def _lazy_factory(type_name: str, module: str, extra: str) -> ProviderFactory:
    """The factory of a foreign type: ``module.provider_from_config``, imported on first use
    (``import mesh_core`` never imports LangChain or LlamaIndex)."""

    def factory(provider_id: str, config: Any) -> Provider:
        try:
            adapter = importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(
                f"provider {provider_id!r} (type {type_name}) needs {module.split('.')[0]}: "
                f'pip install "modelmesh-lite[{extra}]" ({exc})',
                name=exc.name,
            ) from exc
        provider: Provider = adapter.provider_from_config(provider_id, config)
        return provider

    return factory


register_provider_type(
    "langchain",
    _lazy_factory("langchain", "modelmesh_langchain._foreign", "langchain"),
    foreign=True,
)
register_provider_type(
    "llamaindex",
    _lazy_factory("llamaindex", "modelmesh_llamaindex._foreign", "llamaindex"),
    foreign=True,
)
