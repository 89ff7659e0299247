"""The fault server speaks each protocol faithfully: the official SDKs (``anthropic``,
``google-genai``, and ``openai``'s ``OpenAI`` and ``AzureOpenAI``) accept its replies,
streams, error bodies and headers, and raise their own error classes for its faults. This
is what keeps the fake honest: every request-path test of the mesh runs against it."""

from __future__ import annotations

import json

import pytest

from mesh_core.testing import FaultServer, faults

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
genai = pytest.importorskip("google.genai")
from google.genai import errors as genai_errors, types as genai_types  # noqa: E402

KEY = "sk-fidelity-test-key-0001"
MSG = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def server():
    with FaultServer(api_key=KEY) as s:
        yield s


@pytest.fixture
def claude(server):
    client = anthropic.Anthropic(base_url=server.url_for("anthropic"), api_key=KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def azure(server):
    client = openai.AzureOpenAI(
        azure_endpoint=server.url_for("azure-openai"),
        api_key=KEY,
        api_version="2024-10-21",
        max_retries=0,
    )
    yield client
    client.close()


# --- Anthropic ---------------------------------------------------------------------------------
def test_anthropic_reply_and_stream(server, claude):
    reply = claude.messages.create(model="claude-x", max_tokens=100, messages=MSG)
    assert reply.content[0].text == "Hello from claude-x. You said: hello there"
    assert reply.stop_reason == "end_turn" and reply.usage.output_tokens > 0
    with claude.messages.stream(model="claude-x", max_tokens=100, messages=MSG) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.input_tokens > 0
    rec = server.requests[-1]
    assert rec.dialect == "anthropic"
    # what the SDK sends is what AnthropicDialect sends by default
    from mesh_core.providers import AnthropicDialect

    ours = AnthropicDialect().auth_headers(KEY)
    assert {k: rec.headers[k] for k in ours} == ours


def test_anthropic_tool_use_plain_and_streamed_with_input_json_deltas(server, claude):
    server.set("claude-x", faults.tool_call("get_weather", {"city": "Paris"}))
    ask = {"model": "claude-x", "max_tokens": 100, "tools": [WEATHER], "messages": MSG}
    reply = claude.messages.create(**ask)
    assert reply.stop_reason == "tool_use"
    assert reply.content[0].name == "get_weather" and reply.content[0].input == {"city": "Paris"}
    with claude.messages.stream(**ask) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].input == {"city": "Paris"}  # the SDK joined the partial JSON
    assert "input_json" in kinds or "content_block_delta" in kinds


def test_anthropic_refusal_and_max_tokens(server, claude):
    server.enqueue("claude-x", faults.refusal())
    assert claude.messages.create(model="claude-x", max_tokens=50, messages=MSG).stop_reason == (
        "refusal"
    )
    cut = claude.messages.create(model="claude-x", max_tokens=2, messages=MSG)
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "Hello from"


@pytest.mark.parametrize(
    ("fault", "error_class", "status", "error_type"),
    [
        (faults.overloaded(), "InternalServerError", 529, "overloaded_error"),
        (faults.server_error(500), "InternalServerError", 500, "api_error"),
        (faults.rate_limited(retry_after=3), "RateLimitError", 429, "rate_limit_error"),
        (faults.unauthorized(), "AuthenticationError", 401, "authentication_error"),
        (faults.context_length_exceeded(), "BadRequestError", 400, "invalid_request_error"),
        (faults.content_policy(), "BadRequestError", 400, "invalid_request_error"),
    ],
)
def test_anthropic_errors_are_the_sdks_own(server, claude, fault, error_class, status, error_type):
    server.set("claude-x", fault)
    with pytest.raises(getattr(anthropic, error_class)) as info:
        claude.messages.create(model="claude-x", max_tokens=100, messages=MSG)
    assert info.value.status_code == status
    assert info.value.body["error"]["type"] == error_type
    assert info.value.body["type"] == "error"


