"""The capability tree: what a model can do, as dotted paths.

Seven roots (generation, understanding, transformation, representation,
retrieval, interaction, evaluation) with the documented nodes below them. Every
node is also reachable by its last segment when that is unambiguous, so
``chat-completion`` means ``generation.text-generation.chat-completion``.
Configuration may add nodes of its own (``capabilities: [generation.text-generation.poetry]``).

A model registered at a node belongs to every pool whose ``hierarchy_node`` is
that node or one of its ancestors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ._errors import UnknownCapabilityError

__all__ = ["DEFAULT_TREE", "CapabilityTree", "UnknownCapabilityError"]

DEFAULT_TREE: dict[str, dict[str, list[str]]] = {
    "generation": {
        "text-generation": ["chat-completion", "text-completion", "code-generation"],
        "structured-generation": [
            "json-generation",
            "schema-constrained-output",
            "function-call-generation",
        ],
        "image-generation": ["text-to-image", "image-to-image", "inpainting"],
        "audio-generation": ["text-to-speech", "music-generation"],
        "video-generation": ["text-to-video", "image-to-video"],
    },
    "understanding": {
        "text-understanding": [
            "summarization",
            "classification",
            "sentiment-analysis",
            "entity-extraction",
        ],
        "vision-understanding": ["image-captioning", "object-detection", "ocr"],
        "audio-understanding": ["speech-to-text", "speaker-identification", "audio-classification"],
        "document-understanding": ["document-parsing", "table-extraction", "form-extraction"],
    },
    "transformation": {
        "translation": [],
        "rewriting": [],
        "style-transfer": [],
        "image-editing": ["background-removal", "upscaling", "format-conversion"],
        "audio-processing": ["noise-reduction", "voice-cloning", "audio-separation"],
    },
    "representation": {
        "embeddings": ["text-embeddings", "image-embeddings", "multimodal-embeddings"],
        "tokenization": [],
        "feature-extraction": [],
    },
    "retrieval": {
        "search": ["semantic-search", "web-search", "image-search", "code-search"],
        "knowledge-graph": ["graph-query", "entity-linking", "relation-extraction"],
        "rag": ["retrieval-augmented-generation", "grounded-generation"],
        "reranking": [],
    },
    "interaction": {
        "tool-calling": [],
        "agent-execution": ["single-step-agent", "multi-step-agent"],
        "multi-turn-conversation": [],
    },
    "evaluation": {
        "content-moderation": [],
        "toxicity-detection": [],
        "factuality-checking": [],
        "quality-scoring": [],
    },
}


def _unknown(name: str, message: str, suggestion: str | None) -> UnknownCapabilityError:
    """An UnknownCapabilityError worded like every other "unknown ..." message of the mesh
    (``unknown provider 'x'; did you mean 'y'?``), so ``modelmesh validate`` reads as one voice."""
    exc = UnknownCapabilityError(name, suggestion)
    exc.message = message
    exc.args = (message,)
    return exc


class CapabilityTree:
    """The set of known capability paths, with short aliases."""

    def __init__(self, extra_nodes: Iterable[str] = ()) -> None:
        self._nodes: set[str] = set()
        for root, children in DEFAULT_TREE.items():
            self._add_path(root)
            for child, leaves in children.items():
                self._add_path(f"{root}.{child}")
                for leaf in leaves:
                    self._add_path(f"{root}.{child}.{leaf}")
        for node in extra_nodes:
            self.add(node)

    def _add_path(self, path: str) -> None:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            self._nodes.add(".".join(parts[:i]))
        self._aliases: dict[str, str | None] | None = None  # rebuilt lazily

    def add(self, path: str) -> str:
        """Add a user-defined node (and its ancestors). Returns its full path.

        The first segment must be one of the seven roots: the tree has no other top.
        """
        path = path.strip()
        if not path or any(not part for part in path.split(".")):
            raise ValueError(f"invalid capability path {path!r}")
        root = path.split(".", 1)[0]
        if root not in DEFAULT_TREE:
            raise ValueError(
                f"capability {path!r} must sit under one of the roots: {', '.join(DEFAULT_TREE)}"
            )
        self._add_path(path)
        return path

    @property
    def aliases(self) -> dict[str, str | None]:
        """Last segment -> full path (None when two nodes share the segment)."""
        if self._aliases is None:
            table: dict[str, str | None] = {}
            for node in self._nodes:
                short = node.rsplit(".", 1)[-1]
                table[short] = None if short in table and table[short] != node else node
            self._aliases = table
        return self._aliases

    def resolve(self, name: str) -> str:
        """Full path of ``name`` (a path or an unambiguous alias)."""
        if name in self._nodes:
            return name
        full = self.aliases.get(name)
        if full:
            return full
        if name in self.aliases:
            options = sorted(n for n in self._nodes if n.rsplit(".", 1)[-1] == name)
            raise _unknown(
                name,
                f"ambiguous capability {name!r}: write one of "
                + ", ".join(repr(o) for o in options),
                f"one of {options}",
            )
        close = difflib.get_close_matches(name, [*self._nodes, *self.aliases], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _unknown(name, f"unknown capability {name!r}{hint}", close[0] if close else None)

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(str(name))
        except UnknownCapabilityError:
            return False
        return True

    @staticmethod
    def covers(node: str, capability: str) -> bool:
        """True when ``capability`` is ``node`` or lies below it (both full paths)."""
        return capability == node or capability.startswith(node + ".")

    def descendants(self, node: str) -> list[str]:
        """All nodes at or below ``node``, sorted."""
        node = self.resolve(node)
        return sorted(n for n in self._nodes if self.covers(node, n))

    def leaves(self, node: str) -> list[str]:
        """Leaf nodes at or below ``node``."""
        below = self.descendants(node)
        return [n for n in below if not any(m.startswith(n + ".") for m in below)]
