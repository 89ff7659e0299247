"""The Google Gemini dialect (Generative Language API), sans I/O.

``POST {base_url}/{api_version}/models/{model}:generateContent``, or
``:streamGenerateContent?alt=sse`` for a stream, with the key in ``x-goog-api-key`` (as
Google's ``google-genai`` SDK sends it). The request translation is :mod:`._gemini_request`;
here:

* a reply's candidate parts become the text (``thought`` parts are not part of the answer)
  and the tool calls (``functionCall``: its arguments serialized, its ``thoughtSignature``
  remembered for the follow-up turn, an id made up when Gemini sends none);
* ``finishReason`` maps to OpenAI's (``SAFETY``, ``RECITATION``, ``BLOCKLIST``,
  ``PROHIBITED_CONTENT``... to ``content_filter``), and a blocked prompt
  (``promptFeedback.blockReason``) or a safety stop with no answer is a content-policy error;
* ``usageMetadata`` is taken as reported (thinking tokens count as completion, as billed);
* errors (``{"error": {"code", "message", "status", "details"}}``): ``RESOURCE_EXHAUSTED``
  is a rate limit (an exhausted quota when a per-day quota failed), its delay read from the
  body's ``RetryInfo.retryDelay`` (Gemini sends no header); ``UNAVAILABLE`` a server error;
  an invalid key (a 400 with ``API_KEY_INVALID``) an authentication failure;
* a stream is one ``GenerateContentResponse`` per event, text in pieces and each function
  call whole; it has no end marker: the last event carries the finish reason and usage.
"""

from __future__ import annotations

import json
import re
import time
import uuid
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
    MAX_BATCH_GEMINI,
    ParsedEmbeddings,
    gemini_embedding_endpoint,
    gemini_embedding_payload,
    parse_gemini_embeddings,
)
from ._gemini_request import Signatures, build_gemini_payload
from ._http_errors import CONTEXT, kind_for_status, proxy_auth_error
from ._reply import (
    ParsedResponse,
    RateLimitInfo,
    guarded,
    load_json,
    malformed,
    parse_retry_after,
    seconds,
    usage_of,
)

__all__ = ["DEFAULT_VERSION", "GeminiDialect", "classify_gemini_error"]

DEFAULT_VERSION = "v1beta"

FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
}
_CONTEXT = re.compile(CONTEXT.pattern + r"|exceeds the maximum number of tokens", re.I)
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _blocked(why: str) -> ProviderError:
    return provider_error(ErrorKind.CONTENT_POLICY, f"Gemini refused: {why}")


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    thoughts = raw.get("thoughtsTokenCount")
    completion = raw.get("candidatesTokenCount")
    if isinstance(thoughts, int) and isinstance(completion, int):
        completion += thoughts
    elif completion is None:
        completion = thoughts
    return usage_of(raw.get("promptTokenCount"), completion, raw.get("totalTokenCount"))


