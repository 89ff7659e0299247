"""Copies of the LlamaIndex adapters (deepcopy, pickle, ``model_copy``): what ``MeshLLM``
and ``MeshEmbedding`` share on top of :class:`mesh_core._portable.PortableAdapter`."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from mesh_core._portable import PortableAdapter, picklable_fields

__all__ = ["LlamaIndexPortable"]

_log = logging.getLogger("modelmesh")


class LlamaIndexPortable(PortableAdapter):
    """Pickled by pydantic's rules, not LlamaIndex's ``BaseComponent`` ones."""

    def _field_state(self) -> dict[Any, Any]:
        """Pydantic's state, not LlamaIndex's ``BaseComponent`` one: that one tries to pickle
        every value, and logs each one it drops (the Mesh, every time) on the root logger.
        Its rule is kept for the fields: an unpicklable one (a callback manager with a live
        handler) is dropped, and logged here; the configuration never travels."""
        state = dict(BaseModel.__getstate__(self))  # type: ignore[arg-type]
        fields = {k: v for k, v in state["__dict__"].items() if k != "config"}
        state["__dict__"] = picklable_fields(fields, _log)
        return state

    def _restore_fields(self, state: dict[Any, Any]) -> None:
        """Pydantic's ``__setstate__`` (LlamaIndex's calls ``__init__``, which would resolve
        the default configuration); a field dropped when pickling gets its default."""
        BaseModel.__setstate__(self, state)  # type: ignore[arg-type]
        for name, info in type(self).model_fields.items():  # type: ignore[attr-defined]
            if name not in self.__dict__ and not info.is_required():
                self.__dict__[name] = info.get_default(call_default_factory=True)
