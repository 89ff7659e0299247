"""Strategy registry: IDs to classes, shipped and custom alike."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping
from typing import Any

from ._base import SelectionStrategy, StrategyContext, StrategyOptions

__all__ = [
    "create_strategy",
    "known_strategies",
    "register_strategy",
    "resolve_strategy_id",
    "strategy_class",
]

_REGISTRY: dict[str, type[SelectionStrategy]] = {}
_LOCK = threading.Lock()


def register_strategy(
    strategy_id: str, cls: type[SelectionStrategy], *, replace: bool = False
) -> None:
    """Register ``cls`` under ``strategy_id`` so configuration can name it.

    IDs look like ``acme.my-strategy.v1``. Registering an ID twice is an error
    unless ``replace`` is set. A strategy with parameters declares them as its
    ``Options`` (a :class:`StrategyOptions` subclass): pools then give them under
    ``strategy_options:``, checked when the configuration loads.
    """
    if not isinstance(cls, type) or not issubclass(cls, SelectionStrategy):
        raise TypeError("a strategy must subclass mesh_core.strategies.SelectionStrategy")
    options = getattr(cls, "Options", None)
    if not isinstance(options, type) or not issubclass(options, StrategyOptions):
        raise TypeError(
            f"{cls.__name__}.Options must subclass mesh_core.strategies.StrategyOptions "
            "(a pydantic model of the strategy's options)"
        )
    with _LOCK:
        if strategy_id in _REGISTRY and not replace and _REGISTRY[strategy_id] is not cls:
            raise ValueError(f"strategy {strategy_id!r} is already registered")
        _REGISTRY[strategy_id] = cls


def known_strategies() -> list[str]:
    return sorted(_REGISTRY)


def resolve_strategy_id(name: str) -> str:
    """The registered ID for ``name``.

    Accepts the full ID (``modelmesh.round-robin.v1``), the fully qualified form
    (``rotation.modelmesh.round-robin.v1``) and, for shipped strategies, the short
    name (``round-robin``). Anything else raises ``KeyError`` with a suggestion.
    """
    if name in _REGISTRY:
        return name
    if name.startswith("rotation.") and name[len("rotation.") :] in _REGISTRY:
        return name[len("rotation.") :]
    shipped = f"modelmesh.{name}.v1"
    if shipped in _REGISTRY:
        return shipped
    close = difflib.get_close_matches(name, _REGISTRY, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown strategy {name!r}{hint} (known: {', '.join(known_strategies())})")


def strategy_class(name: str) -> type[SelectionStrategy]:
    """The class registered under ``name`` (any form :func:`resolve_strategy_id` takes)."""
    return _REGISTRY[resolve_strategy_id(name)]


def create_strategy(
    name: str,
    options: StrategyOptions | Mapping[str, Any] | None = None,
    context: StrategyContext | None = None,
) -> SelectionStrategy:
    """Build the strategy registered under ``name``; ``options`` may be its options
    model or a mapping of them, validated here."""
    cls = strategy_class(name)
    if options is not None and not isinstance(options, StrategyOptions):
        options = cls.parse_options(options)
    return cls(options, context)
