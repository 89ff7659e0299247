"""The fault server's Anthropic Messages wire (``POST /v1/messages``).

Requests are checked the way the Messages API checks them (``anthropic-version`` header,
``max_tokens`` required, user-first alternating roles, non-empty text blocks, every
``tool_use`` answered by a ``tool_result`` in the next turn, no trailing whitespace in a
prefill, no unknown fields), so a client that translates badly fails here as it would there.
Replies, typed stream events (with a ``ping`` between deltas), ``{"type": "error"}`` bodies
and ``anthropic-ratelimit-*`` headers are Anthropic's, checked against the official SDK's
parsers by the tests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ._dialect import Answer, Refusal, StreamScript
from ._openai_wire import words

__all__ = ["AnthropicWire"]

_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
    }
)
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_MESSAGES = {
    "context_length_exceeded": "prompt is too long: 5000 tokens > 4096 maximum",
    "content_policy_violation": "Output blocked by content filtering policy",
    "invalid_api_key": "invalid x-api-key",
    "server_error": "Internal server error",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_STOP["content_filter"] = "refusal"


def _error(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


def _bad(message: str) -> Refusal:
    return Refusal(400, _error("invalid_request_error", message))


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


def _blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _check_messages(messages: Any) -> str | None:
    """What the Messages API would refuse in ``messages`` (None: nothing)."""
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    expected, pending = "user", set[str]()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f'messages.{i}.role: Input should be "user" or "assistant"'
        if role != expected:
            return 'messages: roles must alternate between "user" and "assistant"'
        content = message.get("content")
        if not isinstance(content, (str, list)):
            return f"messages.{i}.content: Input should be a valid string or list"
        blocks = _blocks(content)
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if pending - results:
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(pending - results))}"
            )
        if results - pending:
            return f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks"
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
        pending = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
        expected = "assistant" if role == "user" else "user"
    last = _blocks(messages[-1].get("content"))
    final = last[-1] if last and messages[-1]["role"] == "assistant" else {}
    if final.get("type") == "text" and final["text"] != final["text"].rstrip():
        return "messages: final assistant content cannot end with trailing whitespace"
    return None


def _text(blocks: list[Any]) -> str:
    return "".join(b.get("text", "") for b in blocks if b.get("type") == "text")


class AnthropicWire:
    name = "anthropic"

    def check(
        self, body: Any, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Refusal | None:
        if not headers.get("anthropic-version"):
            return _bad("anthropic-version: header is required")
        if not isinstance(body, dict):
            return _bad("body: Input should be a valid dictionary")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            return _bad(f"{unknown[0]}: Extra inputs are not permitted")
        if not isinstance(body.get("max_tokens"), int):
            return _bad("max_tokens: Field required")
        if not isinstance(body.get("model"), str):
            return _bad("model: Field required")
        problem = _check_messages(body.get("messages"))
        return _bad(problem) if problem else None

    def to_openai(self, body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        system = body.get("system")
        if system:
            text = system if isinstance(system, str) else _text(system)
            messages.append({"role": "system", "content": text})
        for message in body["messages"]:
            blocks = _blocks(message["content"])
            for block in blocks:
                if block.get("type") == "tool_result":
                    result = block.get("content")
                    text = result if isinstance(result, str) else _text(result or [])
                    messages.append(
                        {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}
                    )
            out: dict[str, Any] = {"role": message["role"], "content": _text(blocks)}
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": json.dumps(b.get("input"))},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            if calls:
                out["tool_calls"] = calls
            if out["content"] or calls or message["role"] == "assistant":
                messages.append(out)
        openai: dict[str, Any] = {
            "model": body["model"],
            "messages": messages,
            "max_tokens": body["max_tokens"],
        }
        if body.get("stop_sequences"):
            openai["stop"] = body["stop_sequences"]
        if body.get("tools"):
            openai["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t["name"], "parameters": t.get("input_schema") or {}},
                }
                for t in body["tools"]
            ]
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            openai["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        elif choice.get("type") in ("any", "none", "auto"):
            openai["tool_choice"] = {"any": "required"}.get(choice["type"], choice["type"])
        return openai

    def credential(self, headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization") or ""
        return headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else None)

    def error_body(
        self, status: int, error: dict[str, Any], retry_after: float | None = None
    ) -> dict[str, Any]:
        found = error.get("error")
        err: dict[str, Any] = found if isinstance(found, dict) else {}
        code = str(err.get("code") or err.get("type") or "")
        kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        if code == "overloaded_error":
            kind = code
        return _error(kind, _MESSAGES.get(code) or str(err.get("message") or "error"))

    def error_status(self, status: int, error: dict[str, Any]) -> int:
        return status

    def rate_limit_headers(self, limit: int, remaining: int, window: float) -> dict[str, str]:
        reset = datetime.now(UTC) + timedelta(seconds=window)
        return {
            "anthropic-ratelimit-requests-limit": str(limit),
            "anthropic-ratelimit-requests-remaining": str(remaining),
            "anthropic-ratelimit-requests-reset": reset.isoformat(timespec="seconds"),
        }

    def reply(self, answer: Answer) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if answer.text:
            content.append({"type": "text", "text": answer.text})
        for call in answer.calls:
            args = json.loads(call["arguments"] or "{}")
            content.append(
                {"type": "tool_use", "id": call["id"], "name": call["name"], "input": args}
            )
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": content,
            "stop_reason": _STOP.get(answer.finish, "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": answer.prompt_tokens,
                "output_tokens": answer.completion_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def stream(self, answer: Answer, body: dict[str, Any]) -> StreamScript:
        message = self.reply(answer) | {"content": [], "stop_reason": None}
        message["usage"] = {"input_tokens": answer.prompt_tokens, "output_tokens": 1}
        opening = [_event("message_start", {"message": message}), _event("ping", {})]
        pieces: list[bytes] = []
        index = -1

        def start(block: dict[str, Any]) -> bytes:
            nonlocal index
            stop = _event("content_block_stop", {"index": index}) if index >= 0 else b""
            index += 1
            return stop + _event("content_block_start", {"index": index, "content_block": block})

        def delta(d: dict[str, Any]) -> bytes:
            return _event("content_block_delta", {"index": index, "delta": d})

        for i, word in enumerate(words(answer.text) if answer.text else []):
            head = start({"type": "text", "text": ""}) if i == 0 else b""
            ping = _event("ping", {}) if i == 1 else b""  # as the API does, mid-answer
            pieces.append(head + ping + delta({"type": "text_delta", "text": word}))
        for call in answer.calls:
            args = call["arguments"]
            half = len(args) // 2
            block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
            pieces.append(start(block) + delta({"type": "input_json_delta", "partial_json": ""}))
            pieces[-1] += delta({"type": "input_json_delta", "partial_json": args[:half]})
            pieces.append(delta({"type": "input_json_delta", "partial_json": args[half:]}))
        closing = [_event("content_block_stop", {"index": index})] if index >= 0 else []
        stop = {"stop_reason": _STOP.get(answer.finish, "end_turn"), "stop_sequence": None}
        usage = {"output_tokens": max(1, len(pieces))}
        closing.append(_event("message_delta", {"delta": stop, "usage": usage}))
        return StreamScript(opening, pieces, closing, _event("message_stop", {}))

    def error_event(self, status: int, error: dict[str, Any]) -> bytes:
        body = self.error_body(status, error)
        return _event("error", {"error": body["error"]})

    def malformed_event(self) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n"
