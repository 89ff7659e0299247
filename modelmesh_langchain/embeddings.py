"""``MeshEmbeddings``: a LangChain embedding model over a ModelMesh embedding pool."""

from __future__ import annotations

from typing import Any, ClassVar

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from mesh_core._errors import InvalidRequestError
from mesh_core._mesh import Mesh
from mesh_core._portable import PortableAdapter
from mesh_core._shared import mesh_for_pool
from mesh_core._space_pin import SpacePin

from .errors import langchain_errors

__all__ = ["MeshEmbeddings"]


def _texts(texts: list[str]) -> list[str]:
    """The documents as a list; a lone string would otherwise be embedded letter by letter."""
    if isinstance(texts, str):
        raise InvalidRequestError(
            "embed_documents takes a list of texts, got a string: use embed_query for one text"
        )
    return list(texts)


class MeshEmbeddings(PortableAdapter, BaseModel, Embeddings):
    """An embedding model that routes every call through a ModelMesh embedding pool.

    Vectors of two embedding models cannot be compared, so one instance keeps to one
    embedding space: the one its first call got (failover and later calls only go to
    members of that space), or ``space`` when given. A vector store filled through it
    never mixes spaces.

    Instantiate:
        .. code-block:: python

            from modelmesh_langchain import MeshEmbeddings

            embeddings = MeshEmbeddings(pool="embeddings")  # config: $MODELMESH_CONFIG
            store = InMemoryVectorStore(embeddings)

    Instances built from the same configuration (as ``MeshChatModel`` ones) share one Mesh.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)
    FIELD_ALIASES: ClassVar[dict[str, str]] = {"request_timeout": "timeout"}
    _ROUTING_FIELDS: ClassVar[frozenset[str]] = frozenset({"config", "pool", "space"})

    pool: str
    """The embedding pool to route to."""
    config: Any = Field(default=None, exclude=True, repr=False)
    """A YAML path, a configuration dict or a ``Mesh`` (default: ``$MODELMESH_CONFIG``).

    Never shown (a dict may hold literal keys) nor serialized."""
    space: str | None = None
    """Keep to this embedding space (e.g. ``openai/text-embedding-3-small@1536``); None pins
    the space of the model that serves the first call."""
    timeout: float | None = Field(default=None, alias="request_timeout")
    """Caps every timeout of each attempt, in seconds."""

    _mesh: Mesh = PrivateAttr()
    _pin: SpacePin = PrivateAttr(default_factory=SpacePin)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # After validation, so a configuration error surfaces as itself, not wrapped.
        self._mesh = mesh_for_pool(self.config, self.pool)
        self._pin = SpacePin(self.space)
        self._check()

    # --- copies: deepcopy, pickle, model_copy (mesh_core._portable.PortableAdapter) ------
    # A copy keeps the pinned space (it may add to the same vector store); one with a new
    # ``config``, ``pool`` or ``space`` is another embedder, and starts from its ``space``.
    def _rerouted(self, changed: set[str]) -> None:
        super()._rerouted(changed)
        self._pin = SpacePin(self.space)
        self._check()

    def _check(self) -> None:
        """Fail now, not on the first call, when the pool cannot embed (NoCapableModelError
        naming what rules out each member) or no member is in ``space`` (InvalidRequestError
        listing the pool's spaces): embedding nothing checks both, and calls no provider."""
        self._mesh.embed(self.pool, [], space=self.space)

    @property
    def mesh(self) -> Mesh:
        """The Mesh this model routes through (shared with same-config instances)."""
        return self._mesh

    @property
    def pinned_space(self) -> str | None:
        """The embedding space every vector of this instance belongs to (None before the
        first call when no ``space`` was given)."""
        return self._pin.space

    # --- calls ------------------------------------------------------------------------
    def _embed(self, docs: list[str]) -> list[list[float]]:
        with langchain_errors():
            return self._pin.embed(self._mesh, self.pool, _texts(docs), self.timeout)

    async def _aembed(self, docs: list[str]) -> list[list[float]]:
        with langchain_errors():
            return await self._pin.aembed(self._mesh, self.pool, _texts(docs), self.timeout)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order (the mesh batches them as the provider allows)."""
        return self._embed(texts)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one text, in the same space as the documents'."""
        return self._embed([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """As :meth:`embed_documents`, on the mesh's async path (never blocks the loop)."""
        return await self._aembed(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """As :meth:`embed_query`, on the mesh's async path."""
        return (await self._aembed([text]))[0]
