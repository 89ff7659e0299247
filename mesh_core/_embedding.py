"""Embedding requests: batches through the failover loop, all vectors from one space.

``Mesh.embed`` / ``aembed`` build an :class:`~._types.EmbeddingRequest` here and drive
:func:`embedding_plan`, a generator of the same effects as a completion (so the sync and
async paths share it whole, as they share :class:`~._failover.Flight`). The plan splits
the texts into batches (a model's ``max_batch_size``, else its provider's limit: OpenAI
2048 inputs, Gemini 100) and sends each through one :class:`~._failover.Flight`: the same
strategies, state, standby, retries, events and attempts as a completion.

The embedding space (see :mod:`._spaces`) is what keeps an index sound: the caller's
``space``, or else the space of the first model chosen, is pinned on the
:class:`EmbeddingTarget`, and the eligibility filter reads it at every choice, so failover
and later batches go only to members of that space. When none of them is left the request
fails (AllProvidersExhaustedError) rather than return vectors of another space. Each reply
is checked against the space: one vector per text, each of the space's dimension; a
mismatch is a MalformedResponseError that counts against the model and fails over.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._effects import Effect, Outcome
from ._errors import InvalidRequestError, MalformedResponseError, NoCapableModelError
from ._failover import Flight
from ._needs import estimate_embedding_usage
from ._pool import CapabilityPool, Model
from ._router import Router
from ._spaces import EmbeddingSpec
from ._types import CompletionRequest, EmbeddingRequest, EmbeddingResponse, Usage
from .providers._embeddings import (
    MAX_BATCH_OPENAI,
    EmbeddingReply,
    ParsedEmbeddings,
    check_vectors,
)

__all__ = ["EmbeddingTarget", "embedding_plan", "embedding_request"]


def embedding_request(
    pool: str, texts: Any, *, space: str | None = None, timeout: float | None = None
) -> EmbeddingRequest:
    """Validate ``Mesh.embed``'s arguments (errors say what and where)."""
    if isinstance(texts, str):
        items = [texts]
    elif isinstance(texts, (bytes, bytearray, Mapping)) or not isinstance(texts, Iterable):
        raise InvalidRequestError(
            f"texts must be a string or a sequence of strings, got {type(texts).__name__}"
        )
    else:
        items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidRequestError(f"texts[{i}] must be a string, got {type(text).__name__}")
    if space is not None and (not isinstance(space, str) or not space):
        raise InvalidRequestError(f"space must be a non-empty string or None, got {space!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < math.inf
    ):
        raise InvalidRequestError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return EmbeddingRequest(
        model=pool, texts=items, space=space, timeout=None if timeout is None else float(timeout)
    )


@dataclass(eq=False)
class EmbeddingTarget:
    """One embedding request on its way: the texts not embedded yet (from ``offset``) and
    the space every vector must belong to (None until the first model is chosen)."""

    request: EmbeddingRequest
    space: str | None
    specs: Mapping[str, EmbeddingSpec]
    offset: int = 0

    def pin(self, spec: EmbeddingSpec) -> None:
        """The first model chosen sets the space of the whole request."""
        if self.space is None:
            self.space = spec.space

    def batch(self, spec: EmbeddingSpec, provider: object) -> EmbeddingRequest:
        """The next batch for a model with ``spec`` behind ``provider``."""
        limit = spec.max_batch or batch_limit(provider)
        texts = self.request.texts[self.offset : self.offset + limit]
        return replace(self.request, texts=texts, space=spec.space, dimensions=spec.send_dimensions)

    def problem(
        self, model: Model, batch: EmbeddingRequest, value: object
    ) -> MalformedResponseError | None:
        """What is wrong with a reply to ``batch`` (None: nothing): not embeddings, not one
        vector per text, vectors that are not lists of finite numbers (what a dialect's parser
        checks, checked again for providers of one's own), or not of the model's declared
        dimension."""
        embeddings = value.embeddings if isinstance(value, EmbeddingReply) else None
        if not isinstance(embeddings, ParsedEmbeddings) or not isinstance(embeddings.vectors, list):
            return _malformed(f"{model.id}'s provider answered an embedding call with no vectors")
        vectors = embeddings.vectors
        if len(vectors) != len(batch.texts):
            return _malformed(f"{len(vectors)} embedding vectors for {len(batch.texts)} inputs")
        try:  # a provider of one's own has not been through a dialect's parser
            if not embeddings.checked:
                check_vectors(vectors, len(batch.texts))
        except MalformedResponseError as exc:
            return _malformed(
                f"from {model.id}: {exc.message.removeprefix('malformed provider reply: ')}"
            )
        want = self.specs[model.id]
        for i, vector in enumerate(vectors):
            if len(vector) != want.dimensions:
                return _malformed(
                    f"embedding {i} from {model.id} has {len(vector)} dimensions; its embedding "
                    f"space {want.space!r} has {want.dimensions}"
                )
        return None


