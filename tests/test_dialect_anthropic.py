"""The Anthropic Messages dialect, sans I/O (mesh_core.providers._anthropic*): request
translation, replies, stream events, errors and rate-limit headers."""

from __future__ import annotations

import json

import pytest

from mesh_core._errors import ErrorKind, ProviderError
from mesh_core._types import CompletionRequest
from mesh_core.providers import AnthropicDialect
from mesh_core.providers._anthropic import anthropic_rate_limits, parse_message
from mesh_core.providers._anthropic_request import OUTPUT_TOOL

D = AnthropicDialect(default_max_tokens=777)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "p",
        "schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
    },
}


def req(messages, **kw) -> CompletionRequest:
    return CompletionRequest(model="pool", messages=messages, **kw)


def events(*payloads) -> list[str]:
    return [json.dumps(p) for p in payloads]


def run(parser, payloads):
    chunks = []
    for data in events(*payloads):
        chunks.extend(parser.feed(data))
    return chunks


# --- the request -------------------------------------------------------------------------
def test_headers_are_the_ones_the_sdk_sends():
    """``anthropic`` 2.15 sends ``Authorization: Bearer <key>`` and ``anthropic-version:
    2026-10-21`` (see test_provider_sdk_fidelity for the SDK's own request)."""
    assert D.auth_headers("sk-ant") == {
        "anthropic-version": "2026-10-21",
        "authorization": "Bearer sk-ant",
    }
    legacy = AnthropicDialect("2023-06-01", auth="api-key").auth_headers("k")
    assert legacy == {"anthropic-version": "2023-06-01", "x-api-key": "k"}
    assert D.auth_headers(None) == {"anthropic-version": "2026-10-21"}
    assert D.endpoint("claude", stream=True) == ("/v1/messages", {})


def test_system_is_hoisted_and_roles_alternate():
    body = D.build_payload(
        req(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "developer", "content": "And polite."},
                {"role": "assistant", "content": "c"},
            ]
        ),
        "claude-x",
        stream=False,
    )
    assert body["system"] == "Be brief.\n\nAnd polite."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]
    assert body["max_tokens"] == 777 and body["model"] == "claude-x"


def test_a_conversation_opening_with_the_assistant_gets_a_user_turn_first():
    body = D.build_payload(req([{"role": "assistant", "content": "Hi! "}]), "m", stream=False)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["content"][-1]["text"] == "Hi!"  # a prefill: no trailing space


def test_tool_calls_and_results_become_tool_use_and_tool_result_blocks():
    body = D.build_payload(
        req(
            [
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
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=5,
            stop=["END"],
            temperature=0.2,
        ),
        "m",
        stream=True,
    )
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}],
    }
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": TOOLS[0]["function"]["parameters"],
            "description": "Weather in a city",
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert body["max_tokens"] == 5 and body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.2 and body["stream"] is True


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_tool_choice(choice, expected):
    body = D.build_payload(
        req([{"role": "user", "content": "x"}], tools=TOOLS, tool_choice=choice), "m", stream=False
    )
    assert body["tool_choice"] == expected


def test_structured_output_is_a_forced_tool_and_extra_fields_pass_through():
    request = req(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        response_format=SCHEMA,
        extra={"thinking": {"type": "enabled", "budget_tokens": 1024}, "session_id": "s"},
    )
    body = D.build_payload(request, "m", stream=False)
    assert body["tools"][-1]["name"] == OUTPUT_TOOL
    assert body["tools"][-1]["input_schema"] == SCHEMA["json_schema"]["schema"]
    assert body["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "session_id" not in body
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}


def test_an_image_part_becomes_an_image_block():
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
    ]
    body = D.build_payload(req([{"role": "user", "content": parts}]), "m", stream=False)
    blocks = body["messages"][0]["content"]
    assert blocks[0]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    assert blocks[1]["source"] == {"type": "url", "url": "https://example.test/cat.png"}


# --- replies -------------------------------------------------------------------------------
def message(content, stop="end_turn", **usage):
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": content,
            "stop_reason": stop,
            "usage": {"input_tokens": 10, "output_tokens": 4, **usage},
        }
    ).encode()


def test_a_reply_with_text_tool_use_and_cached_usage():
    body = message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        stop="tool_use",
        cache_read_input_tokens=100,
        cache_creation_input_tokens=5,
    )
    parsed = D.parse_reply(body, req([]))
    assert parsed.content == "Let me check." and parsed.finish_reason == "tool_calls"
    assert parsed.tool_calls[0].id == "toolu_1"
    assert json.loads(parsed.tool_calls[0].arguments) == {"city": "Paris"}
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens) == (115, 4)
    assert parsed.provider_model == "claude-x"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
    ],
)
def test_stop_reasons_map_to_openai_finish_reasons(stop, finish):
    assert parse_message(message([{"type": "text", "text": "x"}], stop)).finish_reason == finish


def test_a_structured_answer_comes_back_as_json_text():
    body = message(
        [{"type": "tool_use", "id": "t", "name": OUTPUT_TOOL, "input": {"x": 3}}], "tool_use"
    )
    parsed = D.parse_reply(body, req([], response_format=SCHEMA))
    assert json.loads(parsed.content) == {"x": 3}
    assert parsed.tool_calls == [] and parsed.finish_reason == "stop"


