"""The OpenAI chat-completions wire format, sans I/O.

Everything here is a pure function of bytes, dicts and headers: building the
request body, parsing a response, decoding server-sent events, classifying an
error reply and reading rate-limit headers. The httpx drivers in
``openai_compat`` only move bytes, so the sync and async paths share all of this.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from ..errors import ErrorKind, MalformedResponseError, ProviderError, provider_error
from ..types import CompletionChunk, CompletionRequest, ToolCall, ToolCallDelta, Usage

__all__ = [
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


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    id: str
    provider_model: str | None
    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: Usage | None
    created: int


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    p = int(raw.get("prompt_tokens") or 0)
    c = int(raw.get("completion_tokens") or 0)
    return Usage(p, c, int(raw.get("total_tokens") or (p + c)))


def _malformed(why: str) -> MalformedResponseError:
    return MalformedResponseError(f"malformed provider reply: {why}")


def parse_completion(body: bytes | str) -> ParsedResponse:
    """Parse a non-streaming response body, or raise MalformedResponseError."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _malformed("body is not JSON") from None
    if not isinstance(data, Mapping):
        raise _malformed("body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise _malformed("no choices")
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        raise _malformed("choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _malformed("message content is not a string")
    tool_calls = []
    for i, raw in enumerate(message.get("tool_calls") or ()):
        fn = raw.get("function") if isinstance(raw, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise _malformed(f"tool call {i} has no function name")
        args = fn.get("arguments")
        if isinstance(args, (dict, list)):
            args = json.dumps(args)
        tool_calls.append(ToolCall(str(raw.get("id") or f"call_{i}"), fn["name"], args or "{}"))
    return ParsedResponse(
        id=str(data.get("id") or ""),
        provider_model=data.get("model") if isinstance(data.get("model"), str) else None,
        content=content,
        tool_calls=tool_calls,
        finish_reason=choices[0].get("finish_reason"),
        usage=_usage(data.get("usage")),
        created=int(data.get("created") or time.time()),
    )


class SSEDecoder:
    """Incremental server-sent-events decoder: feed bytes, get ``data`` payloads.

    Comments and non-data fields are skipped; the payloads of one event's data
    lines are joined with newlines, as the SSE specification says.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[str]:
        self._buffer += chunk
        while True:
            nl = self._buffer.find(b"\n")
            if nl < 0:
                return
            line = self._buffer[:nl].rstrip(b"\r")
            self._buffer = self._buffer[nl + 1 :]
            if not line:
                if self._data:
                    data, self._data = "\n".join(self._data), []
                    yield data
                continue
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                self._data.append(value.removeprefix(b" ").decode("utf-8", "replace"))

    def close(self) -> Iterator[str]:
        """Flush an event left unterminated at the end of the stream."""
        if self._buffer.strip():
            yield from self.feed(b"\n\n")
        elif self._data:
            data, self._data = "\n".join(self._data), []
            yield data


DONE = "[DONE]"


def parse_chunk(data: str) -> CompletionChunk:
    """Parse one SSE ``data`` payload into a chunk, or raise MalformedResponseError."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise _malformed(f"stream event is not JSON: {data[:80]!r}") from None
    if not isinstance(obj, Mapping):
        raise _malformed("stream event is not a JSON object")
    if "error" in obj and not obj.get("choices"):
        err = obj["error"]
        message = err.get("message") if isinstance(err, Mapping) else str(err)
        raise provider_error(ErrorKind.SERVER_ERROR, f"error in stream: {message}")
    chunk = CompletionChunk(usage=_usage(obj.get("usage")))
    if isinstance(obj.get("model"), str):
        chunk.model = obj["model"]
    choices = obj.get("choices")
    if choices is None:
        choices = []
    if not isinstance(choices, list):
        raise _malformed("stream choices is not a list")
    if choices:
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, Mapping) else None
        if delta is None:
            delta = {}
        if not isinstance(delta, Mapping):
            raise _malformed("stream delta is not an object")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise _malformed("stream content is not a string")
        chunk.content = content or ""
        for raw in delta.get("tool_calls") or ():
            if not isinstance(raw, Mapping):
                raise _malformed("stream tool call is not an object")
            fn = raw.get("function") or {}
            args = fn.get("arguments")
            chunk.tool_call_deltas.append(
                ToolCallDelta(
                    index=int(raw.get("index") or 0),
                    id=raw.get("id"),
                    name=fn.get("name"),
                    arguments=args if isinstance(args, str) or args is None else json.dumps(args),
                )
            )
        chunk.finish_reason = choice.get("finish_reason")
    return chunk


_CONTEXT = re.compile(r"context[_ ]length|context window|maximum context|too many tokens", re.I)
_POLICY = re.compile(r"content[_ ]policy|content[_ ]filter|safety system|flagged", re.I)
_QUOTA = re.compile(r"insufficient_quota|quota|billing|credit", re.I)


def _error_text(body: bytes) -> tuple[str, str]:
    """(code or type, message) from an error body, best effort."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", body[:300].decode("utf-8", "replace")
    err = data.get("error", data) if isinstance(data, Mapping) else data
    if isinstance(err, Mapping):
        code = " ".join(str(err.get(k) or "") for k in ("code", "type")).strip()
        return code, str(err.get("message") or "")[:300]
    return "", str(err)[:300]


def classify_error(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> ProviderError:
    """Classify an HTTP error reply into the error taxonomy, keeping the status."""
    code, message = _error_text(body)
    both = f"{code} {message}"
    retry_after = parse_retry_after(headers, now=now)
    if status in (401, 403):
        kind = ErrorKind.AUTHENTICATION
    elif status == 429:
        kind = ErrorKind.QUOTA_EXHAUSTED if _QUOTA.search(both) else ErrorKind.RATE_LIMITED
    elif status == 408:
        kind = ErrorKind.TIMEOUT
    elif status >= 500 or status == 404:
        kind = ErrorKind.SERVER_ERROR
    elif _CONTEXT.search(both):
        kind = ErrorKind.CONTEXT_WINDOW
    elif _POLICY.search(both):
        kind = ErrorKind.CONTENT_POLICY
    else:
        kind = ErrorKind.BAD_REQUEST
    text = f"HTTP {status}" + (f": {message}" if message else "")
    return provider_error(kind, text, status_code=status, retry_after=retry_after)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """Rate-limit headroom reported by the provider's ``x-ratelimit-*`` headers."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    reset_requests: float | None = None
    """Seconds until the request window resets."""


_RESET = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_RESET_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _reset_seconds(value: str | None) -> float | None:
    """``"6m0s"``, ``"1s"``, ``"20ms"`` or a plain number of seconds."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parts = _RESET.findall(value)
        return sum(float(n) * _RESET_UNITS[u] for n, u in parts) if parts else None


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


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