def batch_limit(provider: object) -> int:
    """Texts per call a provider takes: its (or its dialect's) ``max_embedding_batch``."""
    for owner in (provider, getattr(provider, "dialect", None)):
        limit = getattr(owner, "max_embedding_batch", None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
    return MAX_BATCH_OPENAI


def _usable(usage: object) -> Usage | None:
    """A reported usage the statistics and budgets can take (a provider of one's own may
    report anything): token counts that are non-negative integers, else None (estimated)."""
    if not isinstance(usage, Usage):
        return None
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return usage
    return None


def _malformed(why: str) -> MalformedResponseError:
    return MalformedResponseError(f"malformed embedding reply: {why}")


def pool_spaces(pool: CapabilityPool, specs: Mapping[str, EmbeddingSpec]) -> list[str]:
    """The embedding spaces of a pool's members, in pool order."""
    return list(dict.fromkeys(specs[m.id].space for m in pool.models if m.id in specs))


def embedding_plan(
    router: Router, pool: CapabilityPool, request: EmbeddingRequest
) -> Generator[Effect, Outcome | None, EmbeddingResponse]:
    """Embed ``request.texts`` through ``pool``, batch after batch, in one space."""
    specs = router.embeddings
    spaces = pool_spaces(pool, specs)
    if request.space is not None and request.space not in spaces:
        raise InvalidRequestError(
            f"no model of pool {pool.name!r} is in embedding space {request.space!r} "
            f"(the pool's spaces: {', '.join(spaces) or 'none'})"
        )
    target = EmbeddingTarget(request, request.space, specs)
    if not request.texts:
        return _nothing_to_embed(router, pool, target, spaces)
    routing = CompletionRequest(
        model=pool.name, messages=[], timeout=request.timeout, max_retries=request.max_retries
    )
    vectors: list[list[float]] = []
    prompt = total = 0
    cost = 0.0
    flight: Flight | None = None
    while target.offset < len(request.texts):
        attempts = flight.attempts if flight is not None else None
        flight = Flight(router, pool, routing, stream=False, attempts=attempts, embedding=target)
        answer = yield from flight.plan()
        reply = answer.reply
        assert isinstance(reply, EmbeddingReply)
        got = reply.embeddings.vectors
        usage = _usable(reply.embeddings.usage) or estimate_embedding_usage(
            request.texts[target.offset : target.offset + len(got)]
        )
        usage, batch_cost = router.succeeded(
            pool, answer.model, usage, answer.latency, reply.rate_limits
        )
        flight.end_span(model=answer.model.id, usage=usage)
        vectors.extend(got)
        prompt, total, cost = (
            prompt + usage.prompt_tokens,
            total + usage.total_tokens,
            cost + batch_cost,
        )
        target.offset += len(got)
    assert flight is not None  # the texts were not empty
    spec = specs[answer.model.id]
    return EmbeddingResponse(
        vectors=vectors,
        model=answer.model.id,
        provider=answer.model.provider_id,
        space=spec.space,
        dimensions=spec.dimensions,
        usage=Usage(prompt, 0, max(total, prompt)),
        cost=cost,
        pool=pool.name,
        attempts=list(flight.attempts),
    )


def _nothing_to_embed(
    router: Router, pool: CapabilityPool, target: EmbeddingTarget, spaces: list[str]
) -> EmbeddingResponse:
    """No text: no call. The space is the caller's, or the pool's first member's (a pool
    that cannot embed at all still says so)."""
    router.embedding_eligibility(pool, target)  # NoCapableModelError when no member can
    if not spaces:  # a pool with no members at all
        raise NoCapableModelError(
            f"pool {pool.name!r} has no embedding model", pool_name=pool.name, reasons={}
        )
    space = target.space or spaces[0]
    dims = next(s.dimensions for s in router.embeddings.values() if s.space == space)
    return EmbeddingResponse([], "", "", space, dims, pool=pool.name)
