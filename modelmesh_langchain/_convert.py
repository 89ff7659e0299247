"""Conversions between LangChain messages and the mesh's OpenAI-shaped types."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGenerationChunk

from mesh_core._types import CompletionChunk, CompletionResponse, Usage

PROVIDER = "modelmesh"


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat-completions message dicts."""
    return convert_to_openai_messages(list(messages))


def _usage(usage: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _mesh_record(
    pool: str | None, attempts: Sequence[Any] | None, provider: str | None, cost: float | None
) -> dict[str, Any]:
    return {
        "pool": pool,
        "provider_id": provider,
        "cost": cost,
        "attempts": [a.to_dict() for a in attempts or ()],
    }


def to_ai_message(resp: CompletionResponse) -> AIMessage:
    """A complete answer as an AIMessage, with usage and the mesh's record in metadata."""
    calls, invalid = [], []
    for tc in resp.tool_calls:
        try:
            args = json.loads(tc.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments are not a JSON object")
            calls.append(tool_call(name=tc.name, args=args, id=tc.id))
        except ValueError as exc:
            invalid.append(
                invalid_tool_call(name=tc.name, args=tc.arguments, id=tc.id, error=str(exc))
            )
    return AIMessage(
        content=resp.content or "",
        tool_calls=calls,
        invalid_tool_calls=invalid,
        id=resp.id or None,
        usage_metadata=_usage(resp.usage),
        response_metadata={
            "model_name": resp.model,
            "model_provider": PROVIDER,
            "finish_reason": resp.finish_reason,
            "system_fingerprint": None,
            "provider_model": resp.provider_model,
            "mesh": _mesh_record(resp.pool, resp.attempts, resp.provider, resp.cost),
        },
    )


def to_ai_chunk(chunk: CompletionChunk) -> AIMessageChunk:
    """One streamed chunk; the mesh's final chunk carries usage and the metadata."""
    tool_chunks = [
        tool_call_chunk(name=d.name, args=d.arguments, id=d.id, index=d.index)
        for d in chunk.tool_call_deltas
    ]
    if chunk.finish_reason is None:
        metadata: dict[str, Any] = {"model_provider": PROVIDER}
        if chunk.continued_from or chunk.restarted:  # stream_recovery: continue
            metadata["mesh"] = {
                "continued_from": chunk.continued_from,
                "restarted": chunk.restarted,
            }
        return AIMessageChunk(
            content=chunk.content, tool_call_chunks=tool_chunks, response_metadata=metadata
        )
    return AIMessageChunk(
        content=chunk.content,
        tool_call_chunks=tool_chunks,
        usage_metadata=_usage(chunk.usage) if chunk.usage else None,
        chunk_position="last",
        response_metadata={
            "model_name": chunk.model,
            "model_provider": PROVIDER,
            "finish_reason": chunk.finish_reason,
            "mesh": _mesh_record(chunk.pool, chunk.attempts, chunk.provider, chunk.cost),
        },
    )


def to_generation_chunk(chunk: CompletionChunk) -> ChatGenerationChunk:
    """A streamed chunk for LangChain. The last one's ``generation_info`` says which model
    answered and the usage, as a plain ``invoke``'s does: LangChain hands a stream's
    joined generation (not an ``llm_output``) to ``on_llm_end``."""
    info = None
    if chunk.finish_reason is not None:
        info = {
            "finish_reason": chunk.finish_reason,
            "model_name": chunk.model,
            "token_usage": chunk.usage.to_dict() if chunk.usage else {},
        }
    return ChatGenerationChunk(message=to_ai_chunk(chunk), generation_info=info)
