"""LangChain adapter for ModelMesh Lite: ``MeshChatModel(pool="reasoning")``, and
``MeshEmbeddings(pool="embeddings")`` for retrievers and vector stores."""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # say which extra brings it, not only which module is missing
    raise ImportError(
        'modelmesh_langchain needs langchain-core: pip install "modelmesh-lite[langchain]"',
        name=exc.name,
    ) from exc

from .chat_models import MeshChatModel
from .embeddings import MeshEmbeddings

__all__ = ["MeshChatModel", "MeshEmbeddings"]
