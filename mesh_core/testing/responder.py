"""The fault server's default answers: deterministic, offline, and shaped like a model's.

No language model is involved: the answer is derived from the request, so tests
and demos of chains, tools and structured output get replies of the right shape.

* After a tool result: a sentence that quotes it, unless ``tool_choice`` forces a tool
  call (``required``, ``any`` or a named function), which it then makes.
* With tools bound: a call to the tool that ``tool_choice`` forces, or to the tool
  the prompt names (``magic_function(3)``, "the weather"), with arguments built
  from its JSON schema: integers and quoted strings are taken from the prompt.
* With ``response_format``: a JSON object built from the schema (or from the keys
  the prompt quotes, in JSON mode).
* After an assistant message (a prefill): the rest of the answer, past the prefix.
* Otherwise: ``Hello from {model}. You said: {prompt}``.
Stop sequences cut the text as a real server would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["scripted_answer"]

_INT = re.compile(r"-?\d+")
_QUOTED = re.compile(r"""(?:^|(?<=[\s(\[:]))(?:'([^']+)'|"([^"]+)")(?=$|[\s.,;:!?)\]])""")
_GENERIC = {"get", "the", "a", "tool", "function", "fn", "my", "do", "run", "call"}


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content or "")


def _keys(schema: Any) -> set[str]:
    """Every property name in a schema (quoted key names are not values)."""
    if isinstance(schema, dict):
        found = set(schema.get("properties") or {})
        for v in schema.values():
            found |= _keys(v)
        return found
    if isinstance(schema, list):
        return set().union(*(_keys(v) for v in schema)) if schema else set()
    return set()


def scripted_answer(model: str, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """``(text, tool_calls)`` for a request body; each tool call is ``{name, arguments}``."""
    messages = body.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    user = next(
        (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {}
    )
    prompt = _text(user)
    if last.get("role") == "assistant" and last.get("content") and not last.get("tool_calls"):
        # An assistant prefill: continue the answer after the prefix it gives.
        prefix = _text(last)
        text, _ = scripted_answer(model, {**body, "messages": messages[:-1]})
        return text[len(prefix) :], []
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and "function" in t]
    choice = body.get("tool_choice")
    forced = choice in ("required", "any") or isinstance(choice, dict)
    if last.get("role") == "tool" and not (tools and forced):
        return _stop(f"The tool returned: {_text(last)}", body), []
    if tools and choice != "none":
        tool = _chosen(tools, choice, prompt)
        if tool is not None:
            fn = tool["function"]
            args = _value(
                fn.get("parameters") or {"type": "object"},
                fn.get("parameters") or {},
                "",
                prompt,
                iter(_INT.findall(prompt)),
            )
            return "", [{"name": fn["name"], "arguments": args}]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return json.dumps(_value(schema, schema, "", prompt, iter(_INT.findall(prompt)))), []
    if fmt.get("type") == "json_object":
        keys = [a or b for a, b in _QUOTED.findall(prompt)] or ["answer"]
        return json.dumps({k: f"{k} about {_topic(prompt)}" for k in keys}), []
    said = prompt[:200]
    return _stop(f"Hello from {model}. You said: {said}", body), []


def _stop(text: str, body: dict[str, Any]) -> str:
    stops = body.get("stop") or []
    if isinstance(stops, str):
        stops = [stops]
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def _chosen(tools: list[dict[str, Any]], choice: Any, prompt: str) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t["function"].get("name") == name), tools[0])
    lowered = prompt.lower()
    for tool in tools:
        if tool["function"].get("name", "").lower() in lowered:
            return tool
    words = set(re.findall(r"[a-z]+", lowered))
    for tool in tools:
        parts = set(tool["function"].get("name", "").lower().split("_")) - _GENERIC
        if parts & words:
            return tool
    if choice in ("required", "any"):
        return tools[0]
    return None


def _topic(prompt: str) -> str:
    m = re.search(r"about ([\w\s]+?)[.?!,]", prompt)
    return m.group(1).strip() if m else "that"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if options:
            usable = [o for o in options if o.get("type") != "null"] or options
            return _resolve(usable[0], root)
    return schema


def _value(
    schema: dict[str, Any], root: dict[str, Any], name: str, prompt: str, ints: Iterator[str]
) -> Any:
    schema = _resolve(schema, root)
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _value(v, root, k, prompt, ints) for k, v in props.items()}
    if kind == "integer":
        return int(next(ints, 1))
    if kind == "number":
        return float(next(ints, 1))
    if kind == "boolean":
        return True
    if kind == "array":
        return [_value(schema.get("items") or {"type": "string"}, root, name, prompt, ints)]
    quoted = [q for a, b in _QUOTED.findall(prompt) if (q := a or b) not in _keys(root)]
    if quoted:
        return quoted[0]
    return f"{name or 'value'} about {_topic(prompt)}"