def test_anthropic_error_event_and_malformed_event_inside_a_stream(server, claude):
    server.set("claude-x", faults.stream_error(after=1))
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        claude.messages.stream(model="claude-x", max_tokens=100, messages=MSG) as stream,
    ):
        list(stream.text_stream)
    server.set("claude-x", faults.malformed_event(after=1))
    with (
        pytest.raises(ValueError),  # json.JSONDecodeError, from the SDK's event decoder
        claude.messages.stream(model="claude-x", max_tokens=100, messages=MSG) as stream,
    ):
        list(stream.text_stream)


def test_anthropic_rate_limit_headers_and_request_checks(server, claude):
    server.rate_limit("claude-x", 5)
    raw = claude.messages.with_raw_response.create(model="claude-x", max_tokens=9, messages=MSG)
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "4"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("+00:00")
    # what the real API refuses, the fake refuses too
    with pytest.raises(anthropic.BadRequestError, match="alternate"):
        claude.messages.create(
            model="claude-x", max_tokens=9, messages=[*MSG, {"role": "user", "content": "again"}]
        )
    with pytest.raises(anthropic.BadRequestError, match="tool_result"):
        claude.messages.create(
            model="claude-x",
            max_tokens=9,
            messages=[
                *MSG,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {"role": "user", "content": "no result given"},
            ],
        )


# --- Azure OpenAI ------------------------------------------------------------------------------
def test_azure_reply_stream_and_tool_call(server, azure):
    reply = azure.chat.completions.create(model="dep-4o", messages=MSG)
    assert reply.choices[0].message.content == "Hello from dep-4o. You said: hello there"
    rec = server.requests[-1]
    assert rec.dialect == "azure-openai" and rec.model == "dep-4o"
    assert rec.headers["api-key"] == KEY and "authorization" not in rec.headers
    stream = azure.chat.completions.create(
        model="dep-4o", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == reply.choices[0].message.content
    server.set("dep-4o", faults.tool_call("get_weather", {"city": "Oslo"}))
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]},
    }
    call = azure.chat.completions.create(model="dep-4o", messages=MSG, tools=[tool])
    assert json.loads(call.choices[0].message.tool_calls[0].function.arguments) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("fault", "error_class", "code"),
    [
        (faults.rate_limited(retry_after=1), "RateLimitError", "rate_limit_exceeded"),
        (faults.unauthorized(), "AuthenticationError", "invalid_api_key"),
        (faults.content_policy(), "BadRequestError", "content_filter"),
        (faults.server_error(503), "InternalServerError", "server_error"),
    ],
)
def test_azure_errors_are_the_sdks_own(server, azure, fault, error_class, code):
    server.set("dep-4o", fault)
    with pytest.raises(getattr(openai, error_class)) as info:
        azure.chat.completions.create(model="dep-4o", messages=MSG)
    assert info.value.code == code


def test_azure_refusal_is_a_content_filter_finish(server, azure):
    server.set("dep-4o", faults.refusal())
    reply = azure.chat.completions.create(model="dep-4o", messages=MSG)
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content is None


def test_a_wrong_key_is_refused_in_each_dialect(server):
    bad = "sk-wrong"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(
            base_url=server.url_for("anthropic"), api_key=bad, max_retries=0
        ).messages.create(model="m", max_tokens=5, messages=MSG)
    for client in (
        openai.AzureOpenAI(
            azure_endpoint=server.url_for("azure-openai"),
            api_key=bad,
            api_version="2024-10-21",
            max_retries=0,
        ),
        openai.OpenAI(base_url=server.base_url, api_key=bad, max_retries=0),
    ):
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="m", messages=MSG)


# --- Gemini ------------------------------------------------------------------------------------
@pytest.fixture
def gemini(server):
    options = genai_types.HttpOptions(base_url=server.url_for("gemini"))
    client = genai.Client(api_key=KEY, http_options=options)
    yield client
    client.close()


NO_AUTO = genai_types.AutomaticFunctionCallingConfig(disable=True)


