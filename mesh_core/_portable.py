"""Adapters across a pickle: what of a configuration may travel, and finding the Mesh again.

LangGraph checkpointers, Ray, multiprocessing and ``copy.deepcopy`` copy chat models
and LLMs. A :class:`~mesh_core._mesh.Mesh` cannot travel (it holds locks, connection
pools and the state of every model), and must not be duplicated: two copies of it
would keep two states. So a copy of ``MeshChatModel`` or ``MeshLLM`` carries a
:func:`handle` instead, and :func:`resolve` finds the shared Mesh again from it:

* in the process that made the handle, the very Mesh (and configuration object) the
  original used, whatever its configuration was (a path, a dict, a ``Mesh``);
* elsewhere, the shared Mesh of the configuration that travelled: a path (made
  absolute), or a dict that holds no literal secret (``${VAR}`` references are
  fine: they are read from the environment of the process that loads the copy);
* otherwise (a dict with a literal key, a ``Mesh``, no configuration at all), the
  default configuration of that process: ``$MODELMESH_CONFIG`` or ``./modelmesh.yaml``,
  and a :class:`~mesh_core._errors.ConfigurationError` that says why if it has none.

A literal secret is never written into a pickle: pickles land in checkpoint databases,
object stores and logs.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import threading
import uuid
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

from ._errors import ConfigurationError
from ._mesh import Mesh
from ._redact import redact
from ._shared import ENV_VAR, mesh_for_pool

__all__ = ["PortableAdapter", "handle", "holds_literal_secret", "resolve"]

_PROCESS = uuid.uuid4().hex
_LOCK = threading.Lock()
_LOCAL: dict[str, tuple[weakref.ref[Mesh], Any]] = {}
"""Token -> (the Mesh, the configuration object it came from), for this process only."""
_SAME_MESH = object()
"""Stands for "the configuration was the Mesh itself" (no strong reference kept to it)."""

# A value that is nothing but an environment reference (no literal default).
_REFERENCE = re.compile(r"\s*\$\{(?:secrets:)?[A-Za-z_][A-Za-z0-9_]*(?::-)?\}\s*")


def _without_references(value: Any, depth: int = 0) -> Any:
    """``value`` with pure references emptied, and ``timeouts`` sections left out (durations
    only, though ``first_token`` reads like a secret's key to the redaction rule)."""
    if isinstance(value, str):
        return "" if _REFERENCE.fullmatch(value) else value
    if depth > 64:
        return value
    if isinstance(value, Mapping):
        return {
            k: _without_references(v, depth + 1)
            for k, v in value.items()
            if not (k == "timeouts" and isinstance(v, Mapping))
        }
    if isinstance(value, (list, tuple)):
        return [_without_references(v, depth + 1) for v in value]
    return value


def holds_literal_secret(config: Mapping[str, Any]) -> bool:
    """Whether a configuration dict holds a secret written out (not a ``${VAR}`` reference).

    By the one rule that hides secrets everywhere else (:func:`mesh_core._redact.redact`):
    anything it would mask, once the pure references are set aside, is a literal secret.
    """
    plain = _without_references(config)
    return bool(redact(plain) != plain)


def _token(mesh: Mesh, config: Any) -> str:
    token = f"{os.getpid()}:{_PROCESS}:{id(mesh)}"

    def forget(ref: weakref.ref[Mesh], token: str = token) -> None:
        with _LOCK:
            if token in _LOCAL and _LOCAL[token][0] is ref:
                del _LOCAL[token]

    kept = _SAME_MESH if config is mesh else config
    with _LOCK:
        entry = _LOCAL.get(token)
        if entry is None or entry[0]() is not mesh:
            _LOCAL[token] = (weakref.ref(mesh, forget), kept)
    return token


def handle(config: Any, mesh: Mesh) -> dict[str, Any]:
    """What a pickled adapter carries instead of its Mesh and configuration."""
    out: dict[str, Any] = {"local": _token(mesh, config)}
    if isinstance(config, (str, os.PathLike)):
        out["path"] = str(Path(config).resolve())
    elif isinstance(config, Mapping) and not holds_literal_secret(config):
        out["dict"] = dict(config)
    elif config is not None:
        out["why"] = (
            "a configuration dict with literal secrets is never pickled"
            if isinstance(config, Mapping)
            else "a Mesh object cannot be pickled"
        )
    return out


def resolve(state: Mapping[str, Any], pool: str) -> tuple[Any, Mesh]:
    """``(config, mesh)`` for an adapter rebuilt from :func:`handle`'s ``state``."""
    token = state.get("local")
    pid = str(token).split(":", 1)[0]
    if token is not None and pid == str(os.getpid()):
        with _LOCK:
            entry = _LOCAL.get(token)
        mesh = entry[0]() if entry is not None else None
        if entry is not None and mesh is not None and not getattr(mesh, "_closed", False):
            config = mesh if entry[1] is _SAME_MESH else entry[1]
            mesh.pool(pool)
            return config, mesh
    if "path" in state:
        return state["path"], mesh_for_pool(state["path"], pool)
    if "dict" in state:
        return state["dict"], mesh_for_pool(state["dict"], pool)
    try:
        return None, mesh_for_pool(None, pool)
    except ConfigurationError as exc:
        why = state.get("why")
        if why is None:
            raise
        raise ConfigurationError(
            [
                (
                    "",
                    f"this copy was made from a model whose configuration did not travel ({why}),"
                    f" so it loads ${ENV_VAR} or ./modelmesh.yaml, and there is none here: set "
                    f"{ENV_VAR}, or build the model from a config path or a dict whose secrets "
                    "are ${VAR} references",
                ),
                *exc.errors,
            ]
        ) from None


class PortableAdapter:
    """Copies of an adapter (a pydantic model with ``pool``, ``config``, ``model`` and a
    private ``_mesh``) that share its Mesh: ``copy.deepcopy``, ``pickle``/``cloudpickle``
    and ``model_copy``. Mixed in before the framework's base class.

    Pydantic's ``model_copy(update=...)`` writes the update into the copy without
    validation, and would keep the original's Mesh: here a new ``config``, ``pool`` or
    ``model`` is resolved again (an unknown pool raises UnknownPoolError at once).
    """

    FIELD_ALIASES: ClassVar[dict[str, str]] = {}
    """Aliases accepted in ``model_copy(update=...)``, mapped to the field names."""
    _ROUTING_FIELDS: ClassVar[frozenset[str]] = frozenset({"config", "pool", "model"})
    _DROPPED: ClassVar[tuple[str, ...]] = ()
    """Cached values in ``__dict__`` that a copy rebuilds (never pickled)."""

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        """A deep copy that shares the Mesh (one state per configuration, never two)."""
        memo = {} if memo is None else memo
        memo[id(self._mesh)] = self._mesh
        config = self.config  # type: ignore[attr-defined]
        memo[id(config)] = config  # a Mesh, or a dict the copy must not diverge from
        return super().__deepcopy__(memo)  # type: ignore[misc]  # the framework's model, mixed in after

    def _field_state(self) -> dict[Any, Any]:
        """The pydantic state to pickle (the framework's, by default)."""
        state = super().__getstate__()  # pydantic's: a dict, typed object
        return dict(cast("dict[Any, Any]", state))

    def __getstate__(self) -> dict[Any, Any]:
        """Without the Mesh: a :func:`handle` finds it again; a config path or a dict without
        literal secrets travels, a literal secret never."""
        state = self._field_state()
        fields = dict(state["__dict__"])
        for name in self._DROPPED:
            fields.pop(name, None)
        fields["config"] = None
        state["__dict__"] = fields
        private = dict(state.get("__pydantic_private__") or {})
        private.pop("_mesh", None)
        state["__pydantic_private__"] = private
        state["modelmesh"] = handle(self.config, self._mesh)  # type: ignore[attr-defined]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        state = dict(state)
        found = state.pop("modelmesh", {})
        self._restore_fields(state)
        config, mesh = resolve(found, self.pool)  # type: ignore[attr-defined]
        self.__dict__["config"] = config
        self._mesh = mesh

    def _restore_fields(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """Pydantic's copy, except that a new ``config``, ``pool`` or ``model`` takes effect."""
        if update:
            update = {self.FIELD_ALIASES.get(k, k): v for k, v in update.items()}
        copied = super().model_copy(update=update, deep=deep)  # type: ignore[misc]
        if update and not self._ROUTING_FIELDS.isdisjoint(update):
            for name in self._DROPPED:
                copied.__dict__.pop(name, None)
            copied._rerouted(set(update))
        return copied

    def _rerouted(self, changed: set[str]) -> None:
        """This copy's ``config``, ``pool`` or ``model`` changed: find its Mesh again."""
        self._mesh = mesh_for_pool(self.config, self.pool)  # type: ignore[attr-defined]


def picklable_fields(fields: Mapping[str, Any], logger: logging.Logger) -> dict[str, Any]:
    """``fields`` without the values that cannot be pickled (LlamaIndex's rule for its
    components: a copy drops an unpicklable callback manager rather than failing), each
    drop logged on ``logger`` (not the root logger)."""
    kept = {}
    for name, value in fields.items():
        try:
            pickle.dumps(value)
        except Exception:  # what LlamaIndex catches too: any reason not to pickle
            logger.warning("pickling drops the unpicklable field %r", name)
            continue
        kept[name] = value
    return kept
