"""The OpenAI chat-completions dialect, sans I/O.

``POST {base_url}/chat/completions`` with a bearer token: OpenAI itself and every service
that speaks its API (Groq, Together, OpenRouter, DeepSeek, Mistral, Ollama, vLLM,
llama.cpp's server, LM Studio), and, with another URL and key header, Azure OpenAI
(:mod:`._azure`). The mesh's own types are OpenAI-shaped, so this dialect translates
nothing: it builds the body, parses replies and stream events (``data: {...}`` then
``[DONE]``), classifies error bodies (``{"error": {"message", "type", "code"}}``) and reads
``x-ratelimit-*`` headers. The module-level functions are the dialect's parts (the tests
and benchmarks use them directly); :class:`OpenAIDialect` bundles them for the transport.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from .._errors import ErrorKind, ProviderError, provider_error
from .._types import (
    CompletionChunk,
    CompletionRequest,
    EmbeddingRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from ._embeddings import (
    MAX_BATCH_OPENAI,
    ParsedEmbeddings,
    openai_embedding_payload,
    parse_openai_embeddings,
)
from ._http_errors import kind_for_status, proxy_auth_error
from ._reply import (
    MAX_TOKENS,
    ParsedResponse,
    RateLimitInfo,
    guarded as _total,
    header_count as _int,
    load_json as _json,
    malformed as _malformed,
    parse_retry_after,
    seconds as _seconds,
    usage_of,
)
from ._sse import SSEDecoder

__all__ = [
    "DONE",
    "MAX_TOKENS",
    "OpenAIDialect",
    "OpenAIStreamParser",
    "ParsedResponse",
    "RateLimitInfo",
    "SSEDecoder",
    "build_payload",
    "classify_error",
    "parse_chunk",
    "parse_completion",
    "parse_rate_limits",
    "parse_retry_after",
]


def build_payload(request: CompletionRequest, model_name: str, *, stream: bool) -> dict[str, Any]:
    """The JSON body for ``POST /chat/completions``. Unset parameters are left out."""
    body: dict[str, Any] = {"model": model_name, "messages": request.messages}
    for key in ("temperature", "max_tokens", "top_p", "seed", "tools", "tool_choice", "stop"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.extra:
        for key, value in request.extra.items():
            if key not in ("session_id",):
                body.setdefault(key, value)
    return body


def _usage(raw: Any) -> Usage | None:
    """The reported usage (see :func:`._reply.usage_of`), or None when missing or unusable."""
    if not isinstance(raw, Mapping):
        return None
    return usage_of(raw.get("prompt_tokens"), raw.get("completion_tokens"), raw.get("total_tokens"))


def _finish_reason(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _malformed("finish_reason is not a string")


def _arguments(value: Any, *, partial: bool) -> str | None:
    """Tool-call arguments as JSON text (objects sent as objects are serialized)."""
    if isinstance(value, str):
        return value if value or partial else "{}"
    if value is None:
        return None if partial else "{}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    raise _malformed("tool call arguments are neither a string nor an object")


def _tool_call(i: int, raw: Any) -> ToolCall:
    fn = raw.get("function") if isinstance(raw, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise _malformed(f"tool call {i} has no function name")
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = f"call_{i}"
    return ToolCall(call_id, fn["name"], _arguments(fn.get("arguments"), partial=False) or "{}")


def parse_completion(body: bytes | str) -> ParsedResponse:
    """Parse a non-streaming response body, or raise MalformedResponseError (and nothing else).

    What is lenient, and why: ``content: null`` with no tool calls is an empty answer
    ``""`` (OpenAI itself sends it, e.g. for a reply cut at ``max_tokens: 0`` or filtered
    to nothing; with tool calls it stays None, as OpenAI's messages have it); unusable
    ``usage`` is treated as missing (see :func:`_usage`); an ``id``, ``model`` or
    ``created`` of the wrong type is replaced by a default (``""``, None, now), since
    they describe the answer but are not part of it. Everything the answer is made of
    (choices, message, content, tool calls, finish reason) must have its documented shape.
    """
    return _total(_completion, _json(body, "body"), "body")


def _completion(data: Any) -> ParsedResponse:
    if not isinstance(data, Mapping):
        raise _malformed("body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise _malformed("no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise _malformed("choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _malformed("message content is not a string")
    raw_calls = message.get("tool_calls")
    if raw_calls is None:
        raw_calls = []
    if not isinstance(raw_calls, list):
        raise _malformed("tool_calls is not a list")
    tool_calls = [_tool_call(i, raw) for i, raw in enumerate(raw_calls)]
    if content is None and not tool_calls:
        content = ""
    ident, model, created = data.get("id"), data.get("model"), data.get("created")
    if not (isinstance(created, (int, float)) and not isinstance(created, bool)):
        created = None
    return ParsedResponse(
        id=ident if isinstance(ident, str) else "",
        provider_model=model if isinstance(model, str) else None,
        content=content,
        tool_calls=tool_calls,
        finish_reason=_finish_reason(choice.get("finish_reason")),
        usage=_usage(data.get("usage")),
        created=int(created) if created is not None and 0 < created < 2**40 else int(time.time()),
    )


DONE = "[DONE]"


def parse_chunk(data: str) -> CompletionChunk:
    """Parse one SSE ``data`` payload into a chunk, or raise MalformedResponseError (or, for
    an error event, the ServerError it reports), and nothing else. Unusable usage counts
    are dropped as in :func:`parse_completion`."""
    return _total(_chunk, _json(data, "stream event"), "stream event")


def _chunk(obj: Any) -> CompletionChunk:
    if not isinstance(obj, Mapping):
        raise _malformed("stream event is not a JSON object")
    if "error" in obj and not obj.get("choices"):
        err = obj["error"]
        message = err.get("message") if isinstance(err, Mapping) else err
        raise provider_error(ErrorKind.SERVER_ERROR, f"error in stream: {str(message)[:300]}")
    chunk = CompletionChunk(usage=_usage(obj.get("usage")))
    if isinstance(obj.get("model"), str):
        chunk.model = obj["model"]
    choices = obj.get("choices")
    if choices is None:
        choices = []
    if not isinstance(choices, list):
        raise _malformed("stream choices is not a list")
    if not choices:
        return chunk
    choice = choices[0]
    if not isinstance(choice, Mapping):
        raise _malformed("stream choice is not an object")
    delta = choice.get("delta")
    if delta is None:
        delta = {}
    if not isinstance(delta, Mapping):
        raise _malformed("stream delta is not an object")
    content = delta.get("content")
    if content is not None and not isinstance(content, str):
        raise _malformed("stream content is not a string")
    chunk.content = content or ""
    raw_calls = delta.get("tool_calls")
    if raw_calls is None:
        raw_calls = []
    if not isinstance(raw_calls, list):
        raise _malformed("stream tool_calls is not a list")
    chunk.tool_call_deltas = [_tool_call_delta(raw) for raw in raw_calls]
    chunk.finish_reason = _finish_reason(choice.get("finish_reason"))
    return chunk


def _tool_call_delta(raw: Any) -> ToolCallDelta:
    if not isinstance(raw, Mapping):
        raise _malformed("stream tool call is not an object")
    fn = raw.get("function")
    if fn is None:
        fn = {}
    if not isinstance(fn, Mapping):
        raise _malformed("stream tool call function is not an object")
    index = raw.get("index")
    if index is None:
        index = 0
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2**31:
        raise _malformed("stream tool call index is not a non-negative integer")
    call_id, name = raw.get("id"), fn.get("name")
    if not (call_id is None or isinstance(call_id, str)) or not (
        name is None or isinstance(name, str)
    ):
        raise _malformed("stream tool call id or name is not a string")
    return ToolCallDelta(
        index=index,
        id=call_id,
        name=name,
        arguments=_arguments(fn.get("arguments"), partial=True),
    )


def _error_text(body: bytes) -> tuple[str, str]:
    """(code or type, message) from an error body, best effort: never raises."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, Mapping) else data
        if isinstance(err, Mapping):
            code = " ".join(str(err.get(k) or "")[:100] for k in ("code", "type")).strip()
            return code, str(err.get("message") or "")[:300]
        return "", str(err)[:300]
    except Exception:  # not JSON, too deep, truncated at max_error_bytes: show the text
        return "", body[:300].decode("utf-8", "replace")


def classify_error(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> ProviderError:
    """Classify an HTTP error reply into the error taxonomy, keeping the status."""
    if status == 407:
        return proxy_auth_error()
    code, message = _error_text(body)
    retry_after = parse_retry_after(headers, now=now)
    kind = kind_for_status(status, f"{code} {message}")
    text = f"HTTP {status}" + (f": {message}" if message else "")
    return provider_error(kind, text, status_code=status, retry_after=retry_after)


_RESET = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_RESET_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _reset_seconds(value: str | None) -> float | None:
    """``"6m0s"``, ``"1s"``, ``"20ms"`` or a plain number of seconds."""
    if not value:
        return None
    try:
        return _seconds(float(value))
    except ValueError:
        parts = _RESET.findall(value)
        return _seconds(sum(float(n) * _RESET_UNITS[u] for n, u in parts)) if parts else None


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """Read ``x-ratelimit-*`` headers; None when the provider sent none."""
    get = headers.get
    if (
        get("x-ratelimit-remaining-requests") is None
        and get("x-ratelimit-remaining-tokens") is None
    ):
        return None
    return RateLimitInfo(
        requests_limit=_int(get("x-ratelimit-limit-requests")),
        requests_remaining=_int(get("x-ratelimit-remaining-requests")),
        tokens_limit=_int(get("x-ratelimit-limit-tokens")),
        tokens_remaining=_int(get("x-ratelimit-remaining-tokens")),
        reset_requests=_reset_seconds(get("x-ratelimit-reset-requests")),
    )


class OpenAIStreamParser:
    """The events of one OpenAI stream: a chunk per ``data`` payload, until ``[DONE]``."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: str) -> Iterator[CompletionChunk]:
        if data.strip() == DONE:
            self.done = True
            return
        yield parse_chunk(data)


class OpenAIDialect:
    """The chat-completions protocol at ``{base_url}/chat/completions``, bearer-authenticated.

    ``path`` is where the endpoint lives under the base URL (``/chat/completions``);
    subclasses change what differs (Azure: the path per deployment, the query, the key header).
    """

    name = "openai"
    path = "/chat/completions"

    def endpoint(self, model_name: str, *, stream: bool) -> tuple[str, Mapping[str, str]]:
        return self.path, {}

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def build_payload(
        self, request: CompletionRequest, model_name: str, *, stream: bool
    ) -> dict[str, Any]:
        return build_payload(request, model_name, stream=stream)

    def parse_reply(self, body: bytes, request: CompletionRequest) -> ParsedResponse:
        return parse_completion(body)

    def stream_parser(self, request: CompletionRequest) -> OpenAIStreamParser:
        return OpenAIStreamParser()

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return classify_error(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        return parse_rate_limits(headers)

    # --- embeddings (``POST {base_url}/embeddings``; see :mod:`._embeddings`) ----------
    max_embedding_batch = MAX_BATCH_OPENAI

    def embedding_endpoint(self, model_name: str, count: int) -> tuple[str, Mapping[str, str]]:
        return "/embeddings", {}

    def build_embedding_payload(self, request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
        return openai_embedding_payload(request, model_name)

    def parse_embeddings(self, body: bytes, request: EmbeddingRequest) -> ParsedEmbeddings:
        return parse_openai_embeddings(body, request)
