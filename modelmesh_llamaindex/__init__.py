"""LlamaIndex adapter for ModelMesh Lite: ``MeshLLM(pool="reasoning")``, and
``MeshEmbedding(pool="embeddings")`` for indexes and query engines."""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # say which extra brings it, not only which module is missing
    raise ImportError(
        'modelmesh_llamaindex needs llama-index-core: pip install "modelmesh-lite[llamaindex]"',
        name=exc.name,
    ) from exc

from .embeddings import MeshEmbedding
from .llms import MeshLLM

__all__ = ["MeshEmbedding", "MeshLLM"]