class _Candidate:
    """What one response (a whole reply, or one stream event) says, parsed and checked."""

    def __init__(self, data: Any, signatures: Signatures, first_call: int) -> None:
        if not isinstance(data, Mapping):
            raise malformed("response is not a JSON object")
        if "error" in data and "candidates" not in data:
            raise classify_gemini_error(500, {}, json.dumps(data).encode(), in_stream=True)
        self.usage = _usage(data.get("usageMetadata"))
        model = data.get("modelVersion")
        self.model = model if isinstance(model, str) else None
        ident = data.get("responseId")
        self.id = ident if isinstance(ident, str) else ""
        self.texts: list[str] = []
        self.calls: list[ToolCall] = []
        self.finish: str | None = None
        candidates = data.get("candidates")
        feedback = data.get("promptFeedback")
        if not candidates:
            if isinstance(feedback, Mapping) and feedback.get("blockReason"):
                raise _blocked(f"prompt blocked ({feedback['blockReason']})")
            return
        if not isinstance(candidates, list) or not isinstance(candidates[0], Mapping):
            raise malformed("candidates is not a list of objects")
        candidate = candidates[0]
        content = candidate.get("content") or {}
        parts = content.get("parts") or [] if isinstance(content, Mapping) else None
        if not isinstance(parts, list):
            raise malformed("candidate content has no parts list")
        for part in parts:
            if not isinstance(part, Mapping):
                raise malformed("content part is not an object")
            if isinstance(part.get("functionCall"), Mapping):
                self.calls.append(self._call(part, signatures, first_call + len(self.calls)))
            elif part.get("thought"):
                continue
            elif "text" in part:
                if not isinstance(part["text"], str):
                    raise malformed("text part is not a string")
                self.texts.append(part["text"])
        reason = candidate.get("finishReason")
        if reason is not None:
            if not isinstance(reason, str):
                raise malformed("finishReason is not a string")
            if reason == "MALFORMED_FUNCTION_CALL":
                raise malformed("Gemini produced a malformed function call")
            self.finish = FINISH.get(reason, "stop")
            if self.calls and self.finish == "stop":
                self.finish = "tool_calls"

    @staticmethod
    def _call(part: Mapping[str, Any], signatures: Signatures, n: int) -> ToolCall:
        fn = part["functionCall"]
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise malformed("functionCall has no name")
        call_id = fn.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{uuid.uuid4().hex[:20]}"
        signature = part.get("thoughtSignature")
        if isinstance(signature, str) and signature:
            signatures.remember(call_id, signature)
        args = fn.get("args")
        return ToolCall(call_id, name, json.dumps({} if args is None else args))


class GeminiStreamParser:
    """One ``streamGenerateContent?alt=sse`` stream (it ends with the body: no marker)."""

    __slots__ = ("_answered", "_calls", "_signatures", "done")

    def __init__(self, signatures: Signatures) -> None:
        self.done = False
        self._signatures = signatures
        self._calls = 0
        self._answered = False

    def feed(self, data: str) -> Iterator[CompletionChunk]:
        event = load_json(data, "stream event")
        part = guarded(
            lambda d: _Candidate(d, self._signatures, self._calls), event, "stream event"
        )
        deltas = [
            ToolCallDelta(index=self._calls + i, id=c.id, name=c.name, arguments=c.arguments)
            for i, c in enumerate(part.calls)
        ]
        self._calls += len(deltas)
        chunk = CompletionChunk(
            content="".join(part.texts),
            tool_call_deltas=deltas,
            finish_reason="tool_calls" if self._calls and part.finish == "stop" else part.finish,
            usage=part.usage,
            model=part.model,
        )
        self._answered = self._answered or chunk.has_token
        if chunk.finish_reason == "content_filter" and not self._answered:
            raise _blocked("the answer was stopped by its safety filters")
        yield chunk


