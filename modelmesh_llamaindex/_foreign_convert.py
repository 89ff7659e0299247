"""The mesh's OpenAI-shaped requests as calls of a foreign LlamaIndex ``LLM``, and back.

Pure conversions (no I/O), used by :class:`._foreign.LlamaIndexAdapter`: :func:`plan`
decides once how a request is made (messages, tools, parameters), for the four ways of
calling; :func:`parse_response` and :class:`StreamReader` read the answer the way the
LLM's own integration does (its tool calls, usage and finish reason in any SDK's shape).
"""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    ChatResponse,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM
from llama_index.core.tools.types import BaseTool, ToolMetadata, ToolOutput
from pydantic import BaseModel

from mesh_core._errors import BadRequestError, MalformedResponseError
from mesh_core._types import CompletionChunk, CompletionRequest, ToolCall, ToolCallDelta, Usage
from mesh_core.providers._reply import ParsedResponse, usage_of

__all__ = ["Call", "StreamReader", "parse_response", "plan"]

_ROLES = {
    "system": MessageRole.SYSTEM,
    "developer": MessageRole.SYSTEM,
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
    "tool": MessageRole.TOOL,
}
# Provider finish reasons (Anthropic, Bedrock, Gemini) in OpenAI's terms.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "safety": "content_filter",
}
_PARAMS = ("temperature", "max_tokens", "stop", "top_p", "seed")


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"llamaindex: {message}")


# --- request: OpenAI dicts -> LlamaIndex -------------------------------------------------
def _data_url(url: str) -> tuple[str | None, bytes]:
    """``(mime type, bytes)`` of a ``data:`` URL."""
    if not url.startswith("data:"):
        raise ValueError(f"expected a data: URL, got {url[:20]!r}...")
    head, _, data = url.partition(",")
    mime = head[5:].split(";")[0] or None
    return mime, base64.b64decode(data, validate=True)


def _block(where: str, part: Any) -> Any:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text":
        return TextBlock(text=str(part.get("text") or ""))
    if kind == "image_url":
        image = part["image_url"]
        url, detail = (
            (image["url"], image.get("detail")) if isinstance(image, Mapping) else (image, None)
        )
        if str(url).startswith("data:"):
            mime, raw = _data_url(str(url))
            return ImageBlock(image=raw, image_mimetype=mime, detail=detail)
        return ImageBlock(url=str(url), detail=detail)
    if kind == "file":
        file = part["file"]
        mime, raw = _data_url(str(file["file_data"]))
        return DocumentBlock(data=raw, document_mimetype=mime, title=file.get("filename"))
    if kind == "input_audio":
        audio = part["input_audio"]
        return AudioBlock(audio=base64.b64decode(audio["data"]), format=audio.get("format"))
    raise _bad(f"{where}: content part type {kind!r} has no LlamaIndex form")


def _call_block(call: Mapping[str, Any]) -> ToolCallBlock:
    fn = call["function"]
    args = fn.get("arguments") or "{}"
    try:  # most integrations (Anthropic, Bedrock) want the arguments as a dict
        parsed = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        parsed = args
    return ToolCallBlock(tool_call_id=call.get("id"), tool_name=fn["name"], tool_kwargs=parsed)