def test_gemini_reply_and_stream(server, gemini):
    reply = gemini.models.generate_content(model="gemini-x", contents="hello there")
    assert reply.text == "Hello from gemini-x. You said: hello there"
    assert reply.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert reply.usage_metadata.candidates_token_count == len(reply.text.split())
    rec = server.requests[-1]
    assert rec.dialect == "gemini" and rec.model == "gemini-x" and not rec.stream
    from mesh_core.providers import GeminiDialect  # what the SDK sends is what we send

    ours = GeminiDialect().auth_headers(KEY)
    assert {k: rec.headers[k] for k in ours} == ours
    chunks = list(gemini.models.generate_content_stream(model="gemini-x", contents="hello there"))
    assert "".join(c.text or "" for c in chunks) == reply.text
    assert chunks[-1].usage_metadata.total_token_count > 0 and server.requests[-1].stream


def test_gemini_function_call_and_its_thought_signature_round_trip(server, gemini):
    server.set("gemini-x", faults.tool_call("get_weather", {"city": "Paris"}))
    declaration = genai_types.FunctionDeclaration(
        name="get_weather",
        parameters_json_schema=WEATHER["input_schema"],
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[declaration])],
        automatic_function_calling=NO_AUTO,
    )
    reply = gemini.models.generate_content(model="gemini-x", contents="weather?", config=config)
    call_part = reply.candidates[0].content.parts[0]
    assert call_part.function_call.args == {"city": "Paris"} and call_part.thought_signature
    server.set("gemini-x", faults.ok())
    follow = gemini.models.generate_content(
        model="gemini-x",
        contents=[
            genai_types.Content(role="user", parts=[genai_types.Part(text="weather?")]),
            reply.candidates[0].content,
            genai_types.Content(
                role="user",
                parts=[
                    genai_types.Part.from_function_response(
                        name="get_weather", response={"result": "sunny"}
                    )
                ],
            ),
        ],
        config=config,
    )
    assert follow.text == "The tool returned: sunny"
    # the fake, as Gemini, refuses a function call sent back without its signature
    unsigned = genai_types.Content(
        role="model",
        parts=[genai_types.Part(function_call=call_part.function_call)],
    )
    with pytest.raises(genai_errors.ClientError, match="thought_signature"):
        gemini.models.generate_content(
            model="gemini-x",
            contents=[
                genai_types.Content(role="user", parts=[genai_types.Part(text="weather?")]),
                unsigned,
                genai_types.Content(
                    role="user",
                    parts=[
                        genai_types.Part.from_function_response(
                            name="get_weather", response={"result": "sunny"}
                        )
                    ],
                ),
            ],
            config=config,
        )


@pytest.mark.parametrize(
    ("fault", "error_class", "code", "status"),
    [
        (faults.rate_limited(retry_after=7), "ClientError", 429, "RESOURCE_EXHAUSTED"),
        (faults.unauthorized(), "ClientError", 400, "INVALID_ARGUMENT"),
        (faults.server_error(503), "ServerError", 503, "UNAVAILABLE"),
        (faults.overloaded(), "ServerError", 503, "UNAVAILABLE"),
        (faults.context_length_exceeded(), "ClientError", 400, "INVALID_ARGUMENT"),
    ],
)
def test_gemini_errors_are_the_sdks_own(server, gemini, fault, error_class, code, status):
    server.set("gemini-x", fault)
    with pytest.raises(getattr(genai_errors, error_class)) as info:
        gemini.models.generate_content(model="gemini-x", contents="x")
    assert (info.value.code, info.value.status) == (code, status)


def test_gemini_safety_refusal_and_retry_info(server, gemini):
    server.set("gemini-x", faults.refusal())
    reply = gemini.models.generate_content(model="gemini-x", contents="x")
    assert reply.candidates[0].finish_reason == genai_types.FinishReason.SAFETY
    assert reply.text is None
    server.set("gemini-x", faults.rate_limited(retry_after=7))
    with pytest.raises(genai_errors.ClientError) as info:
        gemini.models.generate_content(model="gemini-x", contents="x")
    retry = [d for d in info.value.details["error"]["details"] if "RetryInfo" in d["@type"]]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
