"""LangChain adapter for ModelMesh Lite: ``MeshChatModel(pool="reasoning")``."""

from __future__ import annotations

from .chat_models import MeshChatModel

__all__ = ["MeshChatModel"]
