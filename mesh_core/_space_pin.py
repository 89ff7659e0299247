"""An embedder's space: the one its first answer came in, kept for every later call.

Vectors from two embedding spaces are not comparable, so an embedder that feeds one vector
store (LangChain's ``MeshEmbeddings``, LlamaIndex's ``MeshEmbedding``) must keep to one
space for its whole life, not just within a request: the mesh pins a space per request,
and this pins it per embedder. Without a ``space`` given, the first answer decides; two
first calls racing in different spaces settle on whichever returned first, and the other
embeds again in that space (its vectors are never returned from the wrong one).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._mesh import Mesh

__all__ = ["SpacePin"]

_LOCK = threading.Lock()
"""Held only to compare and set a pin, never across a call (so never on an event loop
while it waits), and module-wide so a pin stays a plain picklable value."""


class SpacePin:
    """The space of an embedder's vectors: ``space`` (None until the first answer)."""

    __slots__ = ("space",)

    def __init__(self, space: str | None = None) -> None:
        self.space = space

    def __repr__(self) -> str:
        return f"SpacePin({self.space!r})"

    def settle(self, got: str) -> str | None:
        """Pin ``got`` if nothing is pinned yet. Returns the pinned space when ``got`` is
        another one (a concurrent first call pinned first: embed again in it), else None."""
        with _LOCK:
            if self.space is None:
                self.space = got
            return None if got == self.space else self.space

    def embed(
        self, mesh: Mesh, pool: str, texts: Sequence[str], timeout: float | None = None
    ) -> list[list[float]]:
        """One vector per text, in order, all in the pinned space (no call for no text)."""
        if not texts:
            return []
        resp = mesh.embed(pool, texts, space=self.space, timeout=timeout)
        if (again := self.settle(resp.space)) is not None:
            resp = mesh.embed(pool, texts, space=again, timeout=timeout)
        return resp.vectors

    async def aembed(
        self, mesh: Mesh, pool: str, texts: Sequence[str], timeout: float | None = None
    ) -> list[list[float]]:
        """:meth:`embed`, awaiting."""
        if not texts:
            return []
        resp = await mesh.aembed(pool, texts, space=self.space, timeout=timeout)
        if (again := self.settle(resp.space)) is not None:
            resp = await mesh.aembed(pool, texts, space=again, timeout=timeout)
        return resp.vectors
