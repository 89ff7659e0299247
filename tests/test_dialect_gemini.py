"""The Gemini dialect, sans I/O (mesh_core.providers._gemini*): request translation with
thought signatures, replies, stream events, safety blocks and errors."""

from __future__ import annotations

import json

import pytest

from mesh_core._errors import ErrorKind, ProviderError
from mesh_core._types import CompletionRequest
from mesh_core.providers import GeminiDialect
from mesh_core.providers._gemini_request import SKIP_SIGNATURE

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": False,
        },
    },
}


def req(messages, **kw) -> CompletionRequest:
    return CompletionRequest(model="pool", messages=messages, **kw)


def reply(parts, finish="STOP", **top) -> bytes:
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish}
    usage = {"promptTokenCount": 11, "candidatesTokenCount": 5, "totalTokenCount": 16}
    return json.dumps(
        {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-x", **top}
    ).encode()


def test_endpoint_and_key_header():
    d = GeminiDialect()
    assert d.endpoint("gemini-2.5-flash", stream=False) == (
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {},
    )
    assert d.endpoint("models/gemini-x", stream=True) == (
        "/v1beta/models/gemini-x:streamGenerateContent",
        {"alt": "sse"},
    )
    assert d.auth_headers("gk") == {"x-goog-api-key": "gk"}
    assert GeminiDialect("v1").endpoint("m", stream=False)[0] == "/v1/models/m:generateContent"


def test_the_request_body():
    body = GeminiDialect().build_payload(
        req(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            tools=[WEATHER],
            tool_choice="required",
            temperature=0.1,
            max_tokens=50,
            stop=["END"],
            extra={"safetySettings": [{"category": "X", "threshold": "BLOCK_NONE"}]},
        ),
        "gemini-x",
        stream=False,
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    call = body["contents"][1]["parts"][0]
    assert call["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert call["thoughtSignature"] == SKIP_SIGNATURE  # not a call Gemini made
    assert body["contents"][2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"result": "sunny"},
    }
    declared = body["tools"][0]["functionDeclarations"][0]
    assert declared["parameters"] == {"type": "object", "properties": {"city": {"type": "string"}}}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {
        "temperature": 0.1,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
    }
    assert body["safetySettings"][0]["threshold"] == "BLOCK_NONE"


def test_a_tool_call_keeps_its_thought_signature_for_the_next_turn():
    d = GeminiDialect()
    parsed = d.parse_reply(
        reply(
            [
                {"text": "thinking...", "thought": True},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                    "thoughtSignature": "c2ln",
                },
            ]
        ),
        req([]),
    )
    assert parsed.finish_reason == "tool_calls" and parsed.content is None
    call = parsed.tool_calls[0]
    assert json.loads(call.arguments) == {"city": "Oslo"}
    follow_up = req(
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call.to_dict()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": -3}'},
        ]
    )
    body = d.build_payload(follow_up, "m", stream=False)
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == "c2ln"
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"temp": -3}


def test_structured_output_asks_for_json_with_the_schema():
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "p",
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"a": {"type": "integer"}},
            },
        },
    }
    config = GeminiDialect().build_payload(
        req([{"role": "user", "content": "x"}], response_format=fmt), "m", stream=False
    )["generationConfig"]
    assert config == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
    }


@pytest.mark.parametrize(
    ("finish", "mapped"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("RECITATION", "content_filter")],
)
def test_finish_reasons_and_usage(finish, mapped):
    parsed = GeminiDialect().parse_reply(reply([{"text": "Hi"}], finish), req([]))
    assert parsed.finish_reason == mapped and parsed.content == "Hi"
    assert (
        parsed.usage.prompt_tokens,
        parsed.usage.completion_tokens,
        parsed.usage.total_tokens,
    ) == (11, 5, 16)


def test_thinking_tokens_count_as_completion():
    body = json.loads(reply([{"text": "Hi"}]))
    body["usageMetadata"] |= {"thoughtsTokenCount": 20, "totalTokenCount": 36}
    usage = GeminiDialect().parse_reply(json.dumps(body).encode(), req([])).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 25, 36)


def test_safety_blocks_are_content_policy_errors():
    d = GeminiDialect()
    blocked = json.dumps({"promptFeedback": {"blockReason": "SAFETY"}}).encode()
    stopped = json.dumps({"candidates": [{"finishReason": "SAFETY"}]}).encode()
    for body in (blocked, stopped):
        with pytest.raises(ProviderError) as info:
            d.parse_reply(body, req([]))
        assert info.value.kind is ErrorKind.CONTENT_POLICY


def test_a_stream_of_text_then_a_whole_function_call():
    d = GeminiDialect()
    parser = d.stream_parser(req([]))
    events = [
        {"candidates": [{"content": {"parts": [{"text": "Let me "}], "role": "model"}}]},
        {"candidates": [{"content": {"parts": [{"text": "check."}], "role": "model"}}]},
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {
                                "functionCall": {"name": "f", "args": {"x": 1}},
                                "thoughtSignature": "s1",
                            }
                        ],
                        "role": "model",
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 4,
                "totalTokenCount": 7,
            },
        },
    ]
    chunks = [c for e in events for c in parser.feed(json.dumps(e))]
    assert "".join(c.content for c in chunks) == "Let me check."
    delta = chunks[-1].tool_call_deltas[0]
    assert delta.name == "f" and json.loads(delta.arguments) == {"x": 1} and delta.index == 0
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage.total_tokens == 7
    assert d.signatures.get(delta.id) == "s1"
    with pytest.raises(ProviderError) as info:
        list(
            d.stream_parser(req([])).feed(
                json.dumps(
                    {"error": {"code": 503, "status": "UNAVAILABLE", "message": "overloaded"}}
                )
            )
        )
    assert info.value.kind is ErrorKind.SERVER_ERROR


def error(status, code, message, *details) -> bytes:
    return json.dumps(
        {"error": {"code": status, "status": code, "message": message, "details": list(details)}}
    ).encode()


RETRY = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}


@pytest.mark.parametrize(
    ("status", "body", "kind", "retry"),
    [
        (
            429,
            error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota", RETRY),
            ErrorKind.RATE_LIMITED,
            17.0,
        ),
        (
            429,
            error(
                429,
                "RESOURCE_EXHAUSTED",
                "quota",
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}],
                },
            ),
            ErrorKind.QUOTA_EXHAUSTED,
            None,
        ),
        (503, error(503, "UNAVAILABLE", "The model is overloaded."), ErrorKind.SERVER_ERROR, None),
        (
            400,
            error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid.",
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
            ),
            ErrorKind.AUTHENTICATION,
            None,
        ),
        (
            400,
            error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (5000) exceeds the maximum number of tokens allowed (4096).",
            ),
            ErrorKind.CONTEXT_WINDOW,
            None,
        ),
        (
            400,
            error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."),
            ErrorKind.BAD_REQUEST,
            None,
        ),
    ],
)
def test_error_classification(status, body, kind, retry):
    err = GeminiDialect().classify_error(status, {}, body)
    assert err.kind is kind and err.status_code == status and err.retry_after == retry