def _details(body: bytes) -> tuple[str, str, list[Any]]:
    """(status, message, details) from an error body, best effort: never raises."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, Mapping) else data
        if isinstance(err, list) and err and isinstance(err[0], Mapping):
            err = err[0].get("error", err[0])  # some gateways wrap it in a list
        if isinstance(err, Mapping):
            details = err.get("details")
            return (
                str(err.get("status") or "")[:100],
                str(err.get("message") or "")[:300],
                details if isinstance(details, list) else [],
            )
        return "", str(err)[:300], []
    except Exception:  # not JSON, too deep, truncated at max_error_bytes: show the text
        return "", body[:300].decode("utf-8", "replace"), []


def _retry_delay(details: list[Any]) -> float | None:
    for item in details:
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("RetryInfo"):
            match = _DELAY.match(str(item.get("retryDelay") or ""))
            if match:
                return seconds(float(match.group(1)))
    return None


def _daily(details: list[Any]) -> bool:
    for item in details:
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("QuotaFailure"):
            for v in item.get("violations") or ():
                if isinstance(v, Mapping) and "perday" in str(v.get("quotaId", "")).lower():
                    return True
    return False


def _reasons(details: list[Any]) -> set[str]:
    return {
        str(item.get("reason"))
        for item in details
        if isinstance(item, Mapping) and item.get("reason")
    }


def classify_gemini_error(
    status: int, headers: Mapping[str, str], body: bytes, *, in_stream: bool = False
) -> ProviderError:
    """A Gemini error (an HTTP reply, or an error event in a stream) in the taxonomy."""
    if status == 407 and not in_stream:
        return proxy_auth_error()
    code, message, details = _details(body)
    if code == "RESOURCE_EXHAUSTED":
        kind = ErrorKind.QUOTA_EXHAUSTED if _daily(details) else ErrorKind.RATE_LIMITED
    elif code == "UNAVAILABLE" or code == "INTERNAL" or code == "DEADLINE_EXCEEDED":
        kind = ErrorKind.SERVER_ERROR
    elif "API_KEY_INVALID" in _reasons(details) or code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        kind = ErrorKind.AUTHENTICATION
    elif in_stream:
        kind = ErrorKind.SERVER_ERROR
    else:
        kind = kind_for_status(status, f"{code} {message}", _CONTEXT)
        if kind is ErrorKind.QUOTA_EXHAUSTED and not _daily(details):
            kind = ErrorKind.RATE_LIMITED  # every Gemini 429 says "quota"
    said = f"{code}: {message}" if code else message
    where = "error in stream" if in_stream else f"HTTP {status}"
    retry_after = _retry_delay(details)
    if retry_after is None and not in_stream:
        retry_after = parse_retry_after(headers)
    return provider_error(
        kind,
        f"{where}: {said}" if said else where,
        status_code=None if in_stream else status,
        retry_after=retry_after,
    )


class GeminiDialect:
    """The Generative Language API (see the module docstring)."""

    name = "gemini"

    def __init__(self, api_version: str | None = None) -> None:
        self.api_version = api_version or DEFAULT_VERSION
        self.signatures = Signatures()

    def endpoint(self, model_name: str, *, stream: bool) -> tuple[str, Mapping[str, str]]:
        model = model_name.removeprefix("models/")
        if stream:
            return f"/{self.api_version}/models/{model}:streamGenerateContent", {"alt": "sse"}
        return f"/{self.api_version}/models/{model}:generateContent", {}

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    def build_payload(
        self, request: CompletionRequest, model_name: str, *, stream: bool
    ) -> dict[str, Any]:
        return build_gemini_payload(request, self.signatures)

    def parse_reply(self, body: bytes, request: CompletionRequest) -> ParsedResponse:
        data = load_json(body, "body")
        part = guarded(lambda d: _Candidate(d, self.signatures, 0), data, "body")
        content = "".join(part.texts)
        if part.finish == "content_filter" and not content and not part.calls:
            raise _blocked("the answer was stopped by its safety filters")
        if part.finish is None and not content and not part.calls:
            raise malformed("no candidates")
        return ParsedResponse(
            id=part.id,
            provider_model=part.model,
            content=content if content or not part.calls else None,
            tool_calls=part.calls,
            finish_reason=part.finish,
            usage=part.usage,
            created=int(time.time()),
        )

    def stream_parser(self, request: CompletionRequest) -> GeminiStreamParser:
        return GeminiStreamParser(self.signatures)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return classify_gemini_error(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        return None  # Gemini reports no headroom in its headers

    # --- embeddings (``embedContent`` / ``batchEmbedContents``; see :mod:`._embeddings`) --
    max_embedding_batch = MAX_BATCH_GEMINI

    def embedding_endpoint(self, model_name: str, count: int) -> tuple[str, Mapping[str, str]]:
        return gemini_embedding_endpoint(self.api_version, model_name, count), {}

    def build_embedding_payload(self, request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
        return gemini_embedding_payload(request, model_name)

    def parse_embeddings(self, body: bytes, request: EmbeddingRequest) -> ParsedEmbeddings:
        return parse_gemini_embeddings(body, request)