def _message(i: int, msg: Mapping[str, Any]) -> ChatMessage:
    role = _ROLES.get(msg.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise _bad(f"messages[{i}]: role {msg.get('role')!r} is not one of {', '.join(_ROLES)}")
    content = msg.get("content")
    if content is None:
        blocks: list[Any] = []
    elif isinstance(content, str):
        blocks = [TextBlock(text=content)]
    elif isinstance(content, list):
        blocks = [_block(f"messages[{i}].content[{j}]", p) for j, p in enumerate(content)]
    else:
        raise _bad(f"messages[{i}].content must be a string or a list of parts")
    extra: dict[str, Any] = {}
    if role is MessageRole.ASSISTANT:
        blocks += [_call_block(c) for c in msg.get("tool_calls") or ()]
    if role is MessageRole.TOOL:
        extra["tool_call_id"] = msg.get("tool_call_id") or ""
    return ChatMessage(role=role, blocks=blocks, additional_kwargs=extra)


def _messages(messages: list[dict[str, Any]]) -> list[ChatMessage]:
    """The conversation as LlamaIndex messages; a malformed one is a clear BadRequestError."""
    out = []
    for i, msg in enumerate(messages):
        try:
            out.append(_message(i, msg))
        except (KeyError, TypeError, ValueError) as exc:  # binascii.Error, ValidationError too
            raise _bad(f"messages[{i}] cannot be converted: {type(exc).__name__}: {exc}") from None
    return out


def _args_model(parameters: Mapping[str, Any] | None) -> type[BaseModel]:
    """A pydantic model whose JSON schema is the tool's, verbatim: what every LlamaIndex
    integration reads a tool's parameters from (``fn_schema`` / ``get_parameters_dict``)."""
    schema = dict(parameters or {"type": "object", "properties": {}})

    class Arguments(BaseModel):
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return copy.deepcopy(schema)  # a copy: OpenAI's integration edits what it gets

    return Arguments


class _SchemaTool(BaseTool):
    """An OpenAI tool spec as a LlamaIndex tool: it only describes the function to the
    model. The mesh returns the model's tool calls; the caller runs its own tools."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        fn = spec["function"]
        self._metadata = ToolMetadata(
            description=fn.get("description") or "",
            name=fn["name"],
            fn_schema=_args_model(fn.get("parameters")),
        )

    @property
    def metadata(self) -> ToolMetadata:
        return self._metadata

    def __call__(self, input: Any) -> ToolOutput:
        raise TypeError(f"tool {self._metadata.name!r} is a schema: the caller runs it")


def _json_instruction(fmt: Mapping[str, Any]) -> str | None:
    """``response_format`` as an instruction, for LLMs with no such parameter."""
    plain = "Answer with one JSON object and nothing else (no prose, no code fence)"
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return f"{plain}, matching this JSON schema: {json.dumps(schema)}"
    return f"{plain}." if fmt.get("type") == "json_object" else None


@dataclass(slots=True)
class Call:
    """One request in LlamaIndex's terms, decided once for the four ways of calling."""

    messages: list[ChatMessage]
    tools: list[BaseTool]
    tool_required: bool
    kwargs: dict[str, Any]

    def bind(self, llm: LLM, method: str) -> Callable[[], Any]:
        """``llm.<method>`` (``chat``, ``achat``, ``stream_chat``, ``astream_chat``), or its
        ``*_with_tools`` form when tools are sent, with this call's arguments."""
        if not self.tools:
            fn = getattr(llm, method)
            return lambda: fn(self.messages, **self.kwargs)
        fn = getattr(llm, f"{method}_with_tools")
        return lambda: fn(
            self.tools,
            chat_history=list(self.messages),
            allow_parallel_tool_calls=True,
            tool_required=self.tool_required,
            **self.kwargs,
        )


def _openai_family(llm: LLM) -> bool:
    """LlamaIndex's OpenAI LLM and its subclasses (``OpenAILike``, ``AzureOpenAI``...) pass
    ``response_format`` and ``stream_options`` to the Chat Completions API as they are."""
    return any(
        c.__name__ == "OpenAI" and c.__module__.startswith("llama_index.llms.openai")
        for c in type(llm).__mro__
    )


def plan(llm: LLM, request: CompletionRequest, *, stream: bool) -> Call:
    """How ``llm`` is called for ``request``. Parameters go as keyword arguments under their
    OpenAI names (what LlamaIndex integrations take). ``response_format`` goes as is to
    OpenAI's integrations, as an instruction to others; tools go through the LLM's own
    function calling (``chat_with_tools``), ``tool_choice`` as ``tool_required`` and the
    named tool alone."""
    messages = _messages(request.messages)
    kwargs = {k: v for k in _PARAMS if (v := getattr(request, k)) is not None}
    kwargs |= {k: v for k, v in request.extra.items() if k != "session_id"}
    fmt = request.response_format
    if fmt is not None and _openai_family(llm):
        kwargs["response_format"] = fmt
    elif fmt is not None and (hint := _json_instruction(fmt)) is not None:
        messages.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=hint))
    if stream and _openai_family(llm):
        kwargs.setdefault("stream_options", {"include_usage": True})
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return Call(messages, [], False, kwargs)
    if not (isinstance(llm, FunctionCallingLLM) and llm.metadata.is_function_calling_model):
        raise _bad(
            f"{type(llm).__name__} is not a function-calling LLM: set features.tool_calling: "
            "false on its model so that requests with tools go to another one"
        )
    tools = [_SchemaTool(spec) for spec in request.tools]
    if isinstance(choice, Mapping):  # {"type": "function", "function": {"name": ...}}
        name = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t.metadata.name == name]
        if not tools:
            raise _bad(f"tool_choice names {name!r}, which is not among the tools")
    required = choice in ("required", "any") or isinstance(choice, Mapping)
    return Call(messages, list(tools), required, kwargs)


