"""A LlamaIndex LLM of no known integration (a ``CustomLLM``) as a pool member: the SDK
errors it raises classified into the mesh's kinds in every mode, what it cannot be sent
refused clearly, and failover from it to a real ``OpenAILike`` on a fault server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms.custom import CustomLLM

from mesh_core._errors import (
    AllProvidersExhaustedError,
    ErrorKind,
    ProviderError,
)
from mesh_core._types import CompletionRequest
from mesh_core.providers import ForeignProvider, Timeouts
from mesh_core.testing import faults
from modelmesh_llamaindex import MeshLLM
from modelmesh_llamaindex._foreign import LlamaIndexAdapter
from tests.llamaindex.foreign_helpers import fast, like, user

SONG = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}


class Failing(CustomLLM):
    """A LlamaIndex LLM of no known integration, failing with ``error`` (None: it answers,
    recording the prompts it was given)."""

    error: Any = None
    prompts: list[str] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="failing")

    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        if self.error is not None:
            raise self.error
        self.prompts.append(prompt)
        return CompletionResponse(text='{"title": "Ok", "year": 1}')

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kw: Any
    ) -> CompletionResponseGen:
        yield self.complete(prompt, formatted, **kw)


_REQ = httpx.Request("POST", "https://api.example.com/v1/chat/completions")


def status(
    cls: type[openai.APIStatusError], code: int, body: dict[str, Any], **headers: str
) -> Any:
    response = httpx.Response(code, request=_REQ, headers=headers, json=body)
    return cls(body["error"]["message"], response=response, body=body)


def err(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


OPENAI_ERRORS = [
    (
        status(
            openai.RateLimitError,
            429,
            err("slow down", "rate_limit_exceeded"),
            **{"retry-after": "7"},
        ),
        ErrorKind.RATE_LIMITED,
    ),
    (
        status(
            openai.RateLimitError, 429, err("You exceeded your current quota", "insufficient_quota")
        ),
        ErrorKind.QUOTA_EXHAUSTED,
    ),
    (status(openai.InternalServerError, 503, err("overloaded")), ErrorKind.SERVER_ERROR),
    (
        status(openai.AuthenticationError, 401, err("Incorrect API key", "invalid_api_key")),
        ErrorKind.AUTHENTICATION,
    ),
    (
        status(
            openai.BadRequestError, 400, err("maximum context length", "context_length_exceeded")
        ),
        ErrorKind.CONTEXT_WINDOW,
    ),
    (
        status(openai.BadRequestError, 400, err("rejected by the safety system", "content_filter")),
        ErrorKind.CONTENT_POLICY,
    ),
    (status(openai.BadRequestError, 400, err("'temperature' is invalid")), ErrorKind.BAD_REQUEST),
    (openai.APITimeoutError(request=_REQ), ErrorKind.TIMEOUT),
    (openai.APIConnectionError(request=_REQ), ErrorKind.CONNECTION),
]


def call(provider: ForeignProvider, request: CompletionRequest, mode: str) -> Any:
    """The provider's answer, by ``mode``: a reply, or every chunk of a stream."""
    if mode == "sync":
        return provider.complete("x", request, Timeouts())
    if mode == "stream":
        return list(provider.stream("x", request, Timeouts()))

    async def run() -> Any:
        if mode == "async":
            return await provider.acomplete("x", request, Timeouts())
        return [c async for c in await provider.astream("x", request, Timeouts())]

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["sync", "async", "stream", "astream"])
@pytest.mark.parametrize(("error", "kind"), OPENAI_ERRORS, ids=[k.value for _, k in OPENAI_ERRORS])
def test_sdk_errors_of_a_custom_llm_are_classified(error, kind, mode):
    provider = ForeignProvider("fake", LlamaIndexAdapter(Failing(error=error)))
    request = CompletionRequest(model="pool", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ProviderError) as caught:
        call(provider, request, mode)
    assert caught.value.kind is kind
    assert caught.value.provider_id == "fake"
    if kind is ErrorKind.RATE_LIMITED:
        assert caught.value.retry_after == 7