def test_a_refusal_with_no_answer_is_a_content_policy_error():
    with pytest.raises(ProviderError) as info:
        parse_message(message([], "refusal"))
    assert info.value.kind is ErrorKind.CONTENT_POLICY


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b'{"content": 3}', b'{"content": [{"type": "text", "text": 5}]}']
)
def test_a_malformed_reply_is_a_malformed_response(body):
    with pytest.raises(ProviderError) as info:
        parse_message(body)
    assert info.value.kind is ErrorKind.MALFORMED_RESPONSE


# --- streams -------------------------------------------------------------------------------
START = {
    "type": "message_start",
    "message": {"id": "m", "model": "claude-x", "usage": {"input_tokens": 12, "output_tokens": 1}},
}


def test_a_stream_with_text_a_ping_and_a_tool_call():
    parser = D.stream_parser(req([], tools=TOOLS))
    chunks = run(
        parser,
        [
            START,
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Checking"},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "get_weather",
                    "input": {},
                },
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
            },
            {"type": "content_block_stop", "index": 1},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9},
            },
        ],
    )
    assert not parser.done
    list(parser.feed(json.dumps({"type": "message_stop"})))
    assert parser.done
    assert "".join(c.content for c in chunks) == "Checking"
    deltas = [d for c in chunks for d in c.tool_call_deltas]
    assert deltas[0].id == "toolu_9" and deltas[0].name == "get_weather" and deltas[0].index == 0
    assert "".join(d.arguments or "" for d in deltas) == '{"city": "Paris"}'
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (12, 9)
    assert chunks[0].model == "claude-x"


def test_a_structured_stream_yields_the_json_as_text():
    parser = D.stream_parser(req([], response_format=SCHEMA))
    chunks = run(
        parser,
        [
            START,
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t", "name": OUTPUT_TOOL, "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"x": 3}'},
            },
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3},
            },
        ],
    )
    assert "".join(c.content for c in chunks) == '{"x": 3}'
    assert not any(c.tool_call_deltas for c in chunks) and chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", ErrorKind.SERVER_ERROR),
        ("api_error", ErrorKind.SERVER_ERROR),
        ("rate_limit_error", ErrorKind.RATE_LIMITED),
    ],
)
def test_an_error_event_is_raised_classified(error_type, kind):
    parser = D.stream_parser(req([]))
    run(parser, [START])
    with pytest.raises(ProviderError) as info:
        run(parser, [{"type": "error", "error": {"type": error_type, "message": "Overloaded"}}])
    assert info.value.kind is kind


def test_a_refused_stream_before_any_token_is_a_content_policy_error():
    parser = D.stream_parser(req([]))
    with pytest.raises(ProviderError) as info:
        run(
            parser,
            [
                START,
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "refusal"},
                    "usage": {"output_tokens": 0},
                },
            ],
        )
    assert info.value.kind is ErrorKind.CONTENT_POLICY


def test_unknown_event_types_are_ignored_and_garbage_is_malformed():
    parser = D.stream_parser(req([]))
    assert run(parser, [{"type": "some_future_event", "x": 1}]) == []
    for bad in (
        '{"type": "content_block_delta", "index": 7, "delta": {"type": "text_delta", "text": "x"}}',
        "{nope",
        "[]",
    ):
        with pytest.raises(ProviderError) as info:
            list(D.stream_parser(req([])).feed(bad))
        assert info.value.kind is ErrorKind.MALFORMED_RESPONSE


# --- errors and rate limits ------------------------------------------------------------------
def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "kind", "message", "expected"),
    [
        (529, "overloaded_error", "Overloaded", ErrorKind.SERVER_ERROR),
        (500, "api_error", "Internal server error", ErrorKind.SERVER_ERROR),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your rate limit",
            ErrorKind.RATE_LIMITED,
        ),
        (401, "authentication_error", "invalid x-api-key", ErrorKind.AUTHENTICATION),
        (403, "permission_error", "no access", ErrorKind.AUTHENTICATION),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            ErrorKind.CONTEXT_WINDOW,
        ),
        (
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
            ErrorKind.QUOTA_EXHAUSTED,
        ),
        (
            400,
            "invalid_request_error",
            "Output blocked by content filtering policy",
            ErrorKind.CONTENT_POLICY,
        ),
        (400, "invalid_request_error", "max_tokens: Field required", ErrorKind.BAD_REQUEST),
    ],
)
def test_error_classification(status, kind, message, expected):
    err = D.classify_error(status, {"retry-after": "7"}, error_body(kind, message))
    assert err.kind is expected and err.status_code == status
    assert kind in err.message and err.retry_after == 7.0


def test_rate_limit_headers():
    info = anthropic_rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:30Z",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
        },
        now=1767225600.0,  # 2026-01-01T00:00:00Z
    )
    assert (info.requests_limit, info.requests_remaining) == (50, 49)
    assert (info.tokens_limit, info.tokens_remaining) == (40000, 39000)
    assert info.reset_requests == 30.0
    assert anthropic_rate_limits({"x-ratelimit-remaining-requests": "3"}) is None
