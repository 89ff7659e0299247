"""Loading a configuration: substitution, validation, and errors that say where.

``load_config`` reports a broken file whole: every problem with its key path
(``pools.reasoning.deactivation.retry_limit``), the bad value and what was expected; an
unknown key suggests the closest valid one. The checks that span sections (references
between providers, models and pools, strategy IDs and options, capabilities, cron) run
on what did validate, so one run reports every kind of problem. The schema itself is
in :mod:`._config`.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field as dataclass_field
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from ._config import MeshConfig
from ._config_source import check_shape, join_path, read_yaml
from ._errors import ConfigurationError
from ._redact import MASK, is_header_key, is_secret_key, is_url_key, redact_text

__all__ = ["config_warnings", "load_config"]

_ENV_REF = re.compile(r"\$\{(?:secrets:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BAD_REF = (
    "unclosed or malformed ${...} reference (write ${NAME} or ${NAME:-default}); "
    "the value is not used as written"
)


class _Substitution:
    """``${VAR}`` references replaced from ``env``, with what went wrong and where.

    A reference that is not closed (``${OPENAI_API_KEY``) or not a valid name is an
    error rather than text: taken literally it would become, say, the API key sent to
    the provider. The value itself is never quoted (it may be a secret).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[tuple[str, str]] = []
        self.missing: list[tuple[tuple[Any, ...], str]] = []
        """``(key path, problem)`` of each unset variable without a default."""

    def __call__(self, node: Any, loc: tuple[Any, ...] = ()) -> Any:
        if isinstance(node, str):
            if "${" not in node:
                return node
            path = _env_path(loc)
            unset: list[str] = []

            def repl(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                if name in self.env:
                    return self.env[name]
                if default is not None:
                    return default
                unset.append(name)
                return ""

            out = _ENV_REF.sub(repl, node)
            for name in unset:
                self.missing.append((loc, f"environment variable {name} is not set"))
            if "${" in _ENV_REF.sub("", node):
                self.errors.append((path, _BAD_REF))
            return out
        if isinstance(node, Mapping):
            return {k: self(v, (*loc, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self(v, (*loc, i)) for i, v in enumerate(node)]
        return node


def _env_path(loc: tuple[Any, ...]) -> str:
    """A key path as substitution errors have always written it (keys joined by dots)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _forget_provider_settings(data: dict[str, Any], locs: list[tuple[Any, ...]]) -> None:
    """Drop the provider settings at ``locs`` (their defaults apply instead)."""
    providers = data.get("providers")
    for loc in locs:
        provider = providers.get(loc[1]) if isinstance(providers, dict) else None
        if isinstance(provider, dict):
            provider.pop(loc[2], None)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | MeshConfig,
    *,
    env: Mapping[str, str] | None = None,
    require_provider_env: bool = True,
) -> MeshConfig:
    """Read, substitute and validate a configuration (a path, a dict or a MeshConfig).

    Raises ConfigurationError listing every problem found, in one pass: schema errors
    (a bad value, an unknown key) and cross-reference errors (an unknown provider,
    model, capability or strategy) together, so a broken file is fixed in one go.

    ``require_provider_env=False`` lets a provider setting whose ``${VAR}`` is unset
    fall back to its default instead of failing, for tools that read the state and
    never call a provider (``modelmesh status``, ``modelmesh explain``): they should
    not need every API key of the deployment.
    """
    if isinstance(source, MeshConfig):
        return source
    origin: str | None = None
    if isinstance(source, Mapping):
        data: Any = source
    elif isinstance(source, (str, os.PathLike)):
        data, origin = read_yaml(source)
    else:
        raise ConfigurationError(
            [("", f"expected a path, a mapping or a MeshConfig, got {type(source).__name__}")]
        )
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            [("", f"expected a mapping of sections, got {type(data).__name__}")], source=origin
        )
    check_shape(data, source=origin)
    sub = _Substitution(os.environ if env is None else env)
    data = sub(data)
    errors = list(sub.errors)
    forgotten = []
    for loc, problem in sub.missing:
        if not require_provider_env and len(loc) >= 3 and loc[0] == "providers":
            forgotten.append(loc)
        else:
            errors.append((_env_path(loc), problem))
    _forget_provider_settings(data, forgotten)
    try:
        config = MeshConfig.model_validate(data)
    except ValidationError as exc:
        errors.extend(_describe(err) for err in exc.errors())
        partial = _valid_part(data, exc)
        if partial is not None:
            errors.extend(_cross_check(*partial))
        raise ConfigurationError(errors, source=origin) from None
    errors.extend(_cross_check(config))
    if errors:
        raise ConfigurationError(errors, source=origin)
    return config


_ENTRY_SECTIONS = ("providers", "models", "pools")


@dataclass
class _Dropped:
    """What :func:`_valid_part` left out to get a configuration that validates."""

    ids: dict[str, set[str]] = dataclass_field(
        default_factory=lambda: {s: set() for s in _ENTRY_SECTIONS}
    )
    """Providers, models and pools left out: they exist, they are only invalid."""
    fields: set[tuple[str, str, str]] = dataclass_field(default_factory=set)
    """``(section, id, key)`` of the settings left out of an entry that was kept."""
    sections: set[str] = dataclass_field(default_factory=set)
    """Whole sections left out: nothing can be said about references into them."""


def _valid_part(
    data: Mapping[str, Any], exc: ValidationError
) -> tuple[MeshConfig, _Dropped] | None:
    """The configuration without what failed validation, to cross-check the rest.

    Without it a schema error would hide every cross-reference error (an unknown
    capability, provider or model) until it is fixed, and a broken file would take one
    run per kind of problem. An invalid setting of a provider, model or pool is left
    out (its default applies), and the whole entry when that is not enough (a required
    key); references to a dropped entry are not reported as unknown. Any other invalid
    section is left out whole. None when no valid part could be found.
    """
    current: dict[Any, Any] = {
        k: dict(v) if k in _ENTRY_SECTIONS and isinstance(v, Mapping) else v
        for k, v in data.items()
    }
    dropped = _Dropped()
    for _ in range(4):
        bad_items: set[int] = set()
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            if not loc:
                return None
            section = loc[0]
            entries = current.get(section)
            if section in _ENTRY_SECTIONS and len(loc) >= 2 and isinstance(entries, dict):
                entry = entries.get(loc[1])
                key = loc[2] if len(loc) >= 3 else None
                if isinstance(entry, Mapping) and key in entry and err.get("type") != "missing":
                    entries[loc[1]] = {k: v for k, v in entry.items() if k != key}
                    dropped.fields.add((section, str(loc[1]), str(key)))
                else:  # a required key is missing, or the entry is not a mapping
                    entries.pop(loc[1], None)
                    dropped.ids[section].add(str(loc[1]))
                continue
            if section == "capabilities" and len(loc) >= 2 and isinstance(loc[1], int):
                bad_items.add(loc[1])  # not a string: no model can name it anyway
                continue
            current.pop(section, None)
            dropped.sections.add(str(section))
        items = current.get("capabilities")
        if bad_items and isinstance(items, list):
            current["capabilities"] = [v for i, v in enumerate(items) if i not in bad_items]
        try:
            return MeshConfig.model_validate(current), dropped
        except ValidationError as again:
            exc = again
    return None


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    path = join_path(loc)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        valid = _valid_keys(MeshConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return path, f"unknown key{hint} (valid keys: {', '.join(sorted(valid))})"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if kind == "missing":
        return path, "required key is missing"
    value = err.get("input")
    shown = _shown(loc, kind, value)
    if isinstance(value, str) and len(value) >= 4 and not shown.startswith("got '"):
        msg = msg.replace(value, MASK)  # a validator may have quoted what it refused
    if shown in msg:
        return path, msg  # the validator's message already says what it got
    return path, f"{msg} ({shown})"


# A string where a section or a mapping was expected is most likely a secret written in
# the wrong place (``providers: {openai: sk-...}``, ``storage: redis://:pw@host``).
_MAPPING_EXPECTED = frozenset(
    {"model_type", "model_attributes_type", "dict_type", "mapping_type", "dataclass_type"}
)


def _kind_of(value: Any) -> str:
    for kind, name in ((str, "a string"), (bool, "a boolean"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    if isinstance(value, Mapping):
        return "a mapping"
    return "a list" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"


def _shown(loc: tuple[Any, ...], kind: str, value: Any) -> str:
    """What an error may say about the value it refused: nothing that could be a secret.

    Nothing but its type under a secret-like key, a header or a URL setting; else a
    number, boolean or null shows, and so does a string (URL userinfo removed, cut at 60
    characters) unless it came where a section or a mapping was expected. A list or a
    mapping only ever shows as such.
    """
    what = _kind_of(value)
    if any(is_secret_key(p) or is_header_key(p) or is_url_key(p) for p in loc):
        return "value hidden" if value is None else f"got {what}, value hidden"
    if value is None or isinstance(value, (bool, int, float)):
        return f"got {value!r}"
    if not isinstance(value, str) or kind in _MAPPING_EXPECTED:
        return f"got {what}"
    shown = redact_text(repr(value))
    return f"got {shown[:57]}..." if len(shown) > 60 else f"got {shown}"


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return tp


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names (and aliases) of the section at ``loc``."""
    current: Any = model
    parts = list(loc)
    while parts and isinstance(current, type) and issubclass(current, BaseModel):
        name = parts.pop(0)
        field = current.model_fields.get(name) or next(
            (f for f in current.model_fields.values() if f.alias == name), None
        )
        if field is None:
            return []
        tp = _unwrap(field.annotation)
        if typing.get_origin(tp) is dict:
            tp = _unwrap(typing.get_args(tp)[1])
            if parts:
                parts.pop(0)  # the dict key (a provider, model or pool ID)
        current = tp
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    names = set(current.model_fields)
    names |= {f.alias for f in current.model_fields.values() if f.alias}
    return sorted(names)


def _suggest(name: str, options: Any) -> str:
    """``; did you mean 'x'?`` for the closest option, the one phrasing every message uses."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _cross_check(config: MeshConfig, dropped: _Dropped | None = None) -> list[tuple[str, str]]:
    """Checks that span sections: references, strategy IDs, capabilities, cron.

    ``dropped`` (from :func:`_valid_part`) names what was left out of ``config`` for
    failing validation: a reference to it is not reported as unknown, since the entry
    exists and its own errors are reported already.
    """
    from ._capabilities import CapabilityTree, UnknownCapabilityError
    from ._strategy_config import check_strategy_options
    from .strategies import resolve_strategy_id

    dropped = dropped or _Dropped()
    errors: list[tuple[str, str]] = []
    tree = CapabilityTree()
    for i, node in enumerate(config.capabilities):
        try:
            tree.add(node)
        except ValueError as exc:
            errors.append((f"capabilities[{i}]", str(exc)))
    # Custom nodes of a section that failed validation are unknown: say nothing of them.
    check_capabilities = "capabilities" not in dropped.sections

    def known(section: str, name: str) -> bool:
        entries = getattr(config, section)
        return name in entries or name in dropped.ids[section] or section in dropped.sections

    def unknown_provider(at: str, prov: str) -> None:
        if not known("providers", prov):
            options = [*config.providers, *dropped.ids["providers"]]
            errors.append((at, f"unknown provider {prov!r}{_suggest(prov, options)}"))

    def lost(section: str, entry: str, *keys: str) -> bool:
        """A setting of this entry was left out for being invalid: do not judge without it."""
        return any((section, entry, k) in dropped.fields for k in keys)

    def capability(at: str, name: str) -> None:
        try:
            tree.resolve(name)
        except UnknownCapabilityError as exc:
            if check_capabilities:
                errors.append((at, str(exc)))

    for mid, model in config.models.items():
        unknown_provider(f"models.{mid}.provider", model.provider)
        for i, cap in enumerate(model.capabilities):
            capability(f"models.{mid}.capabilities[{i}]", cap)
        if model.name is None and "." not in mid and not lost("models", mid, "name"):
            errors.append((f"models.{mid}", "set 'name' or use an ID of the form vendor.model"))

    errors.extend(_embedding_errors(config, tree))
    for pid, pool in config.pools.items():
        at = f"pools.{pid}"
        for key in ("models", "model_priority"):
            for i, mid in enumerate(getattr(pool, key)):
                if not known("models", mid):
                    options = [*config.models, *dropped.ids["models"]]
                    errors.append(
                        (f"{at}.{key}[{i}]", f"unknown model {mid!r}{_suggest(mid, options)}")
                    )
        for key in ("provider_priority", "excluded_providers"):
            for i, prov in enumerate(getattr(pool, key)):
                unknown_provider(f"{at}.{key}[{i}]", prov)
        for i, prov in enumerate(pool.allowed_providers or ()):
            unknown_provider(f"{at}.allowed_providers[{i}]", prov)
        target = pool.capability
        if target is None and not pool.models:
            if pid in tree:
                target = pid
            elif check_capabilities and not lost(
                "pools", pid, "capability", "hierarchy_node", "models"
            ):
                errors.append((at, "set 'capability' (a capability node) or 'models' (a list)"))
        if target is not None:
            capability(f"{at}.capability", target)
        try:
            resolve_strategy_id(pool.strategy)
        except KeyError as exc:
            errors.append((f"{at}.strategy", exc.args[0]))
        if not lost("pools", pid, "strategy", "strategy_options"):
            errors.extend(check_strategy_options(pid, pool)[1])
        window = pool.deactivation.maintenance_window
        if window is not None:
            cron = window if isinstance(window, str) else window.cron
            from croniter import croniter

            if not croniter.is_valid(cron):
                errors.append(
                    (
                        f"{at}.deactivation.maintenance_window",
                        f"invalid cron expression {cron!r} "
                        "(expected five fields, e.g. '0 2 * * 0')",
                    )
                )
    return errors


def _embedding_errors(config: MeshConfig, tree: Any) -> list[tuple[str, str]]:
    """Embedding spaces (see :mod:`._spaces`): judged on the pools whose members are known."""
    from ._assembly import pool_members
    from ._spaces import check_embedding_config

    members: dict[str, list[str]] = {}
    for pid, pool in config.pools.items():
        try:
            members[pid] = pool_members(pid, pool, config, tree)
        except KeyError:  # an unknown model or capability: reported on its own
            continue
    return check_embedding_config(config, tree, members)


def config_warnings(config: MeshConfig) -> list[tuple[str, str]]:
    """``(key path, problem)`` for what is valid but almost certainly not meant.

    An empty configuration, a configuration with models but no pool, a pool that no
    model joins (its capability has no models, or their providers are disabled), a
    pool key its strategy has no option for and a model that is in no pool all load fine
    and then fail, or do nothing, at the first request: ``modelmesh validate`` says so
    before that.
    """
    from ._assembly import capability_tree, pool_members
    from ._strategy_config import ignored_pool_keys

    warnings: list[tuple[str, str]] = []
    if not (config.providers or config.models or config.pools):
        return [("", "the configuration is empty: no providers, models or pools")]
    if config.models and not config.pools:
        warnings.append(("pools", "no pools: requests name a pool, so no model can be used"))
    tree = capability_tree(config)
    used: set[str] = set()
    for pid, pool in config.pools.items():
        warnings.extend(ignored_pool_keys(pid, pool))
        members = pool_members(pid, pool, config, tree)
        used.update(members)
        if members:
            continue
        if pool.models:
            why = "the providers of its models are disabled"
        else:
            node = tree.resolve(pool.capability or pid)
            disabled = [
                mid
                for mid, m in config.models.items()
                if any(tree.covers(node, tree.resolve(c)) for c in m.capabilities)
            ]
            why = (
                f"its models' providers are disabled or excluded ({', '.join(disabled)})"
                if disabled
                else f"no model has capability {node!r} or one below it"
            )
        warnings.append((f"pools.{pid}", f"no model joins this pool: {why}"))
    for mid in config.models:
        if config.pools and mid not in used:
            warnings.append((f"models.{mid}", "in no pool: no request can reach it"))
    return warnings
