"""The fault server's embedding endpoints: OpenAI, Azure OpenAI and Gemini, deterministic.

Routes (on the server's one port)::

    POST /v1/embeddings                                         OpenAI (and compatibles)
    POST /openai/deployments/{deployment}/embeddings?api-version=...   Azure OpenAI
    POST /v1beta/models/{model}:embedContent                    Gemini, one text
    POST /v1beta/models/{model}:batchEmbedContents              Gemini, several

A vector depends only on the text, the model and the dimension (a hash of the three,
made unit-length), so the same text always gets the same vector and two models never
agree: what a test needs to see that failover stayed in one space, and batches kept their
order. The dimension is the request's (``dimensions``, ``outputDimensionality``), else
``FaultServer.embedding_dimensions[model]``, else the real model's for the well-known names
(:data:`KNOWN_DIMENSIONS`: ``text-embedding-3-small`` 1536...), else
:data:`DEFAULT_DIMENSIONS` (8).
Usage is reported as OpenAI does (``prompt_tokens``: about four characters a token, at
least one a text); Gemini reports none, as the real API. Requests are checked as the real
services check them (OpenAI: at most 2048 inputs, no empty string; Gemini: at most 100
requests, each naming the model of the path), and every fault of the catalogue applies, as
to completions (the same behaviours, set per model or deployment name). A request is
recorded with ``dialect`` ``openai-embeddings``, ``azure-openai-embeddings`` or
``gemini-embeddings``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ._dialect import Refusal, ServerDialect, openai_error

if TYPE_CHECKING:
    from .server import _Handler

__all__ = [
    "DEFAULT_DIMENSIONS",
    "KNOWN_DIMENSIONS",
    "EmbeddingRoute",
    "embedding_route",
    "fake_vector",
    "serve_embeddings",
]

DEFAULT_DIMENSIONS = 8
"""The dimension of a vector when neither the request nor the server says otherwise."""
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "text-embedding-004": 768,
    "gemini-embedding-001": 3072,
}
"""The real models' default dimensions, so that a configuration written for the real
services runs against this server as it is."""

_GEMINI = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(embedContent|batchEmbedContents)$")
_AZURE_PREFIX, _AZURE_SUFFIX = "/openai/deployments/", "/embeddings"
_OPENAI_MAX, _GEMINI_MAX = 2048, 100
_OPENAI_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


def fake_vector(text: str, model: str, dimensions: int) -> list[float]:
    """The fault server's embedding of ``text`` by ``model``: unit-length, deterministic."""
    raw = b""
    seed = f"{model}\x00{dimensions}\x00{text}".encode()
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    ints = struct.unpack(f">{dimensions}I", raw[: 4 * dimensions])
    values = [i / 2**31 - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _tokens(texts: list[str]) -> int:
    return sum(max(1, len(t) // 4) for t in texts)


@dataclass
class EmbeddingRoute:
    """One embedding request as the server understood it."""

    kind: str
    """``openai``, ``azure-openai`` or ``gemini``: the chat wire whose error shapes it uses."""
    model: str | None
    """From the path (Azure's deployment, Gemini's model); OpenAI's is in the body."""
    single: bool = False
    """Gemini's ``embedContent`` (one text, ``embedding`` in the reply)."""

    def parse(self, body: Any, query: Mapping[str, str]) -> tuple[str, list[str], int | None]:
        """``(model, texts, dimensions)`` of the request, or raises :class:`Refused`."""
        if not isinstance(body, dict):
            raise Refused(400, "Invalid JSON payload received.")
        if self.kind == "gemini":
            return self._gemini(body)
        if self.kind == "azure-openai" and not query.get("api-version"):
            raise Refused(404, "Missing required query parameter: api-version")
        unknown = sorted(set(body) - _OPENAI_FIELDS)
        if unknown:
            raise Refused(400, f"Unrecognized request argument supplied: {', '.join(unknown)}")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise Refused(400, "'input' must be a string or a non-empty array of strings")
        if len(texts) > _OPENAI_MAX:
            raise Refused(400, f"'input' has more than {_OPENAI_MAX} items")
        if any(not t for t in texts):
            raise Refused(400, "'$.input' is invalid: an input is an empty string")
        if body.get("encoding_format", "float") not in ("float", "base64"):
            raise Refused(400, "'encoding_format' must be 'float' or 'base64'")
        model = self.model or body.get("model")
        if not isinstance(model, str) or not model:
            raise Refused(400, "you must provide a model parameter")
        return model, texts, _dimensions(body.get("dimensions"), "dimensions")

    def _gemini(self, body: dict[str, Any]) -> tuple[str, list[str], int | None]:
        model = self.model or ""
        items = [body] if self.single else body.get("requests")
        if not isinstance(items, list) or not items:
            raise Refused(400, "* BatchEmbedContentsRequest.requests: requests is required")
        if len(items) > _GEMINI_MAX:
            raise Refused(400, f"at most {_GEMINI_MAX} requests can be in one batch")
        texts: list[str] = []
        dims: set[int | None] = set()
        for i, item in enumerate(items):
            named = item.get("model") if isinstance(item, dict) else None
            if not self.single and named != f"models/{model}":
                raise Refused(
                    400, f"requests[{i}].model must be 'models/{model}', the model of the URL"
                )
            content = item.get("content") if isinstance(item, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                raise Refused(400, f"requests[{i}].content must have parts")
            text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
            if not text:
                raise Refused(400, f"requests[{i}].content has no text")
            texts.append(text)
            dims.add(_dimensions(item.get("outputDimensionality"), "outputDimensionality"))
        if len(dims) > 1:
            raise Refused(400, "every request of a batch must ask for the same dimension")
        return model, texts, dims.pop()

    def reply(
        self, model: str, vectors: list[list[float]], texts: list[str], body: dict[str, Any]
    ) -> dict[str, Any]:
        """The reply in the route's shape (OpenAI's vectors as base64 float32 when asked, as
        its official SDK does by default)."""
        if self.kind == "gemini":
            if self.single:
                return {"embedding": {"values": vectors[0]}}
            return {"embeddings": [{"values": v} for v in vectors]}
        tokens = _tokens(texts)
        encoded: list[Any] = vectors
        if body.get("encoding_format") == "base64":
            encoded = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(encoded)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


class Refused(Exception):
    """A request the real service would refuse: ``status`` and an OpenAI-shaped error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.refusal = Refusal(status, openai_error(message))


def _dimensions(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65536:
        raise Refused(400, f"'{name}' must be a positive integer")
    return value


def embedding_route(path: str) -> EmbeddingRoute | None:
    """The embedding endpoint ``path`` names (None: not an embedding endpoint)."""
    if path in ("/v1/embeddings", "/embeddings"):
        return EmbeddingRoute("openai", None)
    if path.startswith(_AZURE_PREFIX) and path.endswith(_AZURE_SUFFIX):
        return EmbeddingRoute(
            "azure-openai", unquote(path[len(_AZURE_PREFIX) : -len(_AZURE_SUFFIX)])
        )
    match = _GEMINI.match(path)
    if match is not None:
        return EmbeddingRoute("gemini", unquote(match.group(1)), match.group(2) == "embedContent")
    return None


def serve_embeddings(
    handler: _Handler,
    route: EmbeddingRoute,
    body: Any,
    query: Mapping[str, str],
    wire: ServerDialect,
) -> None:
    """Answer one embedding request: refused as the real service would, or as the model's
    behaviour says (the fault catalogue, in ``wire``'s error shapes), or with its vectors."""
    from .server import RecordedRequest

    owner = handler.owner
    sent = {k.lower(): v for k, v in handler.headers.items()}
    try:
        model, texts, dimensions = route.parse(body, query)
    except Refused as exc:
        refusal = exc.refusal
        status = wire.error_status(refusal.status, refusal.body)
        handler._json(status, wire.error_body(refusal.status, refusal.body))
        return
    rec = RecordedRequest(
        model,
        body,
        False,
        time.time(),
        "ok",
        handler.headers.get("authorization"),
        sent,
        handler.client_address[1],
        f"{wire.name}-embeddings",
    )
    admitted = handler._admit(rec, wire, sent)
    if admitted is None:
        return
    behaviour, rate_limits = admitted
    headers = {**rate_limits, **behaviour.headers}
    if handler._fault(rec, wire, behaviour, headers):
        return
    size = (
        dimensions
        or owner.embedding_dimensions.get(model)
        or KNOWN_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    )
    vectors = [fake_vector(text, model, size) for text in texts]
    owner._record(rec)  # before replying: a fast client must find it counted
    if not handler._hostile_body(200, behaviour, headers):
        handler._json(200, route.reply(model, vectors, texts, body), headers)
