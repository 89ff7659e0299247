"""Request, response and streaming types shared by every layer.

Messages and tools are kept in the OpenAI chat-completions dict shape: it is what
every OpenAI-compatible provider speaks, and what both LangChain and LlamaIndex
already know how to produce, so no layer has to translate twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CompletionRequest:
    """Normalized request sent to a provider for completion.

    ``model`` is what the caller asked for (a pool name); ``pinned_model`` restricts
    the pool to one of its models. Parameters left ``None`` are not sent, so each
    provider's own defaults apply.
    """

    model: str
    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    stop: list[str] | None = None
    top_p: float | None = None
    seed: int | None = None
    session_id: str | None = None
    pinned_model: str | None = None
    timeout: float | None = None
    """Caps every timeout of each attempt (seconds)."""
    max_retries: int | None = None
    """Retries on the same model for transient errors (overrides the pool's ``retry``)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    """Token counts of one completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class ToolCall:
    """A tool call requested by the model. ``arguments`` is the raw JSON string."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(slots=True)
class Attempt:
    """One call made while serving a request: which model, what came of it, how long."""

    model_id: str
    provider_id: str
    outcome: str
    """``"success"`` or the :class:`~mesh_core._errors.ErrorKind` value of the failure."""
    latency: float
    status_code: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "provider_id": self.provider_id,
            "outcome": self.outcome,
            "latency": self.latency,
            "status_code": self.status_code,
            "error": self.error,
        }


@dataclass(slots=True)
class CompletionResponse:
    """A complete answer. ``model`` is the mesh model ID that actually answered."""

    id: str
    model: str
    provider: str
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    pool: str | None = None
    provider_model: str | None = None
    """The model name the provider reported (its own name, not the mesh ID)."""
    attempts: list[Attempt] = field(default_factory=list)
    cost: float = 0.0
    created: int = 0

    @property
    def message(self) -> dict[str, Any]:
        """The answer as an OpenAI assistant message dict."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [tc.to_dict() for tc in self.tool_calls]
        return msg


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of a streamed tool call (OpenAI streams them in pieces by index)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class CompletionChunk:
    """One streamed piece of an answer.

    The last chunk of a stream carries ``finish_reason`` and, when the provider
    reports it, ``usage``; the mesh then adds ``attempts`` so that streaming callers
    learn the same things as non-streaming ones.
    """

    content: str = ""
    tool_call_deltas: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    provider: str | None = None
    pool: str | None = None
    attempts: list[Attempt] | None = None
    cost: float | None = None
    continued_from: str | None = None
    """Set on the first chunk after a stream broke and resumed on another model from the
    partial answer (``stream_recovery: continue``): the model whose stream broke."""
    restarted: bool = False
    """Set on the first chunk of an answer started over on another model (it rejected the
    prefill): discard everything received before this chunk."""

    @property
    def has_token(self) -> bool:
        """True when the chunk carries answer content (text or a tool-call fragment)."""
        return bool(self.content) or bool(self.tool_call_deltas)


@dataclass(slots=True)
class EmbeddingRequest:
    """Texts to embed through a pool (``model`` is the pool's name).

    ``space`` restricts the request to the pool's members of one embedding space; None
    lets the first model chosen pin it. The failover loop calls a provider with a copy that
    holds one batch of ``texts`` and, when the model's configuration asks the provider for
    shortened vectors, ``dimensions``.
    """

    model: str
    texts: list[str]
    space: str | None = None
    timeout: float | None = None
    """Caps every timeout of each attempt (seconds)."""
    max_retries: int | None = None
    dimensions: int | None = None
    """Sent to the provider (OpenAI ``dimensions``, Gemini ``outputDimensionality``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Passed through into the provider's request body."""


@dataclass(slots=True)
class EmbeddingResponse:
    """Vectors of one request, one per input text in input order, all of one ``space``.

    ``model`` is the mesh model that served (the last batch's when a request was split
    into batches and a batch failed over to another member of the space).
    """

    vectors: list[list[float]]
    model: str
    provider: str
    space: str
    dimensions: int
    usage: Usage = field(default_factory=Usage)
    """``prompt_tokens`` as reported (or estimated when not), ``completion_tokens`` 0."""
    cost: float = 0.0
    pool: str | None = None
    attempts: list[Attempt] = field(default_factory=list)


__all__ = [
    "Attempt",
    "CompletionChunk",
    "CompletionRequest",
    "CompletionResponse",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]
