"""Embeddings on the wire, sans I/O: request bodies and reply parsing for each dialect.

Two protocols cover the three native dialects:

* OpenAI's ``POST /embeddings`` (Azure's ``/openai/deployments/{d}/embeddings`` too):
  ``{"model", "input": [...], "encoding_format": "float", "dimensions"?}`` answered by
  ``{"data": [{"index", "embedding": [...]}], "model", "usage": {"prompt_tokens", ...}}``.
  ``encoding_format`` is always ``float``: the official SDK asks for base64 by default,
  which would be one more thing to decode and check.
* Gemini's ``models/{m}:embedContent`` (one text) and ``:batchEmbedContents`` (several):
  ``{"content": {"parts": [{"text"}]}, "outputDimensionality"?}`` per text, answered by
  ``{"embedding": {"values"}}`` or ``{"embeddings": [{"values"}, ...]}``, with no usage.

Whatever comes back is checked before it can reach an index: one vector per text, in
input order (OpenAI's ``index`` must be a permutation of the inputs), each a non-empty
list of finite numbers, all of one length. Anything else is a MalformedResponseError,
which counts against the model and fails over, like a malformed chat reply. (The
transport has already capped the body's size; the core checks the length against the
model's declared embedding space.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._types import EmbeddingRequest, Usage
from ._reply import RateLimitInfo, guarded, load_json, malformed, usage_of

__all__ = [
    "EmbeddingReply",
    "ParsedEmbeddings",
    "check_vectors",
    "gemini_embedding_endpoint",
    "gemini_embedding_payload",
    "openai_embedding_payload",
    "parse_gemini_embeddings",
    "parse_openai_embeddings",
]

MAX_BATCH_OPENAI = 2048
"""OpenAI's (and Azure's) limit on ``input`` items per request."""
MAX_BATCH_GEMINI = 100
"""Gemini's limit on ``requests`` per ``batchEmbedContents``."""

_NUMBERS = frozenset({float, int})


@dataclass(frozen=True, slots=True)
class ParsedEmbeddings:
    """The vectors of one call, one per text sent, in the order sent."""

    vectors: list[list[float]]
    usage: Usage | None
    """As reported; None when the provider reports none (Gemini) or an unusable one."""
    provider_model: str | None = None
    checked: bool = False
    """Set by the mesh's own parsers (:func:`check_vectors` passed): the router checks the
    vectors of a provider of one's own, which leaves it False, before it uses them."""


@dataclass(frozen=True, slots=True)
class EmbeddingReply:
    """What an embedding call gives the router, whatever the dialect."""

    embeddings: ParsedEmbeddings
    rate_limits: RateLimitInfo | None = None


def check_vectors(
    vectors: Sequence[Any], expected: int, dimensions: int | None = None, space: str | None = None
) -> list[list[float]]:
    """``vectors`` as lists of floats, or MalformedResponseError: ``expected`` of them, each a
    non-empty list of finite numbers (booleans are not numbers here), all of one length
    (``dimensions`` when given, of embedding space ``space``: checked first, so an absurdly
    long vector costs no more)."""
    if len(vectors) != expected:
        raise malformed(f"{len(vectors)} embedding vectors for {expected} inputs")
    out: list[list[float]] = []
    size: int | None = dimensions
    for i, vector in enumerate(vectors):
        if not isinstance(vector, list) or not vector:
            raise malformed(f"embedding {i} is not a non-empty list of numbers")
        if dimensions is not None and len(vector) != dimensions:
            of = f"its embedding space {space!r} has" if space else "not"
            raise malformed(f"embedding {i} has {len(vector)} dimensions; {of} {dimensions}")
        kinds = set(map(type, vector))
        if not kinds <= _NUMBERS:
            raise malformed(f"embedding {i} holds a value that is not a number")
        if not _finite(sum(vector)):  # NaN and infinities propagate through the sum
            raise malformed(f"embedding {i} holds NaN, an infinity or an absurd value")
        if size is None:
            size = len(vector)
        elif len(vector) != size:
            raise malformed(f"embedding {i} has {len(vector)} dimensions, embedding 0 {size}")
        out.append(vector if int not in kinds else [float(x) for x in vector])
    return out


def _dimensions(request: EmbeddingRequest) -> int | None:
    """The dimension every vector of ``request`` must have: of its space (``name@N``), else
    the one asked for (None: not known here; the router checks it against the model's)."""
    _, at, tail = (request.space or "").rpartition("@")
    if at and tail.isdigit():
        return int(tail)
    return request.dimensions


