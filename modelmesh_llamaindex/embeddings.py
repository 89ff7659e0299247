"""``MeshEmbedding``: a LlamaIndex embedding model over a ModelMesh embedding pool."""

from __future__ import annotations

from typing import Any, ClassVar

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from mesh_core._mesh import Mesh
from mesh_core._shared import mesh_for_pool
from mesh_core._space_pin import SpacePin

from ._portable import LlamaIndexPortable

__all__ = ["MeshEmbedding"]


class MeshEmbedding(LlamaIndexPortable, BaseEmbedding):
    """A LlamaIndex embedding model that routes every call through a ModelMesh pool.

    Vectors of two embedding models cannot be compared, so one instance keeps to one
    embedding space: the one its first call got (failover and later batches only go to
    members of that space), or ``space`` when given. An index built and queried through
    it never mixes spaces.

    Examples:
        .. code-block:: python

            from llama_index.core import Settings
            from modelmesh_llamaindex import MeshEmbedding

            Settings.embed_model = MeshEmbedding(pool="embeddings")

    ``embed_batch_size`` (LlamaIndex's, default 10) is the number of texts per mesh call;
    the mesh splits a call further if a provider takes fewer texts per request.
    Mesh errors are raised as they are (llama-index-core has no typed model errors).
    """

    _ROUTING_FIELDS: ClassVar[frozenset[str]] = frozenset({"config", "pool", "space"})

    pool: str = Field(description="The embedding pool to route to.")
    config: Any = Field(
        default=None,
        exclude=True,
        repr=False,  # a dict may hold literal keys: never shown, never serialized
        description="A YAML path, a configuration dict or a Mesh.",
    )
    space: str | None = Field(
        default=None,
        description="Keep to this embedding space; None pins the first call's.",
    )
    timeout: float | None = Field(default=None, description="Caps each attempt's timeouts (s).")

    _mesh: Mesh = PrivateAttr()
    _pin: SpacePin = PrivateAttr(default_factory=SpacePin)
    _named: bool = PrivateAttr(default=False)
    """Whether ``model_name`` was given (else it follows ``space`` and ``pool``)."""

    def __init__(self, **kwargs: Any) -> None:
        # LlamaIndex shows ``model_name`` in events and traces: the space the vectors
        # belong to when it is known, else the pool.
        named = "model_name" in kwargs
        kwargs.setdefault("model_name", kwargs.get("space") or kwargs.get("pool") or "unknown")
        super().__init__(**kwargs)
        self._named = named
        self._mesh = mesh_for_pool(self.config, self.pool)
        self._pin = SpacePin(self.space)
        self._check()

    # --- copies: deepcopy, pickle, model_copy (mesh_core._portable.PortableAdapter) ------
    # A copy keeps the pinned space (it may add to the same index); one with a new
    # ``config``, ``pool`` or ``space`` is another embedder, and starts from its ``space``.
    def _rerouted(self, changed: set[str]) -> None:
        super()._rerouted(changed)
        self._pin = SpacePin(self.space)
        if not self._named and "model_name" not in changed:
            self.model_name = self.space or self.pool
        self._check()

    def _check(self) -> None:
        """Fail now, not on the first call, when the pool cannot embed (NoCapableModelError
        naming what rules out each member) or no member is in ``space`` (InvalidRequestError
        listing the pool's spaces): embedding nothing checks both, and calls no provider."""
        self._mesh.embed(self.pool, [], space=self.space)

    @classmethod
    def class_name(cls) -> str:
        return "MeshEmbedding"

    @property
    def mesh(self) -> Mesh:
        """The Mesh this model routes through (shared with same-config instances)."""
        return self._mesh

    @property
    def pinned_space(self) -> str | None:
        """The embedding space every vector of this instance belongs to (None before the
        first call when no ``space`` was given)."""
        return self._pin.space

    def to_payload(self) -> dict[str, Any]:
        """What embedding events and callbacks carry: LlamaIndex's, with the pool and the
        pinned space (never the configuration: it may hold keys)."""
        return super().to_payload() | {"pool": self.pool, "space": self._pin.space}

    # --- calls ------------------------------------------------------------------------
    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """One mesh call per batch (``get_text_embedding_batch`` cuts ``embed_batch_size``)."""
        return self._pin.embed(self._mesh, self.pool, texts, self.timeout)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._pin.aembed(self._mesh, self.pool, texts, self.timeout)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        """A query goes to the same space as the documents (no query-specific model)."""
        return self._get_text_embeddings([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aget_text_embeddings([query]))[0]
