"""What a model of the fault-injecting server does with the next request.

A :class:`Behaviour` is plain data (it crosses the HTTP control API as JSON);
the functions below build the common ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = [
    "KINDS",
    "Behaviour",
    "content_policy",
    "context_length_exceeded",
    "cut",
    "error",
    "gzip_bomb",
    "gzip_stream",
    "interim_flood",
    "malformed_event",
    "no_done",
    "ok",
    "overloaded",
    "quota_exhausted",
    "rate_limited",
    "raw_body",
    "raw_stream",
    "refusal",
    "reply",
    "reset",
    "server_error",
    "silent",
    "slow_first_token",
    "stall",
    "stream_error",
    "tool_call",
    "trickle",
    "unauthorized",
]


KINDS = ("ok", "status", "reset", "silent", "interim")
"""What a behaviour's ``kind`` may be."""


@dataclass(frozen=True)
class Behaviour:
    kind: str = "ok"
    """``ok`` (answer), ``status`` (an HTTP error), ``reset`` (RST before headers), ``silent``,
    ``interim`` (``HTTP/1.1 100 Continue`` interim responses, endlessly, never the reply)."""
    text: str | None = None
    """Scripted reply; None: the default echo."""
    tool_calls: tuple[dict[str, Any], ...] = ()
    status: int = 200
    body: dict[str, Any] | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds before the headers (non-streaming: before the whole reply)."""
    first_token_delay: float = 0.0
    """Streaming: headers at once, then this wait before the first token."""
    stall_after: int | None = None
    stall_for: float = 0.0
    cut_after: int | None = None
    """Streaming: close the connection after this many content chunks (no finish, no [DONE])."""
    malformed_after: int | None = None
    omit_done: bool = False
    chunk_delay: float = 0.0
    """Streaming: pause between chunks."""
    reject_prefill: bool = False
    """Answer 400 to a request that ends with an assistant message (no prefill support)."""
    linger_after_done: float = 0.0
    """Streaming: hold the response open this long after ``[DONE]`` before ending it."""
    trickle: float = 0.0
    """Send the reply one byte every ``trickle`` seconds (status line and headers too, unless
    ``trickle_body_only``): a server that is never silent long enough for a read timeout."""
    trickle_body_only: bool = False
    raw_body: str | None = None
    """The reply's body, verbatim (a 200, or ``status`` for ``kind="status"``): hostile JSON."""
    raw_events: tuple[str, ...] = ()
    """Streaming: after the headers send exactly these pieces of event-stream text (no
    automatic events, no ``[DONE]`` unless given), then end the body."""
    bomb: int = 0
    """Answer with a gzip body that inflates to this many zero bytes (a decompression bomb),
    with ``status`` (200 by default)."""
    gzip_stream: bool = False
    """Streaming: gzip the event stream (``content-encoding: gzip``), flushed after each event."""
    refusal: bool = False
    """Refuse to answer: no content, finish ``content_filter`` (Anthropic: ``stop_reason:
    refusal``; Azure: its content filter's verdict)."""
    error_event_after: int | None = None
    """Streaming: after this many content chunks, report an error *inside* the 200 stream
    (``body`` says which, in OpenAI's shape; default: an overload) and end it."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"unknown behaviour kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )

    def with_headers(self, **headers: str) -> Behaviour:
        """This behaviour with extra reply headers (``x_ratelimit_remaining_requests="3"``)."""
        merged = {**self.headers, **{k.replace("_", "-"): str(v) for k, v in headers.items()}}
        return replace(self, headers=merged)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tool_calls"] = list(self.tool_calls)
        data["raw_events"] = list(self.raw_events)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        """A behaviour from its JSON form (ValueError naming what is wrong)."""
        if not isinstance(data, dict):
            raise ValueError('a behaviour is a JSON object, e.g. {"kind": "status", ...}')
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"unknown behaviour field(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        data = dict(data)
        data["tool_calls"] = tuple(data.get("tool_calls") or ())
        data["raw_events"] = tuple(data.get("raw_events") or ())
        return cls(**data)


def ok(**kw: Any) -> Behaviour:
    return Behaviour(**kw)


def reply(text: str, **kw: Any) -> Behaviour:
    return Behaviour(text=text, **kw)


def tool_call(
    name: str, arguments: dict[str, Any] | str, *, id: str | None = None, **kw: Any
) -> Behaviour:
    return Behaviour(tool_calls=({"name": name, "arguments": arguments, "id": id},), **kw)


def error(
    status: int,
    message: str = "error",
    *,
    code: str | None = None,
    retry_after: float | None = None,
    **kw: Any,
) -> Behaviour:
    body = {"error": {"message": message, "type": code or "error", "code": code}}
    return Behaviour(kind="status", status=status, body=body, retry_after=retry_after, **kw)


def rate_limited(retry_after: float | None = None) -> Behaviour:
    return error(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=retry_after)


def quota_exhausted() -> Behaviour:
    return error(429, "You exceeded your current quota", code="insufficient_quota")


def server_error(status: int = 500) -> Behaviour:
    return error(status, "The server had an error", code="server_error")


def unauthorized(status: int = 401) -> Behaviour:
    return error(status, "Incorrect API key provided", code="invalid_api_key")


def context_length_exceeded() -> Behaviour:
    return error(
        400, "This model's maximum context length is 4096 tokens", code="context_length_exceeded"
    )


def content_policy() -> Behaviour:
    return error(
        400, "Your request was rejected by the safety system", code="content_policy_violation"
    )


def reset() -> Behaviour:
    return Behaviour(kind="reset")


def silent() -> Behaviour:
    return Behaviour(kind="silent")


def slow_first_token(seconds: float, **kw: Any) -> Behaviour:
    return Behaviour(first_token_delay=seconds, **kw)


def stall(after: int, seconds: float, **kw: Any) -> Behaviour:
    return Behaviour(stall_after=after, stall_for=seconds, **kw)


def cut(after: int, **kw: Any) -> Behaviour:
    return Behaviour(cut_after=after, **kw)


def malformed_event(after: int = 1, **kw: Any) -> Behaviour:
    return Behaviour(malformed_after=after, **kw)


def no_done(**kw: Any) -> Behaviour:
    return Behaviour(omit_done=True, **kw)


def trickle(seconds_per_byte: float, *, body_only: bool = False, **kw: Any) -> Behaviour:
    """Send the reply one byte at a time (headers too unless ``body_only``)."""
    return Behaviour(trickle=seconds_per_byte, trickle_body_only=body_only, **kw)


def interim_flood() -> Behaviour:
    """Answer with ``HTTP/1.1 100 Continue`` interim responses forever."""
    return Behaviour(kind="interim")


def raw_body(body: str, status: int = 200, **kw: Any) -> Behaviour:
    """Reply with exactly ``body`` (as ``application/json``) and ``status``."""
    return Behaviour(kind="status" if status >= 400 else "ok", status=status, raw_body=body, **kw)


def raw_stream(*pieces: str, **kw: Any) -> Behaviour:
    """Stream exactly these pieces of event-stream text (``"data: {...}\\n\\n"``)."""
    return Behaviour(raw_events=pieces, **kw)


def gzip_bomb(inflated_bytes: int, status: int = 200) -> Behaviour:
    """A gzip body inflating to ``inflated_bytes`` zeros (~1000:1), as a reply or an error."""
    return Behaviour(kind="status" if status >= 400 else "ok", status=status, bomb=inflated_bytes)


def gzip_stream(**kw: Any) -> Behaviour:
    """Stream the answer gzip-encoded, as some gateways do."""
    return Behaviour(gzip_stream=True, **kw)


def overloaded() -> Behaviour:
    """The provider is overloaded: 529 ``overloaded_error`` (Anthropic's status for it)."""
    return error(529, "Overloaded", code="overloaded_error")


def refusal(**kw: Any) -> Behaviour:
    """The model refuses: an empty answer finished by the provider's content filter."""
    return Behaviour(refusal=True, **kw)


def stream_error(after: int = 0, **kw: Any) -> Behaviour:
    """An error event inside a 200 stream after ``after`` content chunks (0: before the
    first token), then the end of the body: an overload unless ``body`` says otherwise."""
    body = kw.pop("body", None) or {"error": {"message": "Overloaded", "type": "overloaded_error"}}
    return Behaviour(error_event_after=after, body=body, **kw)
