"""Embedding spaces: which vectors may be compared, and the configuration rules that follow.

Vectors from two embedding models are not comparable: an index built with one model and
queried with another returns nonsense, silently. So every embedding model declares the
space its vectors live in (``embedding_space: openai/text-embedding-3-small@1536``, the
``@N`` being the dimension), and:

* a pool fails over only between members of one space (the space of the request, or of
  the first model chosen for it);
* a pool whose members are in several spaces is refused at load, unless the pool says
  ``mixed_embedding_spaces: true`` (then each request still stays in one space);
* the vectors a model returns must have its space's dimension, or the reply is malformed.

A space is an opaque name plus a dimension. Two members are in the same space when their
names are equal after the dimension is attached (``@N``, or ``dimensions``): the name is
the user's promise that the two produce the same vectors (the same model behind two
providers, e.g. OpenAI and an Azure deployment of ``text-embedding-3-small``). There is no
default: guessing a space from a provider and a model name would make the two members of
exactly that example incomparable, or two different models comparable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._capabilities import CapabilityTree
    from ._config import MeshConfig, ModelConfig

__all__ = [
    "EMBEDDINGS_NODE",
    "EmbeddingSpec",
    "check_embedding_config",
    "embedding_only",
    "embedding_specs",
    "parse_space",
]

EMBEDDINGS_NODE = "representation.embeddings"
"""Models with a capability at or below this node are embedding models."""

MAX_DIMENSIONS = 65536
_SPACE = re.compile(r"^([^\s@]{1,200})(?:@([0-9]{1,6}))?$")
_NO_EMBEDDINGS = frozenset({"anthropic"})
"""Built-in provider types without an embeddings API."""


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    """What the mesh knows of one embedding model."""

    space: str
    """The canonical space: the declared name with ``@dimensions``."""
    dimensions: int
    send_dimensions: int | None = None
    """Asked of the provider (``dimensions: N`` in the model's configuration): shortened
    vectors (OpenAI's text-embedding-3 ``dimensions``, Gemini's ``outputDimensionality``)."""
    max_batch: int | None = None
    """Texts per call (None: the provider's limit; OpenAI 2048, Gemini 100)."""


def parse_space(value: str, dimensions: int | None = None) -> tuple[str, int]:
    """``(canonical space, dimension)`` of a declared space and optional ``dimensions``;
    ValueError saying what is wrong (no dimension, a dimension out of range, the two
    disagreeing)."""
    match = _SPACE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            "embedding_space must be a name without spaces, optionally ending with @N (the "
            "dimension), e.g. 'openai/text-embedding-3-small@1536'"
        )
    name, at = match.group(1), match.group(2)
    dim = int(at) if at is not None else dimensions
    if at is not None and dimensions is not None and int(at) != dimensions:
        raise ValueError(
            f"embedding_space {value!r} says {at} dimensions but dimensions is {dimensions}: "
            "they must agree"
        )
    if dim is None:
        raise ValueError(
            f"embedding_space {value!r} has no dimension: end it with @N or set dimensions "
            "(the mesh checks every vector's length against it)"
        )
    if not 1 <= dim <= MAX_DIMENSIONS:
        raise ValueError(
            f"the dimension of embedding_space {value!r} must be 1 to {MAX_DIMENSIONS}"
        )
    return f"{name}@{dim}", dim


def is_embedding_model(model: ModelConfig, tree: CapabilityTree) -> bool:
    """Declares a space, or has a capability at or below ``representation.embeddings``."""
    if model.embedding_space is not None:
        return True
    node = tree.resolve(EMBEDDINGS_NODE)
    for cap in model.capabilities:
        try:
            if tree.covers(node, tree.resolve(cap)):
                return True
        except KeyError:  # an unknown capability: reported on its own
            continue
    return False


def embedding_only(config: MeshConfig, tree: CapabilityTree) -> frozenset[str]:
    """The models that only embed (every capability at or below
    ``representation.embeddings``): never sent a completion. A model that also declares a
    generation capability serves both."""
    node = tree.resolve(EMBEDDINGS_NODE)
    only: set[str] = set()
    for mid, model in config.models.items():
        if model.embedding_space is None:
            continue
        try:
            if all(tree.covers(node, tree.resolve(cap)) for cap in model.capabilities):
                only.add(mid)
        except KeyError:  # an unknown capability: reported on its own
            continue
    return frozenset(only)


def embedding_specs(config: MeshConfig) -> dict[str, EmbeddingSpec]:
    """The spec of every model that declares an embedding space (a validated config)."""
    specs: dict[str, EmbeddingSpec] = {}
    for mid, model in config.models.items():
        if model.embedding_space is None:
            continue
        space, dim = parse_space(model.embedding_space, model.dimensions)
        specs[mid] = EmbeddingSpec(space, dim, model.dimensions, model.max_batch_size)
    return specs


def check_embedding_config(
    config: MeshConfig, tree: CapabilityTree, members: Mapping[str, list[str]]
) -> list[tuple[str, str]]:
    """``(key path, problem)`` for the rules of the module docstring: an embedding model
    with no space, one of a provider type without embeddings, a pool mixing spaces.

    ``members`` are the pools' members (pools whose members could not be worked out are
    left out of it)."""
    errors: list[tuple[str, str]] = []
    spaces: dict[str, str] = {}
    for mid, model in config.models.items():
        if not is_embedding_model(model, tree):
            continue
        provider = config.providers.get(model.provider)
        kind = provider.type if provider is not None else None
        if kind in _NO_EMBEDDINGS:
            errors.append(
                (
                    f"models.{mid}",
                    f"provider {model.provider!r} is of type {kind!r}, which has no embeddings "
                    "API: embedding models need an openai-compatible, azure-openai or gemini "
                    "provider",
                )
            )
        if model.embedding_space is None:
            errors.append(
                (
                    f"models.{mid}.embedding_space",
                    "an embedding model must declare its embedding space, e.g. "
                    "'openai/text-embedding-3-small@1536' (vectors of different models are "
                    "not comparable: the mesh fails over only within a space)",
                )
            )
            continue
        try:
            spaces[mid] = parse_space(model.embedding_space, model.dimensions)[0]
        except ValueError:
            continue  # reported by the model's own validation
    for pid, ids in members.items():
        found = list(dict.fromkeys(spaces[m] for m in ids if m in spaces))
        if len(found) > 1 and not config.pools[pid].mixed_embedding_spaces:
            listed = "; ".join(
                f"{space}: {', '.join(m for m in ids if spaces.get(m) == space)}" for space in found
            )
            errors.append(
                (
                    f"pools.{pid}",
                    f"pool {pid!r} mixes embedding spaces ({listed}): vectors of different "
                    "spaces are not comparable, so failing over between them would corrupt an "
                    "index. Split the pool, or set mixed_embedding_spaces: true (each request "
                    "then stays in one space)",
                )
            )
    return errors
