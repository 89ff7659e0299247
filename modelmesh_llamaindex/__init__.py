"""LlamaIndex adapter for ModelMesh Lite: ``MeshLLM(pool="reasoning")``."""

from __future__ import annotations

from .llms import MeshLLM

__all__ = ["MeshLLM"]
