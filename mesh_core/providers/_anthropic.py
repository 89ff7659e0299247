"""The Anthropic Messages dialect, sans I/O.

``POST {base_url}/v1/messages`` with the key as ``Authorization: Bearer`` and an
``anthropic-version`` header: what Anthropic's current official SDK (``anthropic`` 2.x)
sends. ``auth: api-key`` sends the key as ``x-api-key`` instead, as older SDKs did; the
version is pinned with ``api_version``. The request
translation is :mod:`._anthropic_request`, the stream's events :mod:`._anthropic_stream`;
here are the reply, the errors and the rate-limit headers:

* a reply's ``content`` blocks become the text and the tool calls (``tool_use`` input
  serialized as JSON arguments; ``thinking`` blocks are not part of the answer), the forced
  structured-output tool's input becomes the JSON text, ``stop_reason`` an OpenAI finish
  reason, and ``usage`` is taken as reported (cache reads and writes count as prompt);
* a refusal (``stop_reason: refusal``) with no answer is a content-policy error;
* errors (``{"type": "error", "error": {"type", "message"}}``) are classified by status as
  for every provider, so 529 ``overloaded_error`` is a server error; and by what Anthropic
  says: "prompt is too long" is a context-window overflow, and a spent credit balance (a
  400) is an exhausted quota, which moves on to another provider instead of being raised
  as the caller's mistake;
* ``anthropic-ratelimit-requests-*`` / ``-tokens-*`` headers (reset as RFC 3339 times) feed
  the rate-limit strategies as OpenAI's ``x-ratelimit-*`` do.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .._errors import ErrorKind, ProviderError, provider_error
from .._types import CompletionRequest, ToolCall
from ._anthropic_request import OUTPUT_TOOL, build_messages_payload, output_tool_forced
from ._anthropic_stream import AnthropicStreamParser, anthropic_usage, finish, refused
from ._http_errors import CONTEXT, kind_for_status, proxy_auth_error
from ._reply import (
    ParsedResponse,
    RateLimitInfo,
    guarded,
    header_count,
    load_json,
    malformed,
    parse_retry_after,
    seconds,
)

__all__ = ["DEFAULT_VERSION", "AnthropicDialect", "parse_message"]

DEFAULT_VERSION = "2026-10-21"
"""The ``anthropic-version`` the current official SDK sends (``anthropic`` 2.15); the events
and blocks this dialect reads are the ones that SDK's types define for it."""

_CONTEXT = re.compile(
    CONTEXT.pattern + r"|prompt is too long|exceed context limit|context window", re.I
)
_CREDIT = re.compile(r"credit balance|billing", re.I)


def parse_message(body: bytes | str, *, structured: bool = False) -> ParsedResponse:
    """Parse a Messages reply, or raise MalformedResponseError (or a refusal's
    ContentPolicyError), and nothing else."""
    data = load_json(body, "body")
    return guarded(lambda d: _message(d, structured), data, "body")


