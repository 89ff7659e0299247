"""The fault server's Gemini wire (``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``).

Requests are checked as the Generative Language API checks them (``contents`` with roles
``user``/``model``, no unknown fields, a ``thoughtSignature`` on every ``functionCall`` part sent
back, as many ``functionResponse`` parts as the call turn had calls). Replies, SSE streams (one
``GenerateContentResponse`` per event, no end marker), ``{"error": {"code", "message",
"status", "details"}}`` bodies with ``RetryInfo`` and ``QuotaFailure``, an invalid key as a 400
``API_KEY_INVALID``, and safety blocks are Gemini's, checked against ``google-genai``'s parsers by
the tests.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from typing import Any

from ._dialect import Answer, Refusal, StreamScript
from ._openai_wire import words

__all__ = ["GeminiWire"]

_FIELDS = frozenset(
    {
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
    }
)
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
_TYPES = "type.googleapis.com/google.rpc."


def _refuse(message: str) -> Refusal:
    error = {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
    return Refusal(400, {"error": error})


def _check_contents(contents: Any) -> str | None:
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    calls_before = 0
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            return (
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        if content.get("role", "user") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        parts = content["parts"]
        if not parts:
            return (
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        calls = [p for p in parts if isinstance(p, dict) and "functionCall" in p]
        responses = [p for p in parts if isinstance(p, dict) and "functionResponse" in p]
        if responses and len(responses) != calls_before:
            return (
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
        for part in calls:
            if not part.get("thoughtSignature"):
                return (
                    f"Function call is missing a thought_signature in functionCall parts. "
                    f"(contents[{i}])"
                )
        calls_before = len(calls)
    return None


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\r\n\r\n".encode()  # Google ends lines with CRLF


def _signature(call_id: str) -> str:
    return base64.b64encode(f"fault-server-signature:{call_id}".encode()).decode()


def _text(parts: list[Any]) -> str:
    return "".join(
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def _result(response: Any) -> str:
    if isinstance(response, dict) and set(response) == {"result"}:
        return str(response["result"])
    return json.dumps(response)


class GeminiWire:
    name = "gemini"

    def check(
        self, body: Any, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Refusal | None:
        if not isinstance(body, dict):
            return _refuse("Invalid JSON payload received.")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            return _refuse(
                f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
            )
        problem = _check_contents(body.get("contents"))
        return _refuse(problem) if problem else None

    def to_openai(self, body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        system = body.get("systemInstruction")
        if isinstance(system, dict) and (text := _text(system.get("parts") or [])):
            messages.append({"role": "system", "content": text})
        ids: list[str] = []
        for turn, content in enumerate(body["contents"]):
            parts = content["parts"]
            for k, part in enumerate(p for p in parts if "functionResponse" in p):
                call_id = ids[k] if k < len(ids) else f"g{turn}_{k}"
                response = part["functionResponse"].get("response")
                messages.append(
                    {"role": "tool", "tool_call_id": call_id, "content": _result(response)}
                )
            role = "assistant" if content.get("role") == "model" else "user"
            message: dict[str, Any] = {"role": role, "content": _text(parts)}
            calls = [p["functionCall"] for p in parts if "functionCall" in p]
            ids = [f"g{turn}_{k}" for k in range(len(calls))]
            if calls:
                message["tool_calls"] = [
                    {
                        "id": ids[k],
                        "type": "function",
                        "function": {"name": c.get("name"), "arguments": json.dumps(c.get("args"))},
                    }
                    for k, c in enumerate(calls)
                ]
            if message["content"] or calls or role == "assistant":
                messages.append(message)
        openai: dict[str, Any] = {"model": "", "messages": messages}
        tools = [
            {
                "type": "function",
                "function": {"name": d["name"], "parameters": d.get("parameters") or {}},
            }
            for tool in body.get("tools") or ()
            for d in tool.get("functionDeclarations") or ()
        ]
        if tools:
            openai["tools"] = tools
        mode = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        if mode.get("allowedFunctionNames"):
            name = mode["allowedFunctionNames"][0]
            openai["tool_choice"] = {"type": "function", "function": {"name": name}}
        elif mode.get("mode") in ("ANY", "NONE", "AUTO"):
            openai["tool_choice"] = {"ANY": "required"}.get(mode["mode"], mode["mode"].lower())
        config = body.get("generationConfig") or {}
        if config.get("maxOutputTokens"):
            openai["max_tokens"] = config["maxOutputTokens"]
        if config.get("stopSequences"):
            openai["stop"] = config["stopSequences"]
        if config.get("responseMimeType") == "application/json":
            schema = config.get("responseSchema") or config.get("responseJsonSchema")
            openai["response_format"] = (
                {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
                if schema
                else {"type": "json_object"}
            )
        return openai

    def credential(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key")

    def error_status(self, status: int, error: dict[str, Any]) -> int:
        code = (error.get("error") or {}).get("code") if isinstance(error, dict) else None
        if code == "invalid_api_key":
            return 400  # Gemini answers an invalid key with a 400, not a 401
        return 503 if status == 529 else status

    def error_body(
        self, status: int, error: dict[str, Any], retry_after: float | None = None
    ) -> dict[str, Any]:
        found = error.get("error")
        err: dict[str, Any] = found if isinstance(found, dict) else {}
        code = str(err.get("code") or err.get("type") or "")
        status = self.error_status(status, error)
        message = str(err.get("message") or "error")
        details: list[dict[str, Any]] = []
        if code == "invalid_api_key":
            message = "API key not valid. Please pass a valid API key."
            details.append(
                {
                    "@type": _TYPES + "ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            )
        elif status == 429:
            quota = "PerDay" if code == "insufficient_quota" else "PerMinute"
            message = "You exceeded your current quota, please check your plan and billing details."
            violation = {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                "quotaId": f"GenerateRequests{quota}PerProjectPerModel",
            }
            details.append({"@type": _TYPES + "QuotaFailure", "violations": [violation]})
            if retry_after is not None:
                details.append({"@type": _TYPES + "RetryInfo", "retryDelay": f"{retry_after:g}s"})
        elif code == "context_length_exceeded":
            message = (
                "The input token count (5000) exceeds the maximum number of tokens allowed (4096)."
            )
        elif code == "content_policy_violation":
            message = "The request was flagged by the safety system."
        elif status == 503:
            message = "The model is overloaded. Please try again later."
        body: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _STATUS.get(status, "UNKNOWN"),
        }
        if details:
            body["details"] = details
        return {"error": body}

    def rate_limit_headers(self, limit: int, remaining: int, window: float) -> dict[str, str]:
        return {}  # Gemini reports no headroom in its headers

    def _parts(self, answer: Answer) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = [{"text": answer.text}] if answer.text else []
        for call in answer.calls:
            parts.append(self._call(call))
        return parts

    @staticmethod
    def _call(call: dict[str, Any]) -> dict[str, Any]:
        fn = {"name": call["name"], "args": json.loads(call["arguments"] or "{}")}
        return {"functionCall": fn, "thoughtSignature": _signature(call["id"])}

    def _usage(self, answer: Answer, completion: int) -> dict[str, int]:
        p = answer.prompt_tokens
        return {
            "promptTokenCount": p,
            "candidatesTokenCount": completion,
            "totalTokenCount": p + completion,
        }

    def reply(self, answer: Answer) -> dict[str, Any]:
        candidate: dict[str, Any] = {"finishReason": _FINISH.get(answer.finish, "STOP"), "index": 0}
        if answer.finish == "content_filter":
            candidate["safetyRatings"] = [
                {
                    "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                    "probability": "HIGH",
                    "blocked": True,
                }
            ]
        else:
            candidate["content"] = {"parts": self._parts(answer), "role": "model"}
        return {
            "candidates": [candidate],
            "usageMetadata": self._usage(answer, answer.completion_tokens),
            "modelVersion": answer.model,
            "responseId": uuid.uuid4().hex[:22],
        }

    def stream(self, answer: Answer, body: dict[str, Any]) -> StreamScript:
        rid = uuid.uuid4().hex[:22]

        def event(parts: list[dict[str, Any]]) -> bytes:
            candidate = {"content": {"parts": parts, "role": "model"}, "index": 0}
            payload = {"candidates": [candidate], "modelVersion": answer.model, "responseId": rid}
            return _sse(payload)

        pieces = [event([{"text": w}]) for w in words(answer.text)] if answer.text else []
        pieces += [event([self._call(call)]) for call in answer.calls]
        usage = self._usage(answer, max(1, len(pieces)))
        final = self.reply(answer)
        final["usageMetadata"] = usage
        final["responseId"] = rid
        if "content" in final["candidates"][0]:
            final["candidates"][0]["content"]["parts"] = [{"text": ""}]
        closing = [_sse(final)]
        return StreamScript([], pieces, closing, None)

    def error_event(self, status: int, error: dict[str, Any]) -> bytes:
        overloaded = {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
        return _sse({"error": overloaded})

    def malformed_event(self) -> bytes:
        return b"data: {not json\r\n\r\n"
