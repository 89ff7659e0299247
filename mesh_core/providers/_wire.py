"""The OpenAI chat-completions wire format, sans I/O.

Everything here is a pure function of bytes, dicts and headers: building the
request body, parsing a response, decoding server-sent events, classifying an
error reply and reading rate-limit headers. The httpx drivers in
``openai_compat`` only move bytes, so the sync and async paths share all of this.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from .._errors import ErrorKind, MalformedResponseError, ProviderError, provider_error
from .._types import CompletionChunk, CompletionRequest, ToolCall, ToolCallDelta, Usage

__all__ = [
    "MAX_TOKENS",
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


MAX_TOKENS = 10**9
"""Token counts at or above this (per request) are not believed."""


def _count(value: Any) -> int:
    """A reported token count: an integer (or integral float) in ``[0, MAX_TOKENS)``; a
    missing one is 0. Anything else raises ValueError."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():  # False for NaN and infinities
        n = int(value)
    else:
        raise ValueError(value)
    if not 0 <= n < MAX_TOKENS:
        raise ValueError(value)
    return n


def _usage(raw: Any) -> Usage | None:
    """The reported usage, or None when it is missing or unusable.

    Unusable (a count that is a string, a bool, NaN, infinite, fractional, negative or
    ``>= MAX_TOKENS``) is treated as *missing*, never clamped: a provider that miscounts
    one field is not trusted with the others, and a missing usage is one the mesh knows
    how to handle (a stream's is estimated). So counters and cost never turn negative,
    NaN or absurd. A ``total_tokens`` below prompt + completion is raised to their sum.
    """
    if not isinstance(raw, Mapping):
        return None
    try:
        p = _count(raw.get("prompt_tokens"))
        c = _count(raw.get("completion_tokens"))
        t = _count(raw.get("total_tokens"))
    except ValueError:
        return None
    return Usage(p, c, max(t, p + c))


def _malformed(why: str) -> MalformedResponseError:
    return MalformedResponseError(f"malformed provider reply: {why}")


def _json(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise _malformed(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        shown = f": {text[:80]!r}" if what == "stream event" else ""
        raise _malformed(f"{what} is not JSON{shown}") from None


def _total(parse: Any, data: Any, what: str) -> Any:
    """``parse(data)``; whatever goes wrong in it becomes a MalformedResponseError.

    The parsers check the shapes they rely on and say what is wrong; this is the net under
    them, so that no provider's bytes can ever surface as a raw Python exception (and so
    escape failover)."""
    try:
        return parse(data)
    except ProviderError:
        raise
    except RecursionError:
        raise _malformed(f"{what} is nested too deeply") from None
    except Exception as exc:
        raise _malformed(f"unexpected {what} ({type(exc).__name__})") from None


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


class SSEDecoder:
    """Incremental server-sent-events decoder: feed bytes, get ``data`` payloads.

    Comments and non-data fields are skipped; the payloads of one event's data lines are
    joined with newlines, as the SSE specification says. Linear in its input: each fed
    chunk is searched once, and a line split over many chunks is kept as a list of pieces
    joined once at its end (``buffer += chunk`` and a search from the start would copy
    and rescan the line for every chunk: quadratic, minutes for a few MiB in small reads).
    A line, or an event, longer than ``max_line_bytes`` is a MalformedResponseError.
    """

    __slots__ = ("_data", "_event_bytes", "_max", "_parts", "_pending")

    def __init__(self, max_line_bytes: int = 4 << 20) -> None:
        self._parts: list[bytes] = []
        """The current line so far (received without its newline yet)."""
        self._pending = 0
        self._data: list[bytes] = []
        """The data lines of the current event."""
        self._event_bytes = 0
        self._max = max_line_bytes

    def _too_long(self, what: str) -> MalformedResponseError:
        return _malformed(f"stream {what} longer than max_sse_line_bytes ({self._max} bytes)")

    def feed(self, chunk: bytes) -> Iterator[str]:
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            if self._parts:
                self._parts.append(chunk[start:nl])
                line = b"".join(self._parts)
                self._parts, self._pending = [], 0
            else:
                line = chunk[start:nl]
            start = nl + 1
            if len(line) > self._max:
                raise self._too_long("line")
            data = self._line(line)
            if data is not None:
                yield data
        if start < len(chunk):
            self._pending += len(chunk) - start
            if self._pending > self._max:
                raise self._too_long("line")
            self._parts.append(chunk[start:] if start else chunk)

    def _line(self, line: bytes) -> str | None:
        """Take one line; the event's data when the line ends it."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return self._event()
        if line.startswith(b":"):
            return None
        field, _, value = line.partition(b":")
        if field == b"data":
            if value.startswith(b" "):
                value = value[1:]
            self._event_bytes += len(value) + 1
            if self._event_bytes > self._max:
                raise self._too_long("event")
            self._data.append(value)
        return None

    def _event(self) -> str | None:
        if not self._data:
            return None
        data = b"\n".join(self._data).decode("utf-8", "replace")
        self._data, self._event_bytes = [], 0
        return data

    def close(self) -> Iterator[str]:
        """Flush an event left unterminated at the end of the stream."""
        if self._parts and b"".join(self._parts).strip():
            yield from self.feed(b"\n\n")
        elif (data := self._event()) is not None:
            yield data


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


_CONTEXT = re.compile(r"context[_ ]length|context window|maximum context|too many tokens", re.I)
_POLICY = re.compile(r"content[_ ]policy|content[_ ]filter|safety system|flagged", re.I)
_QUOTA = re.compile(r"insufficient_quota|quota|billing|credit", re.I)


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
        # A proxy between us and the provider wants (other) credentials: the provider cannot
        # be reached, which is no fault of the request. Its body may echo what was sent.
        return provider_error(
            ErrorKind.CONNECTION, "HTTP 407: the proxy requires authentication", status_code=407
        )
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
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date);
    None when absent or not a number."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return _seconds(float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _seconds(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError):
        return None
    return _seconds(when - (time.time() if now is None else now))


def _seconds(value: float) -> float | None:
    """A non-negative number of seconds; None for NaN (an infinity stays: whoever waits caps
    it, e.g. by ``recovery.max_cooldown``)."""
    return None if math.isnan(value) else max(0.0, value)


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
        return _seconds(float(value))
    except ValueError:
        parts = _RESET.findall(value)
        return _seconds(sum(float(n) * _RESET_UNITS[u] for n, u in parts)) if parts else None


def _int(value: str | None) -> int | None:
    """A header's non-negative count (``"100"``, ``"99.0"``); None when it is not one."""
    try:
        n = int(float(value)) if value is not None else None
    except (ValueError, OverflowError):  # "x", "nan", "inf"
        return None
    return n if n is None or n >= 0 else None


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