def _message(data: Any, structured: bool) -> ParsedResponse:
    if not isinstance(data, Mapping):
        raise malformed("body is not a JSON object")
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise malformed("message has no content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(blocks):
        if not isinstance(block, Mapping):
            raise malformed(f"content block {i} is not an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise malformed(f"content block {i} text is not a string")
            texts.append(text)
        elif kind == "tool_use":
            name, args = block.get("name"), block.get("input")
            if not isinstance(name, str) or not name:
                raise malformed(f"tool_use block {i} has no name")
            arguments = json.dumps({} if args is None else args)
            if structured and name == OUTPUT_TOOL:
                texts.append(arguments)
                continue
            call_id = block.get("id")
            calls.append(
                ToolCall(call_id if isinstance(call_id, str) else f"toolu_{i}", name, arguments)
            )
    reason = finish(data.get("stop_reason"), structured and not calls)
    content = "".join(texts)
    if reason == "content_filter" and not content and not calls:
        raise refused()
    ident, model = data.get("id"), data.get("model")
    return ParsedResponse(
        id=ident if isinstance(ident, str) else "",
        provider_model=model if isinstance(model, str) else None,
        content=content if content or not calls else None,
        tool_calls=calls,
        finish_reason=reason,
        usage=anthropic_usage(data.get("usage")),
        created=int(time.time()),
    )


def _error_text(body: bytes) -> tuple[str, str]:
    """(error type, message) from an error body, best effort: never raises."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, Mapping) else data
        if isinstance(err, Mapping):
            return str(err.get("type") or "")[:100], str(err.get("message") or "")[:300]
        return "", str(err)[:300]
    except Exception:  # not JSON, too deep, truncated at max_error_bytes: show the text
        return "", body[:300].decode("utf-8", "replace")


def classify_anthropic_error(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """An Anthropic error reply in the error taxonomy, keeping the status."""
    if status == 407:
        return proxy_auth_error()
    code, message = _error_text(body)
    text = f"{code} {message}"
    kind = kind_for_status(status, text, _CONTEXT)
    if kind is ErrorKind.BAD_REQUEST and _CREDIT.search(message):
        kind = ErrorKind.QUOTA_EXHAUSTED
    shown = f"HTTP {status}" + (
        f": {code}: {message}" if code else f": {message}" if message else ""
    )
    return provider_error(kind, shown, status_code=status, retry_after=parse_retry_after(headers))


def _reset_in(value: str | None, now: float) -> float | None:
    """Seconds until an RFC 3339 reset time (``2026-12-01T19:00:30Z``)."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None
    return seconds(when - now)


def anthropic_rate_limits(
    headers: Mapping[str, str], *, now: float | None = None
) -> RateLimitInfo | None:
    """Read ``anthropic-ratelimit-*`` headers; None when the provider sent none."""
    get = headers.get
    prefix = "anthropic-ratelimit-"
    if get(prefix + "requests-remaining") is None and get(prefix + "tokens-remaining") is None:
        return None
    return RateLimitInfo(
        requests_limit=header_count(get(prefix + "requests-limit")),
        requests_remaining=header_count(get(prefix + "requests-remaining")),
        tokens_limit=header_count(get(prefix + "tokens-limit")),
        tokens_remaining=header_count(get(prefix + "tokens-remaining")),
        reset_requests=_reset_in(
            get(prefix + "requests-reset"), time.time() if now is None else now
        ),
    )


class AnthropicDialect:
    """The Messages API (see the module docstring)."""

    name = "anthropic"
    requires_max_tokens = True
    """``max_tokens`` is required: the model's ``max_output_tokens`` when set, else
    ``default_max_tokens``."""

    def __init__(
        self,
        api_version: str | None = None,
        *,
        auth: str | None = None,
        default_max_tokens: int = 4096,
    ) -> None:
        self.api_version = api_version or DEFAULT_VERSION
        self.auth = auth or "bearer"
        self.default_max_tokens = default_max_tokens

    def endpoint(self, model_name: str, *, stream: bool) -> tuple[str, Mapping[str, str]]:
        return "/v1/messages", {}

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.api_version}
        if api_key and self.auth == "api-key":
            headers["x-api-key"] = api_key
        elif api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return headers

    def build_payload(
        self, request: CompletionRequest, model_name: str, *, stream: bool
    ) -> dict[str, Any]:
        return build_messages_payload(
            request, model_name, stream=stream, default_max_tokens=self.default_max_tokens
        )

    def parse_reply(self, body: bytes, request: CompletionRequest) -> ParsedResponse:
        return parse_message(body, structured=output_tool_forced(request))

    def stream_parser(self, request: CompletionRequest) -> AnthropicStreamParser:
        return AnthropicStreamParser(request)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return classify_anthropic_error(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        return anthropic_rate_limits(headers)