def _finite(total: float) -> bool:
    try:
        return math.isfinite(total)
    except OverflowError:  # an integer too large for a float
        return False


# --- OpenAI (and Azure) ----------------------------------------------------------------


def openai_embedding_payload(request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
    """The JSON body of ``POST /embeddings`` (``extra`` passes through, unset fields do not)."""
    body: dict[str, Any] = {
        "model": model_name,
        "input": list(request.texts),
        "encoding_format": "float",
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    for key, value in request.extra.items():
        body.setdefault(key, value)
    return body


def parse_openai_embeddings(body: bytes, request: EmbeddingRequest) -> ParsedEmbeddings:
    """An OpenAI embeddings reply, or MalformedResponseError (and nothing else)."""
    expected, dims = len(request.texts), _dimensions(request)
    return guarded(
        lambda d: _openai(d, expected, dims, request.space), load_json(body, "body"), "body"
    )


def _openai(data: Any, expected: int, dims: int | None, space: str | None) -> ParsedEmbeddings:
    if not isinstance(data, Mapping):
        raise malformed("body is not a JSON object")
    items = data.get("data")
    if not isinstance(items, list):
        raise malformed("embeddings reply has no data list")
    vectors: list[Any] = [None] * len(items)
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise malformed(f"data[{i}] is not an object")
        index = item.get("index", i)
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < len(items)
            or vectors[index] is not None
        ):
            raise malformed(f"data[{i}] has a missing, repeated or out-of-range index")
        vector = item.get("embedding")
        if isinstance(vector, str):
            raise malformed(f"data[{i}].embedding is base64 text, not the floats asked for")
        vectors[index] = vector if vector is not None else []
    usage = data.get("usage")
    model = data.get("model")
    return ParsedEmbeddings(
        check_vectors(vectors, expected, dims, space),
        usage_of(usage.get("prompt_tokens"), 0, usage.get("total_tokens"))
        if isinstance(usage, Mapping)
        else None,
        model if isinstance(model, str) else None,
        checked=True,
    )


# --- Gemini ------------------------------------------------------------------------------


def gemini_embedding_endpoint(version: str, model_name: str, count: int) -> str:
    """The path of a call embedding ``count`` texts (one: ``embedContent``)."""
    model = model_name.removeprefix("models/")
    method = "embedContent" if count == 1 else "batchEmbedContents"
    return f"/{version}/models/{model}:{method}"


def _gemini_item(text: str, model: str, request: EmbeddingRequest) -> dict[str, Any]:
    item: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
    if request.dimensions is not None:
        item["outputDimensionality"] = request.dimensions
    for key, value in request.extra.items():  # taskType, title...
        item.setdefault(key, value)
    return item


def gemini_embedding_payload(request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
    """``embedContent``'s body for one text, ``batchEmbedContents``'s for several."""
    model = f"models/{model_name.removeprefix('models/')}"
    items = [_gemini_item(text, model, request) for text in request.texts]
    if len(items) == 1:
        return items[0]
    return {"requests": items}


def parse_gemini_embeddings(body: bytes, request: EmbeddingRequest) -> ParsedEmbeddings:
    """A Gemini ``embedContent``/``batchEmbedContents`` reply, or MalformedResponseError."""
    expected, dims = len(request.texts), _dimensions(request)
    return guarded(
        lambda d: _gemini(d, expected, dims, request.space), load_json(body, "body"), "body"
    )


def _values(item: Any, where: str) -> Any:
    if not isinstance(item, Mapping) or "values" not in item:
        raise malformed(f"{where} has no values")
    return item["values"]


def _gemini(data: Any, expected: int, dims: int | None, space: str | None) -> ParsedEmbeddings:
    if not isinstance(data, Mapping):
        raise malformed("body is not a JSON object")
    if expected == 1 and "embeddings" not in data:
        vectors = [_values(data.get("embedding"), "embedding")]
    else:
        items = data.get("embeddings")
        if not isinstance(items, list):
            raise malformed("batchEmbedContents reply has no embeddings list")
        vectors = [_values(item, f"embeddings[{i}]") for i, item in enumerate(items)]
    meta = data.get("usageMetadata")
    usage = (
        usage_of(meta.get("promptTokenCount"), 0, meta.get("totalTokenCount"))
        if isinstance(meta, Mapping)
        else None
    )
    return ParsedEmbeddings(check_vectors(vectors, expected, dims, space), usage, checked=True)
