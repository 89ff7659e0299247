"""Providers: the interface, and the OpenAI-compatible implementation over httpx."""

from __future__ import annotations

from typing import Any

from ._base import AsyncProviderStream, Limits, Provider, ProviderReply, ProviderStream, Timeouts
from ._openai_compat import OpenAICompatibleProvider
from ._wire import RateLimitInfo

__all__ = [
    "AsyncProviderStream",
    "Limits",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderReply",
    "ProviderStream",
    "RateLimitInfo",
    "Timeouts",
    "create_provider",
]


def create_provider(provider_id: str, config: Any) -> Provider:
    """Build the provider a ``providers.<id>`` configuration section describes."""
    if config.type in ("openai-compatible", "openai"):
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
    raise ValueError(f"unknown provider type {config.type!r}")