# --- answer: LlamaIndex -> mesh -------------------------------------------------------------
def _get(obj: Any, *names: str) -> Any:
    """The first of ``names`` set on a raw reply, a dict or an SDK object alike."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _usage(resp: ChatResponse) -> Usage | None:
    """The token counts the LLM reported: its ``additional_kwargs`` (OpenAI's integration
    puts them there), else the raw reply's usage in any SDK's spelling."""
    extra = resp.additional_kwargs
    if "prompt_tokens" in extra or "completion_tokens" in extra:
        return usage_of(
            extra.get("prompt_tokens"), extra.get("completion_tokens"), extra.get("total_tokens")
        )
    raw = _get(resp.raw, "usage", "usage_metadata")
    if raw is None:
        return None
    prompt = _get(raw, "prompt_tokens", "input_tokens", "inputTokens", "prompt_token_count")
    completion = _get(
        raw, "completion_tokens", "output_tokens", "outputTokens", "candidates_token_count"
    )
    if prompt is None and completion is None:
        return None
    return usage_of(
        prompt, completion, _get(raw, "total_tokens", "totalTokens", "total_token_count")
    )


def _raw_finish(raw: Any) -> str | None:
    choices = _get(raw, "choices")
    if isinstance(choices, list) and choices:
        reason = _get(choices[0], "finish_reason")
    else:
        reason = _get(raw, "finish_reason", "stop_reason", "stopReason")
    reason = getattr(reason, "value", reason)  # an SDK enum
    return _FINISH.get(str(reason).lower(), str(reason).lower()) if reason else None


def _tool_calls(llm: LLM, resp: ChatResponse) -> list[ToolCall]:
    """The calls in the answer, read the way the LLM's own integration reads them (only
    function-calling LLMs are sent tools: see :func:`plan`)."""
    if not isinstance(llm, FunctionCallingLLM):
        return []
    found = llm.get_tool_calls_from_response(resp, error_on_no_tool_call=False)
    return [
        ToolCall(s.tool_id or f"call_{i}", s.tool_name, _arguments(s.tool_kwargs))
        for i, s in enumerate(found)
    ]


def _arguments(kwargs: Any) -> str:
    """A tool call's arguments as JSON text; arguments that are not JSON (an object a
    custom LLM put there) are a malformed answer, which fails over."""
    try:
        return json.dumps(kwargs)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedResponseError(
            f"llamaindex: a tool call's arguments are not JSON ({type(exc).__name__}: {exc})"
        ) from None


def _finish(reported: str | None, calls: list[ToolCall]) -> str:
    return "tool_calls" if calls else (reported or "stop")


def parse_response(llm: LLM, call: Call, resp: ChatResponse) -> ParsedResponse:
    """A complete answer in the mesh's terms (usage None when the LLM reported none)."""
    calls = _tool_calls(llm, resp) if call.tools else []
    content = resp.message.content
    return ParsedResponse(
        id=str(_get(resp.raw, "id") or f"llamaindex-{uuid.uuid4().hex}"),
        provider_model=str(_get(resp.raw, "model") or llm.metadata.model_name),
        content=content if content or not calls else None,
        tool_calls=calls,
        finish_reason=_finish(_raw_finish(resp.raw), calls),
        usage=_usage(resp),
        created=int(time.time()),
    )


class StreamReader:
    """LlamaIndex's streamed ChatResponses (each the whole answer so far, plus ``delta``)
    as mesh chunks: text as it comes, tool calls whole in the last chunk."""

    def __init__(self, llm: LLM, call: Call) -> None:
        self.llm, self.call = llm, call
        self.text = ""
        self.last: ChatResponse | None = None
        self.usage: Usage | None = None
        self.reason: str | None = None

    def feed(self, resp: ChatResponse) -> CompletionChunk | None:
        self.last = resp
        self.usage = _usage(resp) or self.usage
        self.reason = _raw_finish(resp.raw) or self.reason
        text = resp.message.content or ""
        delta = resp.delta if resp.delta is not None else text[len(self.text) :]
        self.text = text
        return CompletionChunk(content=delta) if delta else None

    def end(self) -> CompletionChunk:
        calls = _tool_calls(self.llm, self.last) if self.call.tools and self.last else []
        return CompletionChunk(
            tool_call_deltas=[
                ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(calls)
            ],
            finish_reason=_finish(self.reason, calls),
            usage=self.usage,
        )
