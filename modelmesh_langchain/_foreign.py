"""LangChain chat models the user already has (``ChatBedrock``, ``ChatVertexAI``,
``ChatAnthropic``, ``AzureChatOpenAI``, ``ChatOpenAI``...) as members of a mesh pool.

:class:`LangChainAdapter` is the LangChain half of :mod:`mesh_core.providers._foreign`:
it turns the mesh's OpenAI-shaped request into the model's call (messages through
``convert_to_messages``, tools through the model's own ``bind_tools``, sampling settings
as call keyword arguments, the way LangChain passes them to the provider) and the model's
``AIMessage`` / ``AIMessageChunk`` back into the mesh's types, usage from its
``usage_metadata``. Timeouts, errors and everything else of the mesh are
:class:`~mesh_core.providers.ForeignProvider`'s.

:func:`provider_from_config` builds one from a ``type: langchain`` configuration section.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.messages.utils import convert_to_messages
from langchain_core.runnables import Runnable

from mesh_core._errors import MalformedResponseError, ProviderError
from mesh_core._types import CompletionChunk, CompletionRequest, ToolCall, ToolCallDelta, Usage
from mesh_core.providers import ForeignProvider, ParsedResponse, Provider
from mesh_core.providers._foreign_mesh import (
    class_path as _class_path,
    held_secrets,
    provider_from_section,
)
from mesh_core.providers._reply import usage_of

__all__ = [
    "LangChainAdapter",
    "class_path",
    "foreign_provider",
    "provider_from_config",
]

# Each provider's own words for why an answer ended, as the OpenAI finish reasons.
_FINISH = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "complete": "stop",
    "finish_reason_stop": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "refusal": "content_filter",
    "guardrail_intervened": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "recitation": "content_filter",
}
_FINISH_KEYS = ("finish_reason", "stop_reason", "done_reason", "finishReason", "stopReason")


class LangChainAdapter:
    """One LangChain chat model, spoken to in the mesh's terms (see the module docstring).

    The request's sampling settings (``temperature``, ``max_tokens``, ``top_p``, ``seed``,
    ``stop``, ``response_format``, and ``extra``) are passed as call keyword arguments
    only when the request sets them, so the model's own configuration applies otherwise.
    """

    name = "langchain"

    def __init__(self, model: BaseChatModel) -> None:
        if not isinstance(model, BaseChatModel):
            raise TypeError(
                f"expected a LangChain chat model (a BaseChatModel), got {type(model).__name__}"
            )
        self.model = model

    def __repr__(self) -> str:
        return f"LangChainAdapter({type(self.model).__name__})"

    # --- the request ------------------------------------------------------------------
    def _call(
        self, request: CompletionRequest
    ) -> tuple[Runnable[LanguageModelInput, BaseMessage], list[BaseMessage], dict[str, Any]]:
        """The runnable to call (the model, with the request's tools bound), the messages,
        and the call's keyword arguments."""
        runnable: Runnable[LanguageModelInput, BaseMessage] = self.model
        if request.tools:
            tool_choice = _tool_choice(request.tool_choice)
            bound = {"tool_choice": tool_choice} if tool_choice is not None else {}
            runnable = self.model.bind_tools(request.tools, **bound)
        kwargs: dict[str, Any] = {
            k: v
            for k, v in (
                ("temperature", request.temperature),
                ("max_tokens", request.max_tokens),
                ("top_p", request.top_p),
                ("seed", request.seed),
                ("stop", request.stop or None),
                ("response_format", request.response_format),
            )
            if v is not None
        }
        kwargs.update(request.extra)
        return runnable, convert_to_messages(request.messages), kwargs

    # --- complete answers -------------------------------------------------------------
    def invoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse:
        runnable, messages, kwargs = self._call(request)
        return parsed(runnable.invoke(messages, **kwargs))

    async def ainvoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse:
        runnable, messages, kwargs = self._call(request)
        return parsed(await runnable.ainvoke(messages, **kwargs))

    # --- streams ----------------------------------------------------------------------
    def stream(self, model_name: str, request: CompletionRequest) -> Iterator[CompletionChunk]:
        runnable, messages, kwargs = self._call(request)
        reader = _ChunkReader()
        for message in runnable.stream(messages, **kwargs):
            if (chunk := reader.read(message)) is not None:
                yield chunk
        yield from reader.end()

    async def astream(
        self, model_name: str, request: CompletionRequest
    ) -> AsyncIterator[CompletionChunk]:
        runnable, messages, kwargs = self._call(request)
        reader = _ChunkReader()
        async for message in runnable.astream(messages, **kwargs):
            if (chunk := reader.read(message)) is not None:
                yield chunk
        for chunk in reader.end():
            yield chunk

    def sync_only(self, streaming: bool) -> bool:
        """Whether the model has no async code of its own for this kind of call: then
        LangChain would run its sync code on the event loop's default executor (a few
        threads, shared with the whole loop), so the mesh calls the sync method on its own
        workers instead (see :mod:`mesh_core.providers._foreign_threads`)."""
        cls = type(self.model)
        native_generate = cls._agenerate is not BaseChatModel._agenerate
        if not streaming:
            return not native_generate
        if cls._astream is not BaseChatModel._astream:
            return False
        if cls._stream is not BaseChatModel._stream:
            return True  # LangChain would read the sync stream on the executor
        return not native_generate  # astream falls back to ainvoke

    def classify(self, exc: BaseException) -> ProviderError | None:
        """None: LangChain's typed errors and the SDKs' under them are all read by
        :func:`~mesh_core.providers.classify_foreign_error` (by name, status and body)."""
        return None

    def close(self) -> None:
        """Nothing to release: the model and its client belong to whoever built them (one
        ``ChatOpenAI`` may serve other code too), and are closed with them."""


# --- the answer ---------------------------------------------------------------------------


def parsed(message: BaseMessage) -> ParsedResponse:
    """A complete LangChain answer in the mesh's terms."""
    tool_calls = [
        ToolCall(tc.get("id") or _call_id(), str(tc.get("name") or ""), _arguments(tc.get("args")))
        for tc in getattr(message, "tool_calls", None) or ()
    ]
    tool_calls += [  # kept as sent, so the caller sees them as invalid, not lost
        ToolCall(tc.get("id") or _call_id(), tc.get("name") or "", tc.get("args") or "")
        for tc in getattr(message, "invalid_tool_calls", None) or ()
    ]
    metadata = message.response_metadata or {}
    usage = _usage(getattr(message, "usage_metadata", None))
    return ParsedResponse(
        id=message.id or f"chatcmpl-{uuid.uuid4().hex}",
        provider_model=_model_name(metadata),
        content=message.text or None,
        tool_calls=tool_calls,
        finish_reason=finish_reason(metadata) or ("tool_calls" if tool_calls else "stop"),
        usage=usage,
        created=int(time.time()),
    )


def _arguments(args: object) -> str:
    """A tool call's arguments as the JSON text OpenAI's shape holds; arguments that are not
    JSON (an object a custom model put there) are a malformed answer, which fails over."""
    if isinstance(args, str):
        return args
    try:
        return json.dumps(args or {})
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedResponseError(
            f"langchain: a tool call's arguments are not JSON ({type(exc).__name__}: {exc})"
        ) from None


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def finish_reason(metadata: Mapping[str, Any]) -> str | None:
    """The OpenAI finish reason of a model's ``response_metadata`` (None: it says none)."""
    for key in _FINISH_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return _FINISH.get(value.lower(), value.lower())
        name = getattr(value, "name", None)  # an enum (google's FinishReason)
        if isinstance(name, str) and name:
            return _FINISH.get(name.lower(), name.lower())
    return None


def _model_name(metadata: Mapping[str, Any]) -> str | None:
    for key in ("model_name", "model", "model_id"):
        if isinstance(value := metadata.get(key), str) and value:
            return value
    return None


def _usage(usage: UsageMetadata | Mapping[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    return usage_of(
        usage.get("input_tokens"), usage.get("output_tokens"), usage.get("total_tokens")
    )


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    """The request's OpenAI ``tool_choice`` in the form ``bind_tools`` takes across
    integrations: a tool's name, ``"auto"``, ``"none"`` or ``"any"``."""
    if choice is None:
        return None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return str(name) if name else "any"
    return "any" if choice == "required" else choice


class _ChunkReader:
    """A LangChain stream's chunks as the mesh's: text and tool-call fragments as they
    come; usage (summed, as LangChain sums it) and the finish reason held for the last."""

    __slots__ = ("finish", "tools", "usage")

    def __init__(self) -> None:
        self.finish: str | None = None
        self.tools = False
        self.usage: UsageMetadata | None = None

    def read(self, message: BaseMessage) -> CompletionChunk | None:
        if isinstance(message, AIMessageChunk) and message.usage_metadata:
            self.usage = add_usage(self.usage, message.usage_metadata)
        self.finish = finish_reason(message.response_metadata or {}) or self.finish
        deltas = [
            ToolCallDelta(
                index=tc.get("index") if isinstance(tc.get("index"), int) else i,
                id=_text_or_none(tc.get("id")),
                name=_text_or_none(tc.get("name")),
                arguments=None if tc.get("args") is None else _arguments(tc.get("args")),
            )
            for i, tc in enumerate(getattr(message, "tool_call_chunks", None) or ())
        ]
        self.tools = self.tools or bool(deltas)
        text = message.text
        if not text and not deltas:
            return None
        return CompletionChunk(content=text, tool_call_deltas=deltas)

    def end(self) -> Iterator[CompletionChunk]:
        """The last chunk: why the answer ended and what it used. A model that reports no
        finish reason (some integrations do not stream one) ended normally all the same:
        its stream was not cut (that raises)."""
        finish = self.finish or ("tool_calls" if self.tools else "stop")
        yield CompletionChunk(finish_reason=finish, usage=_usage(self.usage))


# --- building providers -----------------------------------------------------------------


def foreign_provider(provider_id: str, model: BaseChatModel) -> ForeignProvider:
    """A mesh provider calling ``model``."""
    return ForeignProvider(provider_id, LangChainAdapter(model), secrets=held_secrets(model))


def class_path(model: BaseChatModel) -> str:
    """``"module:Class"`` of ``model`` (``BaseChatModel`` when that path cannot import it)."""
    return _class_path(model, "langchain_core.language_models:BaseChatModel")


def provider_from_config(provider_id: str, config: Any) -> Provider:
    """The provider a ``type: langchain`` section describes: ``class`` (a LangChain chat
    model) built with ``kwargs`` (and ``api_key``)."""
    return provider_from_section(
        provider_id,
        config,
        BaseChatModel,
        "LangChain chat model",
        lambda model, secrets: ForeignProvider(
            provider_id, LangChainAdapter(model), secrets=secrets
        ),
    )
