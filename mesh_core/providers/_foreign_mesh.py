"""A mesh of foreign models: what ``MeshChatModel.from_models`` and ``MeshLLM.from_models``
share (the configuration of a pool of model objects, one provider each), sans framework."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from .._errors import ConfigurationError
from .._redact import is_secret_key
from ._foreign_errors import scrub

if TYPE_CHECKING:
    from .._mesh import Mesh
    from ._base import Provider

__all__ = [
    "class_path",
    "foreign_mesh_config",
    "held_secrets",
    "mesh_from_models",
    "provider_from_section",
]


def provider_from_section(
    provider_id: str,
    config: Any,
    base: type,
    kind: str,
    provider: Callable[[Any, list[str]], Provider],
) -> Provider:
    """The provider a ``type: langchain`` / ``llamaindex`` section describes: ``class``
    (which must subclass ``base``, a ``kind`` such as "LangChain chat model") built with
    ``kwargs``, and ``api_key`` as its ``api_key`` argument unless ``kwargs`` has one; then
    ``provider(instance, secrets)``. A class that cannot be imported, is not a ``base``, or
    refuses the arguments, is a ConfigurationError naming the section, with no secret in it.
    """
    from .._config import import_class

    where = f"providers.{provider_id}"
    try:  # (checked when the configuration was loaded; again for a section built otherwise)
        cls = import_class(str(config.class_path))
    except ValueError as exc:
        raise ConfigurationError([(f"{where}.class", str(exc))]) from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        problem = f"{config.class_path} is not a {kind} ({base.__module__}.{base.__name__})"
        raise ConfigurationError([(f"{where}.class", problem)])
    kwargs = _revealed(config.kwargs)
    if config.api_key is not None:
        kwargs.setdefault("api_key", config.api_key.get_secret_value())
    secrets = [str(v) for k, v in _flat(kwargs) if is_secret_key(k) and v]
    try:
        instance = cls(**kwargs)
    except Exception as exc:  # a missing or wrong argument, a client that refused them
        problem = scrub(f"{type(exc).__name__}: {exc}", secrets)
        raise ConfigurationError(
            [(f"{where}.kwargs", f"{config.class_path}(**kwargs) failed: {problem}")]
        ) from None
    return provider(instance, [*secrets, *held_secrets(instance)])


def held_secrets(model: object) -> list[str]:
    """A model object's credentials (``SecretStr`` fields, and strings under secret-like
    field names), hidden from every error message of its provider."""
    found: list[str] = []
    for name, value in vars(model).items():
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str) and is_secret_key(name):
            found.append(value)
    return [s for s in found if s]


def class_path(model: object, fallback: str) -> str:
    """``"module:Class"`` of ``model``, for the configuration of a mesh built from model
    objects; a class that cannot be imported by that path (defined in a function, say) is
    recorded as ``fallback`` (the configuration only describes it: the provider wraps the
    object itself)."""
    cls = type(model)
    found: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return f"{cls.__module__}:{cls.__qualname__}" if found is cls else fallback


def _revealed(value: Any) -> Any:
    """``kwargs`` as the constructor takes them (the configuration holds secrets as
    SecretStr)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revealed(v) for v in value]
    return value


def _flat(value: Any, key: object = None) -> Iterator[tuple[object, Any]]:
    """Every leaf of ``kwargs`` with the key it is under (a list's items: the list's)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _flat(v, key)
    else:
        yield key, value


def foreign_mesh_config(
    models: Mapping[str, Any],
    *,
    type_name: str,
    class_path: Callable[[Any], str],
    pool: str = "default",
    strategy: str = "priority-selection",
    config: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The configuration of a mesh whose pool ``pool`` holds ``models`` (mesh model ID ->
    foreign model object), and the provider ID of each model ID. Pure.

    Each model gets its own provider, named by its ID's part before the first dot
    (``bedrock`` for ``bedrock.claude``), or by the whole ID when that part is shared.
    ``config`` (a configuration dict) is merged in: its providers, models and pools are
    added (native providers for a mixed pool, say), and a section it gives for one of
    ``models`` or for ``pool`` is merged over the generated one (``pricing``,
    ``context_window``, ``deactivation``...). The pool holds ``models`` in their order,
    then ``config``'s models unless its ``pools.<pool>.models`` says otherwise; with
    ``priority-selection`` that order is the priority.
    """
    if not models:
        raise ValueError("from_models needs at least one model")
    base = dict(config or {})
    given_providers = dict(base.get("providers") or {})
    given_models = dict(base.get("models") or {})
    given_pools = dict(base.get("pools") or {})
    prefixes = [mid.partition(".")[0] for mid in models]
    ids: dict[str, str] = {}
    for mid, prefix in zip(models, prefixes, strict=True):
        shared = prefixes.count(prefix) > 1 or prefix in given_providers
        ids[mid] = mid if shared else prefix
    if len(set(ids.values())) != len(ids) or set(ids.values()) & set(given_providers):
        raise ValueError(
            f"cannot name one provider per model for {sorted(models)} (provider IDs clash "
            "with each other or with config['providers']): rename the model IDs"
        )
    providers = dict(given_providers)
    for mid, model in models.items():
        providers[ids[mid]] = {"type": type_name, "class": class_path(model)}
    all_models = dict(given_models)
    for mid in models:
        all_models[mid] = {"provider": ids[mid], **(given_models.get(mid) or {})}
    members = [*models, *(m for m in given_models if m not in models)]
    pool_section: dict[str, Any] = {"models": members, "strategy": strategy}
    if strategy.removeprefix("modelmesh.").startswith("priority-selection"):
        pool_section["model_priority"] = members
    pools = dict(given_pools)
    pools[pool] = {**pool_section, **(given_pools.get(pool) or {})}
    return {**base, "providers": providers, "models": all_models, "pools": pools}, ids


def mesh_from_models(
    models: Mapping[str, Any],
    make_provider: Callable[[str, Any], Provider],
    *,
    type_name: str,
    class_path: Callable[[Any], str],
    pool: str = "default",
    strategy: str = "priority-selection",
    config: Mapping[str, Any] | None = None,
) -> Mesh:
    """A new Mesh (its own, shared with nobody) over ``models``: see
    :func:`foreign_mesh_config`; ``make_provider(provider_id, model)`` wraps each one."""
    from .._config_load import load_config
    from .._mesh import Mesh

    data, ids = foreign_mesh_config(
        models,
        type_name=type_name,
        class_path=class_path,
        pool=pool,
        strategy=strategy,
        config=config,
    )
    providers = {ids[mid]: make_provider(ids[mid], model) for mid, model in models.items()}
    return Mesh(load_config(data), providers=providers)
