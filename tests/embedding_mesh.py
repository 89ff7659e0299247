"""Meshes over one fault server for the embedding tests (test_embeddings.py,
test_embedding_spaces.py): providers of each type on it, embedding models, a pool 'emb'."""

from __future__ import annotations

import asyncio
from typing import Any

from mesh_core import EmbeddingResponse, Mesh
from mesh_core.testing import FaultServer
from tests.conftest import FAST

DIALECTS = {"openai": "openai", "azure": "azure-openai", "gemini": "gemini"}


def model(provider: str, name: str, space: str, **more: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "name": name,
        "capabilities": ["text-embeddings"],
        "embedding_space": space,
        **more,
    }


def config(server: FaultServer, models: dict[str, Any], **pool: Any) -> dict[str, Any]:
    """Providers of each type on ``server`` (oa, az, gm, and oa2 for a second OpenAI), the
    models given, and a pool 'emb' over them in that order."""
    return {
        "providers": {
            "oa": {"type": "openai", "base_url": server.base_url, "timeouts": FAST},
            "oa2": {"type": "openai", "base_url": server.base_url, "timeouts": FAST},
            "az": {"type": "azure", "base_url": server.url_for("azure"), "timeouts": FAST},
            "gm": {"type": "gemini", "base_url": server.url_for("gemini"), "timeouts": FAST},
            "an": {"type": "anthropic", "base_url": server.url_for("anthropic")},
        },
        "models": {
            "an.claude": {"provider": "an", "name": "claude"},
            **models,
        },
        "pools": {
            "emb": {
                "models": list(models),
                "retry": {"max_attempts": 1},
                **pool,
            },
            "chat": {"models": ["an.claude"]},
        },
    }


class Meshes:
    """``make(models, **pool)``: a mesh over ``server`` (closed by :meth:`close`)."""

    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.meshes: list[Mesh] = []

    def __call__(self, models: dict[str, Any], **pool: Any) -> Mesh:
        mesh = Mesh.from_config(config(self.server, models, **pool))
        self.meshes.append(mesh)
        return mesh

    def close(self) -> None:
        for m in self.meshes:
            m.close()


def embed(mesh: Mesh, mode: str, *args: Any, **kw: Any) -> EmbeddingResponse:
    if mode == "sync":
        return mesh.embed(*args, **kw)

    async def run() -> EmbeddingResponse:
        try:
            return await mesh.aembed(*args, **kw)
        finally:
            for provider in mesh.providers.values():
                await provider.aclose()  # this loop's pools (asyncio.run ends the loop)

    return asyncio.run(run())


def provider_of(dialect: str) -> str:
    return {"openai": "oa", "azure": "az", "gemini": "gm"}[dialect]
