"""A pool's strategy options: gathered from its configuration, validated by its strategy.

Each strategy declares its options as a pydantic model (``SelectionStrategy.Options``);
the configuration only says where a pool's settings for it are written. That is under
``strategy_options:`` and, for the options the configuration contract names as pool keys
(``balance_mode``, ``rate_limit``, ``fallback_strategy``...: ``POOL_OPTION_KEYS``), as
the pool's own keys too. A pool key the strategy has no option for is ignored (a
warning of ``modelmesh validate``); an unknown key under ``strategy_options`` is an
error. Errors name the pool, the strategy and the option, where the option was written.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ._config_source import join_path
from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._clock import Clock
    from ._config import PoolConfig
    from .strategies import StrategyContext, StrategyOptions

__all__ = [
    "check_strategy_options",
    "ignored_pool_keys",
    "strategy_context",
    "strategy_options",
    "strategy_settings",
]


def strategy_settings(pool: PoolConfig) -> tuple[dict[str, Any], frozenset[str]]:
    """The pool's settings for its strategy, and which of them were written as pool keys."""
    from .strategies import POOL_OPTION_KEYS

    at_pool = {k: v for k in POOL_OPTION_KEYS if (v := getattr(pool, k)) is not None}
    return {**at_pool, **pool.strategy_options}, frozenset(at_pool)


def _where(pid: str, key: Any, pool_keys: frozenset[str]) -> tuple[Any, ...]:
    return ("pools", pid) if key in pool_keys else ("pools", pid, "strategy_options")


def check_strategy_options(
    pid: str, pool: PoolConfig
) -> tuple[StrategyOptions | None, list[tuple[str, str]]]:
    """The pool's strategy options, and ``(key path, problem)`` for each invalid one.

    ``(None, [])`` when the strategy itself is unknown: that is reported on its own.
    """
    from ._config_load import _describe
    from .strategies import resolve_strategy_id, strategy_class

    try:
        sid = resolve_strategy_id(pool.strategy)
    except KeyError:
        return None, []
    cls = strategy_class(sid)
    settings, pool_keys = strategy_settings(pool)
    twice = sorted(pool_keys & pool.strategy_options.keys())
    errors = [
        (
            f"pools.{pid}.strategy_options.{key}",
            f"also set as pools.{pid}.{key}: set option {key!r} of strategy {sid!r} once",
        )
        for key in twice
    ]
    try:
        options = cls.parse_options(settings, pool_keys)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            key = loc[0] if loc else ""
            full = (*_where(pid, key, pool_keys), *loc)
            option = join_path(loc)
            if err.get("type") == "extra_forbidden":
                names = cls.option_names(settings)
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                has = f"its options: {', '.join(names)}" if names else "it takes no options"
                problem = f"unknown option {option!r} of strategy {sid!r}{hint} ({has})"
            else:
                _, described = _describe({**err, "loc": full})
                what = f"option {option!r}" if option else "options"
                problem = f"invalid {what} of strategy {sid!r}: {described}"
            errors.append((join_path(full), problem))
        return None, errors
    return (None if errors else options), errors


def strategy_options(pid: str, pool: PoolConfig) -> StrategyOptions:
    """The pool's validated strategy options; ConfigurationError when some are invalid
    (a configuration built without :func:`load_config`, which reports them first)."""
    options, errors = check_strategy_options(pid, pool)
    if errors:
        raise ConfigurationError(errors)
    if options is None:  # an unknown strategy: resolve it again for its own error
        from .strategies import resolve_strategy_id

        try:
            resolve_strategy_id(pool.strategy)
        except KeyError as exc:
            raise ConfigurationError([(f"pools.{pid}.strategy", str(exc.args[0]))]) from None
        raise AssertionError("unreachable: a known strategy without options or errors")
    return options


def ignored_pool_keys(pid: str, pool: PoolConfig) -> list[tuple[str, str]]:
    """``(key path, warning)`` for each pool key that the pool's strategy has no option for."""
    from .strategies import resolve_strategy_id, strategy_class

    try:
        cls = strategy_class(resolve_strategy_id(pool.strategy))
    except KeyError:
        return []
    settings, pool_keys = strategy_settings(pool)
    names = set(cls.option_names(settings))
    return [
        (f"pools.{pid}.{key}", f"ignored: strategy {cls.strategy_id!r} has no option {key!r}")
        for key in sorted(pool_keys - names)
    ]


def strategy_context(pool: PoolConfig, clock: Clock) -> StrategyContext:
    """What the pool's strategy gets besides its options."""
    from .strategies import StrategyContext

    return StrategyContext(tuple(pool.model_priority), tuple(pool.provider_priority), clock)
