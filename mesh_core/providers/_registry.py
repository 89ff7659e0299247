"""Provider types by name: what ``providers.<id>.type`` may say, and how each is built.

The configuration names a wire protocol (``openai-compatible``, ``anthropic``,
``azure-openai``...), not a class, so that a YAML file stays data. Each name maps to a
factory and to the base URL used when the configuration gives none; the built-in types
register themselves when :mod:`mesh_core.providers` is imported, and an application adds
its own with :func:`register_provider_type` before loading a configuration that uses it
(the configuration is checked against this registry when it is loaded).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._base import Provider

__all__ = [
    "ProviderFactory",
    "ProviderType",
    "create_provider",
    "provider_type",
    "provider_types",
    "register_provider_type",
]

ProviderFactory = Callable[[str, Any], Provider]
"""``factory(provider_id, config)``: the provider a ``providers.<id>`` section (a
``ProviderConfig``, with ``base_url`` already defaulted) describes."""

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ProviderType:
    name: str
    factory: ProviderFactory
    default_base_url: str | None = None
    """Used when the configuration gives no ``base_url``; None: it must give one."""
    aliases: tuple[str, ...] = ()
    foreign: bool = False
    """A type whose providers wrap a model object of another framework (``langchain``,
    ``llamaindex``): its configuration names a ``class`` and its ``kwargs``, and takes no
    ``base_url`` (the model's own client knows where it goes)."""


_TYPES: dict[str, ProviderType] = {}
_ALIASES: dict[str, str] = {}
_LOCK = threading.Lock()


def register_provider_type(
    name: str,
    factory: ProviderFactory,
    *,
    default_base_url: str | None = None,
    aliases: tuple[str, ...] = (),
    replace: bool = False,
    foreign: bool = False,
) -> None:
    """Make ``providers.<id>.type: <name>`` build providers with ``factory``.

    ``factory(provider_id, config)`` returns a :class:`~._base.Provider`, typically
    ``HTTPProvider.from_config(provider_id, config, MyDialect())``. Names are lower-case
    (letters, digits, ``-``, ``_``, ``.``); registering a taken name (a built-in one too)
    raises ValueError unless ``replace=True``. ``foreign=True``: the type's sections give
    ``class`` and ``kwargs`` instead of ``base_url`` (see :attr:`ProviderType.foreign`).
    """
    names = (name, *aliases)
    for n in names:
        if not isinstance(n, str) or not _NAME.match(n):
            raise ValueError(
                f"provider type name {n!r} must be lower-case letters, digits, '-', '_' or '.', "
                "starting with a letter"
            )
    if not callable(factory):
        raise TypeError(f"the factory of provider type {name!r} is not callable")
    with _LOCK:
        taken = [n for n in names if n in _TYPES or n in _ALIASES]
        if taken and not replace:
            raise ValueError(
                f"provider type {taken[0]!r} is already registered (pass replace=True to "
                "replace it)"
            )
        for n in names:
            _TYPES.pop(n, None)
            _ALIASES.pop(n, None)
        _TYPES[name] = ProviderType(name, factory, default_base_url, tuple(aliases), foreign)
        for alias in aliases:
            _ALIASES[alias] = name


def provider_types() -> list[str]:
    """Every registered type name (aliases excluded), sorted."""
    with _LOCK:
        return sorted(_TYPES)


def provider_type(name: str) -> ProviderType:
    """The registered type ``name`` (or an alias of it); ValueError naming the known ones."""
    with _LOCK:
        found = _TYPES.get(_ALIASES.get(name, name))
        known = sorted(_TYPES)
    if found is None:
        raise ValueError(
            f"unknown provider type {name!r}; expected one of {', '.join(known)} "
            "(or a type added with register_provider_type)"
        )
    return found


def create_provider(provider_id: str, config: Any) -> Provider:
    """Build the provider a ``providers.<id>`` configuration section describes."""
    kind = provider_type(config.type)
    if kind.foreign:
        return kind.factory(provider_id, config)
    if getattr(config, "base_url", None) is None and kind.default_base_url is not None:
        config = config.model_copy(update={"base_url": kind.default_base_url})
    return kind.factory(provider_id, config)