@pytest.mark.parametrize("mode", ["sync", "async", "stream", "astream"])
def test_a_custom_llm_answers_in_every_mode(mode):
    provider = ForeignProvider("fake", LlamaIndexAdapter(Failing(prompts=[])))
    request = CompletionRequest(model="pool", messages=[{"role": "user", "content": "hi"}])
    out = call(provider, request, mode)
    if mode in ("sync", "async"):
        assert out.response.content == '{"title": "Ok", "year": 1}'
        assert out.response.finish_reason == "stop" and out.response.usage is None
    else:
        assert "".join(c.content for c in out) == '{"title": "Ok", "year": 1}'
        assert out[-1].finish_reason == "stop"


def test_a_failing_custom_llm_fails_over_to_a_real_one(servers, made):
    boom = status(openai.InternalServerError, 500, err("boom"))
    llm = MeshLLM.from_models(
        {"fake.x": Failing(error=boom), "real.m2": like(servers[1], "m2")},
        config=fast("fake.x", "real.m2"),
    )
    made.append(llm)
    assert [a["outcome"] for a in llm.chat(user("hi")).raw["attempts"]][-2:] == [
        "server_error",
        "success",
    ]
    assert llm.metadata.is_function_calling_model  # the member that can call tools counts
    with pytest.raises(AllProvidersExhaustedError):
        servers[1].set("m2", faults.server_error(500))
        llm.chat(user("again"))


def test_a_secret_the_llm_holds_never_shows_in_errors(servers, made):
    class Keyed(Failing):  # local: from_models describes it as a plain LlamaIndex LLM
        api_key: str = "hunter2-correct-horse"

    fake = Keyed(error=RuntimeError("the key hunter2-correct-horse was refused"))
    llm = MeshLLM.from_models(
        {"fake.x": fake, "real.m2": like(servers[1], "m2")}, config=fast("fake.x", "real.m2")
    )
    made.append(llm)
    assert llm.mesh.config.providers["fake"].class_path == "llama_index.core.llms.llm:LLM"
    attempts = llm.chat(user("hi")).raw["attempts"]
    assert attempts[-1]["model_id"] == "real.m2"
    assert "RuntimeError" in attempts[0]["error"] and "unclassified" in attempts[0]["error"]
    assert "hunter2" not in str(attempts)


def test_a_message_with_no_llamaindex_form_is_a_clear_bad_request():
    provider = ForeignProvider("fake", LlamaIndexAdapter(Failing()))
    for content, where in [
        ([{"type": "video", "video": "x"}], r"messages\[0\]\.content\[0\]: .*'video'"),
        (
            [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
            r"messages\[0\] cannot be converted: Error",  # binascii.Error
        ),
    ]:
        request = CompletionRequest(model="p", messages=[{"role": "user", "content": content}])
        with pytest.raises(ProviderError, match=where) as caught:
            provider.complete("x", request, Timeouts())
        assert caught.value.kind is ErrorKind.BAD_REQUEST


def test_tools_to_a_non_function_calling_llm_are_refused_clearly():
    provider = ForeignProvider("fake", LlamaIndexAdapter(Failing()))
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    request = CompletionRequest(
        model="p", messages=[{"role": "user", "content": "hi"}], tools=[tool]
    )
    with pytest.raises(ProviderError, match="not a function-calling LLM") as caught:
        provider.complete("x", request, Timeouts())
    assert caught.value.kind is ErrorKind.BAD_REQUEST


def test_response_format_becomes_an_instruction_elsewhere():
    fake = Failing(prompts=[])
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "Song", "schema": SONG},
    }
    request = CompletionRequest(
        model="p", messages=[{"role": "user", "content": "a song"}], response_format=fmt
    )
    reply = ForeignProvider("fake", LlamaIndexAdapter(fake)).complete("x", request, Timeouts())
    assert reply.response.content == '{"title": "Ok", "year": 1}'
    assert '"title"' in fake.prompts[0] and "JSON schema" in fake.prompts[0]
