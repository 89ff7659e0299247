"""The fault server's OpenAI chat-completions wire, and Azure OpenAI's (same bodies, other
URL and key header): requests checked as OpenAI checks them, replies, streams (``data:``
events, a usage chunk when asked, ``[DONE]``), errors and ``x-ratelimit-*`` headers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ._dialect import Answer, Refusal, StreamScript, openai_error

__all__ = ["AzureWire", "OpenAIWire", "words"]


def words(text: str) -> list[str]:
    """``text`` in token-like pieces (each but the first keeps its leading space)."""
    parts, current = [], ""
    for ch in text:
        if ch == " " and current:
            parts.append(current)
            current = ""
        current += ch
    if current:
        parts.append(current)
    return parts or [""]


_KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
"""The top-level fields of OpenAI's chat-completions request. Anything else is a 400, as
OpenAI and Azure answer it, so tests catch a client that sends its own options."""


def _event(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


class OpenAIWire:
    name = "openai"

    def check(
        self, body: Any, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Refusal | None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return Refusal(400, openai_error("body must be JSON with a 'messages' list"))
        unknown = sorted(set(body) - _KNOWN_FIELDS)
        if unknown:  # as OpenAI and Azure do: a client must not leak its own options
            message = f"Unrecognized request argument supplied: {', '.join(unknown)}"
            return Refusal(400, openai_error(message, param=unknown[0]))
        return None

    def to_openai(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def credential(self, headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def error_body(
        self, status: int, error: dict[str, Any], retry_after: float | None = None
    ) -> dict[str, Any]:
        return error

    def error_status(self, status: int, error: dict[str, Any]) -> int:
        return status

    def rate_limit_headers(self, limit: int, remaining: int, window: float) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": f"{window:g}s",
        }

    def _message(self, answer: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
        if answer.calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in answer.calls
            ]
        return message

    def reply(self, answer: Answer) -> dict[str, Any]:
        p, c = answer.prompt_tokens, answer.completion_tokens
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [
                {"index": 0, "message": self._message(answer), "finish_reason": answer.finish}
            ],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }

    def stream(self, answer: Answer, body: dict[str, Any]) -> StreamScript:
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": answer.model,
        }

        def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
            return _event(base | {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]})

        pieces = [delta({"content": w}) for w in words(answer.text)] if answer.text else []
        for call in answer.calls:
            args, i = call["arguments"], call["index"]
            half = len(args) // 2
            fn = {"name": call["name"], "arguments": args[:half]}
            first = {"index": i, "id": call["id"], "type": "function", "function": fn}
            pieces.append(delta({"tool_calls": [first]}))
            pieces.append(
                delta({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
            )
        closing = [delta({}, answer.finish)]
        if (body.get("stream_options") or {}).get("include_usage"):
            p, c = answer.prompt_tokens, max(1, len(pieces))
            usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            closing.append(_event(base | {"choices": [], "usage": usage}))
        opening = [delta({"role": "assistant", "content": ""})]
        return StreamScript(opening, pieces, closing, b"data: [DONE]\n\n")

    def error_event(self, status: int, error: dict[str, Any]) -> bytes:
        return _event(self.error_body(status, error))

    def malformed_event(self) -> bytes:
        return b"data: {not json\n\n"


class AzureWire(OpenAIWire):
    """Azure OpenAI: the deployment in the path, ``api-version`` required, ``api-key``."""

    name = "azure-openai"

    def check(
        self, body: Any, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Refusal | None:
        if not query.get("api-version"):
            message = "Missing required query parameter: api-version"
            return Refusal(404, {"error": {"code": "404", "message": message}})
        return super().check(body, query, headers)

    def credential(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("api-key") or super().credential(headers)

    def error_body(
        self, status: int, error: dict[str, Any], retry_after: float | None = None
    ) -> dict[str, Any]:
        err = dict(error.get("error") or {})
        code = err.get("code") or err.get("type")
        if code == "content_policy_violation":  # Azure's content filter, on the prompt
            return {
                "error": {
                    "message": "The response was filtered due to the prompt triggering Azure "
                    "OpenAI's content management policy.",
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {"hate": {"filtered": True, "severity": "high"}},
                    },
                }
            }
        return {"error": {"code": str(code or status), "message": err.get("message", "error")}}

    def reply(self, answer: Answer) -> dict[str, Any]:
        out = super().reply(answer)
        filtered = answer.finish == "content_filter"
        out["choices"][0]["content_filter_results"] = {
            "hate": {"filtered": filtered, "severity": "high" if filtered else "safe"}
        }
        out["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
        return out
