"""OpenAI-shaped requests as Anthropic Messages bodies, sans I/O.

The mesh speaks OpenAI's message and tool shapes (what LangChain and LlamaIndex produce),
so a request that fails over from OpenAI to Claude must say the same thing in the Messages
API's terms:

* ``system`` (and ``developer``) messages are hoisted into the top-level ``system``;
* roles strictly alternate, user first: consecutive messages of one role are merged, tool
  results (OpenAI's ``role: tool``) become ``tool_result`` blocks of a user turn, and a
  conversation that opens with the assistant gets a one-word user turn before it;
* assistant ``tool_calls`` become ``tool_use`` blocks (arguments parsed back to objects);
* ``tools``/``tool_choice`` become ``input_schema`` tools and ``auto``/``any``/``tool``/
  ``none`` choices;
* ``max_tokens`` is required by Anthropic: the provider's default fills it;
* structured output (``response_format``) becomes a forced tool whose input is the answer
  (:data:`OUTPUT_TOOL`; the reply parsers turn its input back into JSON text);
* a trailing assistant message is a prefill, which Anthropic continues natively (trailing
  whitespace removed: the API refuses it);
* fields in ``request.extra`` (``thinking``, ``metadata``, ``top_k``...) pass through, and
  a content part's ``cache_control`` is kept on its block.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._errors import ErrorKind, ProviderError, provider_error
from .._types import CompletionRequest

__all__ = ["OUTPUT_TOOL", "build_messages_payload", "output_tool_forced"]

OUTPUT_TOOL = "structured_output"
"""The tool whose forced call carries a structured answer (``response_format``)."""

_NO_EXTRA = frozenset({"session_id"})


def _bad(why: str) -> ProviderError:
    return provider_error(ErrorKind.BAD_REQUEST, f"cannot send this request to Anthropic: {why}")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, Mapping) and p.get("type") in ("text", "input_text")
        )
    return "" if content is None else str(content)


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head[5:].split(";", 1)[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """A message's content as Anthropic content blocks (empty text dropped: refused)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return [{"type": "text", "text": str(content)}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            block: dict[str, Any] | None = {"type": "text", "text": part} if part else None
        elif not isinstance(part, Mapping):
            continue
        elif part.get("type") in ("text", "input_text"):
            text = str(part.get("text") or "")
            block = {"type": "text", "text": text} if text else None
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            block = _image(str(url)) if url else None
        else:  # already an Anthropic block (document, image, tool_result...): as it is
            block = dict(part)
        if block is None:
            continue
        if isinstance(part, Mapping) and "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _arguments(raw: Any) -> Any:
    if isinstance(raw, (dict, list)):
        return raw
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        raise _bad("a tool call's arguments are not JSON") from None


def _tool_uses(calls: Any) -> list[dict[str, Any]]:
    uses = []
    for i, call in enumerate(calls or ()):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not fn.get("name"):
            raise _bad(f"assistant tool call {i} has no function name")
        uses.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{i}"),
                "name": str(fn["name"]),
                "input": _arguments(fn.get("arguments")),
            }
        )
    return uses


def _turns(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(alternating user/assistant turns, system texts)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise _bad(f"message {i} is not an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system.append(text)
            continue
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or ""),
                "content": content if isinstance(content, str) else _blocks(content),
            }
            role, blocks = "user", [result]
        elif role == "assistant":
            blocks = _blocks(content) + _tool_uses(message.get("tool_calls"))
        elif role == "user":
            blocks = _blocks(content)
        else:
            raise _bad(f"message {i} has role {role!r}")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "Continue."}]})
    for turn in turns:
        if not turn["content"]:
            turn["content"] = [{"type": "text", "text": "..."}]
    if turns and turns[-1]["role"] == "assistant":  # a prefill: no trailing whitespace
        last = turns[-1]["content"][-1]
        if last.get("type") == "text":
            last["text"] = last["text"].rstrip() or "..."
    return turns, system


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools or ()):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not fn.get("name"):
            if isinstance(tool, Mapping) and "name" in tool:  # already Anthropic-shaped
                out.append(dict(tool))
                continue
            raise _bad(f"tool {i} has no function name")
        entry: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice in ("required", "any"):
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else choice.get("name")
        if name:
            return {"type": "tool", "name": str(name)}
    raise _bad(f"unsupported tool_choice {choice!r}")


def _output_schema(response_format: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return dict(schema) if isinstance(schema, Mapping) else {"type": "object"}
    if kind == "json_object":
        return {"type": "object"}
    return None


def output_tool_forced(request: CompletionRequest) -> bool:
    """Whether the answer to ``request`` comes as the input of :data:`OUTPUT_TOOL`."""
    fmt = request.response_format
    return isinstance(fmt, Mapping) and _output_schema(fmt) is not None


def build_messages_payload(
    request: CompletionRequest, model_name: str, *, stream: bool, default_max_tokens: int
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages`` for ``request``."""
    turns, system = _turns(request.messages)
    body: dict[str, Any] = {
        "model": model_name,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": turns,
    }
    if system:
        body["system"] = "\n\n".join(system)
    for key, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("stop_sequences", request.stop),
    ):
        if value is not None:
            body[key] = value
    tools = _tools(request.tools)
    choice = _tool_choice(request.tool_choice)
    fmt = request.response_format
    schema = _output_schema(fmt) if isinstance(fmt, Mapping) else None
    if schema is not None:
        tools.append(
            {
                "name": OUTPUT_TOOL,
                "description": "Give the answer as this tool's input, which is its JSON schema.",
                "input_schema": schema,
            }
        )
        # With other tools too, the model may call one of them or answer through this one.
        choice = {"type": "any"} if len(tools) > 1 else {"type": "tool", "name": OUTPUT_TOOL}
    if tools:
        body["tools"] = tools
    if choice is not None and tools:
        body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    for key, value in request.extra.items():
        if key not in _NO_EXTRA:
            body.setdefault(key, value)
    return body
