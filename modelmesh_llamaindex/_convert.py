"""Conversions between LlamaIndex chat messages and the mesh's OpenAI-shaped types."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)

from mesh_core._types import Attempt, CompletionChunk, CompletionResponse, ToolCall, Usage


def _data_url(mime: str | None, raw: bytes) -> str:
    return f"data:{mime or 'application/octet-stream'};base64,{base64.b64encode(raw).decode()}"


def _part(block: Any) -> dict[str, Any] | None:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        if block.url and not str(block.url).startswith("data:"):
            url = str(block.url)
        else:
            b64 = block.resolve_image(as_base64=True).read()
            url = f"data:{block.image_mimetype or 'image/png'};base64,{b64.decode()}"
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(block, DocumentBlock):
        raw = block.resolve_document().read()
        return {
            "type": "file",
            "file": {
                "filename": block.title or "document",
                "file_data": _data_url(block.document_mimetype, raw),
            },
        }
    return None  # tool calls travel in ``tool_calls``; other blocks have no chat form


def _tool_calls(message: ChatMessage) -> list[dict[str, Any]]:
    calls = message.additional_kwargs.get("tool_calls") or []
    out = [c if isinstance(c, dict) else c.model_dump() for c in calls]
    if out:
        return out
    return [
        ToolCall(
            b.tool_call_id or f"call_{i}",
            b.tool_name,
            b.tool_kwargs if isinstance(b.tool_kwargs, str) else _json(b.tool_kwargs),
        ).to_dict()
        for i, b in enumerate(message.blocks)
        if isinstance(b, ToolCallBlock)
    ]


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as OpenAI chat-completions message dicts."""
    out = []
    for message in messages:
        role = message.role.value
        if role in ("chatbot", "model"):
            role = "assistant"
        parts = [p for b in message.blocks if (p := _part(b)) is not None]
        content: Any = (
            "".join(p["text"] for p in parts) if all(p["type"] == "text" for p in parts) else parts
        )
        entry: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            calls = _tool_calls(message)
            if calls:
                entry["tool_calls"] = calls
                entry["content"] = content or None
        if role == "tool":
            entry["tool_call_id"] = message.additional_kwargs.get("tool_call_id", "")
        out.append(entry)
    return out


def mesh_record(
    model: str | None,
    provider: str | None,
    pool: str | None,
    attempts: Sequence[Attempt] | None,
    usage: Usage | None,
    cost: float | None,
) -> dict[str, Any]:
    """What the mesh did for one request (ChatResponse.raw)."""
    return {
        "model": model,
        "provider_id": provider,
        "pool": pool,
        "cost": cost,
        "usage": usage.to_dict() if usage else None,
        "attempts": [a.to_dict() for a in attempts or ()],
    }


def _token_counts(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _assistant(content: str, calls: list[dict[str, Any]]) -> ChatMessage:
    message = ChatMessage(
        role=MessageRole.ASSISTANT,
        content=content,
        additional_kwargs={"tool_calls": calls} if calls else {},
    )
    return message


def to_chat_response(resp: CompletionResponse) -> ChatResponse:
    calls = [tc.to_dict() for tc in resp.tool_calls]
    return ChatResponse(
        message=_assistant(resp.content or "", calls),
        raw=mesh_record(resp.model, resp.provider, resp.pool, resp.attempts, resp.usage, resp.cost),
        additional_kwargs={
            "model": resp.model,
            "finish_reason": resp.finish_reason,
            **_token_counts(resp.usage),
        },
    )


class StreamAccumulator:
    """Turns mesh chunks into LlamaIndex's cumulative streamed ChatResponses."""

    def __init__(self) -> None:
        self.content = ""
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, chunk: CompletionChunk) -> ChatResponse:
        if chunk.restarted:  # the mesh started the answer over on another model
            self.content, self.calls = "", {}
        self.content += chunk.content
        for d in chunk.tool_call_deltas:
            call = self.calls.setdefault(
                d.index,
                {"id": d.id or "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if d.id:
                call["id"] = d.id
            if d.name:
                call["function"]["name"] += d.name
            if d.arguments:
                call["function"]["arguments"] += d.arguments
        calls = [self.calls[i] for i in sorted(self.calls)]
        extra: dict[str, Any] = {"model": chunk.model}
        if chunk.continued_from or chunk.restarted:
            extra |= {"continued_from": chunk.continued_from, "restarted": chunk.restarted}
        raw: dict[str, Any] = {"model": chunk.model, "pool": chunk.pool}
        if chunk.finish_reason is not None:
            extra |= {"finish_reason": chunk.finish_reason, **_token_counts(chunk.usage)}
            raw = mesh_record(
                chunk.model, chunk.provider, chunk.pool, chunk.attempts, chunk.usage, chunk.cost
            )
        return ChatResponse(
            message=_assistant(
                self.content, [dict(c, function=dict(c["function"])) for c in calls]
            ),
            delta=chunk.content,
            raw=raw,
            additional_kwargs=extra,
        )
