"""Anthropic Messages streaming events as chunks, sans I/O.

A Messages stream is a sequence of typed events: ``message_start`` (the id, model and input
usage), then per content block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
``input_json_delta`` for a tool call's arguments, ``thinking_delta``...) /
``content_block_stop``, then ``message_delta`` (the stop reason and output usage) and
``message_stop``; ``ping`` events may come at any time, and an ``error`` event (an overload
mid-stream) can arrive inside a 200 reply. Blocks are numbered per message, and tool calls
per answer in OpenAI's terms, so the parser keeps the map between the two.

An ``error`` event is raised as the classified provider error: before the first token the
mesh fails over, as for any failed attempt; after it, the stream is an interrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .._errors import ErrorKind, ProviderError, provider_error
from .._types import CompletionChunk, CompletionRequest, ToolCallDelta, Usage
from ._anthropic_request import OUTPUT_TOOL, output_tool_forced
from ._reply import guarded, load_json, malformed, usage_of

__all__ = [
    "STOP_REASONS",
    "AnthropicStreamParser",
    "anthropic_usage",
    "event_error",
    "finish",
    "refused",
]

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic's ``stop_reason`` as the OpenAI finish reasons the mesh uses."""

_ERROR_KINDS = {
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "permission_error": ErrorKind.AUTHENTICATION,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
}


def finish(stop_reason: Any, structured: bool) -> str | None:
    """The finish reason for a stop reason (a structured answer's tool call is a stop)."""
    if stop_reason is None:
        return None
    if not isinstance(stop_reason, str):
        raise malformed("stop_reason is not a string")
    reason = STOP_REASONS.get(stop_reason, stop_reason)
    return "stop" if structured and reason == "tool_calls" else reason


def anthropic_usage(raw: Any, input_tokens: Any = None) -> Usage | None:
    """Usage from Anthropic's counts: the prompt is every input token the request cost
    (uncached, written to the cache, read from it), the completion its output tokens."""
    if not isinstance(raw, Mapping):
        return None
    prompt = raw.get("input_tokens", input_tokens)
    parts = [prompt, raw.get("cache_creation_input_tokens"), raw.get("cache_read_input_tokens")]
    if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
        return None
    total_prompt = sum(p for p in parts if p) if prompt is not None else None
    return usage_of(total_prompt, raw.get("output_tokens"))


def refused() -> ProviderError:
    """A refusal (``stop_reason: refusal``) before any of the answer: a content-policy error."""
    return provider_error(ErrorKind.CONTENT_POLICY, "the model refused (stop_reason: refusal)")


def event_error(err: Any) -> ProviderError:
    """The error an ``error`` event (or an error body) reports, classified by its type:
    an overload or an internal error is a server error, whatever the HTTP status was."""
    kind_name = err.get("type") if isinstance(err, Mapping) else None
    message = err.get("message") if isinstance(err, Mapping) else err
    kind = _ERROR_KINDS.get(str(kind_name), ErrorKind.SERVER_ERROR)
    return provider_error(kind, f"error in stream: {kind_name}: {str(message)[:300]}")


class AnthropicStreamParser:
    """One Messages stream: ``feed`` each SSE ``data`` payload, get chunks."""

    __slots__ = ("_answered", "_blocks", "_input", "_structured", "_tools", "done")

    def __init__(self, request: CompletionRequest) -> None:
        self.done = False
        self._structured = output_tool_forced(request)
        self._blocks: dict[int, int | None] = {}
        """Content block index -> tool call index (None: the block is text for the answer)."""
        self._tools = 0
        self._input: Usage | None = None
        self._answered = False

    def feed(self, data: str) -> Iterator[CompletionChunk]:
        event = load_json(data, "stream event")
        chunk = guarded(self._event, event, "stream event")
        if chunk is not None:
            self._answered = self._answered or chunk.has_token
            yield chunk

    def _event(self, event: Any) -> CompletionChunk | None:
        if not isinstance(event, Mapping):
            raise malformed("stream event is not a JSON object")
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._start(event)
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, Mapping):
                raise malformed("message_start has no message")
            usage = message.get("usage")
            if isinstance(usage, Mapping):
                self._input = anthropic_usage(usage)
            model = message.get("model")
            return CompletionChunk(model=model if isinstance(model, str) else None)
        if kind == "message_delta":
            delta = event.get("delta")
            if not isinstance(delta, Mapping):
                raise malformed("message_delta has no delta")
            reason = finish(delta.get("stop_reason"), self._structured and self._tools == 0)
            if reason == "content_filter" and not self._answered:
                raise refused()
            return CompletionChunk(finish_reason=reason, usage=self._final_usage(event))
        if kind == "message_stop":
            self.done = True
            return None
        if kind == "error":
            raise event_error(event.get("error"))
        if kind in ("ping", "content_block_stop") or isinstance(kind, str):
            return None  # pings, and event types added later, carry nothing we use
        raise malformed("stream event has no type")

    def _final_usage(self, event: Mapping[str, Any]) -> Usage | None:
        """``message_delta``'s usage: cumulative counts, with the input's when it repeats
        them (newer API versions), else the input counted at ``message_start``."""
        raw = event.get("usage")
        if not isinstance(raw, Mapping):
            return None
        if "input_tokens" in raw:
            return anthropic_usage(raw)
        start = self._input
        return usage_of(
            start.prompt_tokens if start is not None else None, raw.get("output_tokens")
        )

    def _index(self, event: Mapping[str, Any]) -> int:
        index = event.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2**31:
            raise malformed("content block index is not a non-negative integer")
        return index

    def _start(self, event: Mapping[str, Any]) -> CompletionChunk | None:
        index = self._index(event)
        block = event.get("content_block")
        if not isinstance(block, Mapping):
            raise malformed("content_block_start has no content_block")
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = None
            text = block.get("text") or ""
            if not isinstance(text, str):
                raise malformed("text block is not a string")
            return CompletionChunk(content=text) if text else None
        if kind != "tool_use":
            return None  # thinking, redacted_thinking, server tools: not part of the answer
        name = block.get("name")
        if not isinstance(name, str) or not name:
            raise malformed("tool_use block has no name")
        if self._structured and name == OUTPUT_TOOL:
            self._blocks[index] = None  # its arguments are the answer's text
            return None
        call_id = block.get("id")
        self._blocks[index] = self._tools
        self._tools += 1
        delta = ToolCallDelta(
            index=self._blocks[index] or 0,
            id=call_id if isinstance(call_id, str) else None,
            name=name,
            arguments="",
        )
        return CompletionChunk(tool_call_deltas=[delta])

    def _delta(self, event: Mapping[str, Any]) -> CompletionChunk | None:
        index = self._index(event)
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            raise malformed("content_block_delta has no delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
        elif kind == "input_json_delta":
            text = delta.get("partial_json")
        else:
            return None  # thinking_delta, signature_delta, citations_delta
        if not isinstance(text, str):
            raise malformed(f"{kind} is not a string")
        if index not in self._blocks:
            raise malformed(f"{kind} for content block {index}, which never started")
        tool = self._blocks[index]
        if tool is None:
            return CompletionChunk(content=text) if text else None
        return CompletionChunk(tool_call_deltas=[ToolCallDelta(index=tool, arguments=text)])
