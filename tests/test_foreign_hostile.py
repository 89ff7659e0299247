"""Hostile foreign models (LangChain chat models and LlamaIndex LLMs as pool members): ones
that hang, stall, answer odd objects, raise odd exceptions or leak their keys. The answer is
always the answer or a classified mesh error within a bound: never a raw exception, a hang,
a pile of threads, or a key in a message."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms.custom import CustomLLM

from mesh_core import load_config
from mesh_core._errors import (
    ConfigurationError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    ServerError,
)
from mesh_core._types import CompletionChunk, CompletionRequest
from mesh_core.providers import ForeignProvider, ParsedResponse
from mesh_core.providers._base import Timeouts
from modelmesh_langchain import MeshChatModel
from modelmesh_langchain._foreign import LangChainAdapter
from modelmesh_llamaindex import MeshLLM
from modelmesh_llamaindex._foreign import LlamaIndexAdapter

KEY = "sk-hostile-0123456789abcdefXYZ"
ODD_KEY = "plain+key/with=odd&chars42"  # not shaped like a key: known only as the model's
REQ = CompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
QUICK = Timeouts(total=0.05, first_token=0.2, stall=0.2)
ROOMY = Timeouts(total=10.0, first_token=10.0, stall=10.0)


def workers() -> int:
    return sum(t.name == "mesh-foreign-worker" and t.is_alive() for t in threading.enumerate())


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()  # type: ignore[no-any-return]


class Chat(BaseChatModel):
    """A LangChain chat model doing what ``act`` says (sync only unless ``native``)."""

    act: Any = None
    release: Any = None

    @property
    def _llm_type(self) -> str:
        return "hostile"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        if self.release is not None:
            self.release.wait()
        message = self.act(messages) if self.act is not None else _echo(messages)
        return ChatResult(generations=[ChatGeneration(message=message)])


def _echo(messages: list[BaseMessage]) -> AIMessage:
    return AIMessage(content=f"echo: {messages[-1].text}")


class Streamer(BaseChatModel):
    """Streams ``first``, then hangs (``hang`` seconds, sync and async), then ``rest``."""

    hang: float = 0.0
    closed: Any = None

    @property
    def _llm_type(self) -> str:
        return "streamer"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="whole"))])

    def _stream(self, messages: Any, stop: Any = None, **kw: Any) -> Iterator[ChatGenerationChunk]:
        try:
            yield ChatGenerationChunk(message=AIMessageChunk(content="first"))
            time.sleep(self.hang)
            for i in range(3):
                yield ChatGenerationChunk(message=AIMessageChunk(content=f" {i}"))
        finally:
            if self.closed is not None:
                self.closed.append("sync")

    async def _astream(
        self, messages: Any, stop: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        try:
            yield ChatGenerationChunk(message=AIMessageChunk(content="first"))
            await asyncio.sleep(self.hang)
            for i in range(200):
                await asyncio.sleep(0.01)
                yield ChatGenerationChunk(message=AIMessageChunk(content=f" {i}"))
        finally:
            if self.closed is not None:
                self.closed.append("async")


def lc(model: BaseChatModel, secrets: tuple[str, ...] = ()) -> ForeignProvider:
    return ForeignProvider("p", LangChainAdapter(model), secrets=secrets)


# --- hanging models: bounded threads, bounded waits -----------------------------------------


def test_a_sync_model_hanging_forever_holds_a_bounded_number_of_threads() -> None:
    release = threading.Event()
    provider = lc(Chat(release=release))
    before = workers()
    try:
        errors = []
        for _ in range(200):
            with pytest.raises(ProviderTimeoutError) as info:
                provider.complete("m", REQ, QUICK)
            errors.append(str(info.value))
        assert workers() - before <= ForeignProvider.max_abandoned
        assert "still running past their deadline" in errors[-1]
        assert errors[-1].startswith("p: ")
    finally:
        release.set()
    # once the hung calls end, the provider calls again
    assert wait_for(lambda: provider._stuck.count == 0)
    assert provider.complete("m", REQ, ROOMY).response.content == "echo: hi"


def test_an_async_call_of_a_sync_only_model_never_starves_the_event_loop() -> None:
    """LangChain would run a sync-only model on the loop's default executor (a few threads
    for the whole loop): hung calls there would stall every other one."""
    release = threading.Event()
    hung, healthy = lc(Chat(release=release)), lc(Chat())

    async def main() -> str:
        for _ in range(40):
            with pytest.raises(ProviderTimeoutError):
                await hung.acomplete("m", REQ, QUICK)
        answer = await healthy.acomplete("m", REQ, Timeouts(total=5.0))
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), 5) == 42
        return str(answer.response.content)

    try:
        assert asyncio.run(main()) == "echo: hi"
        assert hung._stuck.count <= ForeignProvider.max_abandoned
    finally:
        release.set()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_hanging_after_its_first_chunk_hits_the_stall_deadline(mode: str) -> None:
    provider = lc(Streamer(hang=3.0))
    timeouts = Timeouts(total=10.0, first_token=2.0, stall=0.2)
    started = time.monotonic()
    if mode == "sync":
        stream = provider.stream("m", REQ, timeouts)
        assert next(stream).content == "first"
        with pytest.raises(ProviderTimeoutError, match=r"stall|chunk|silen"):
            next(stream)
        stream.close()
    else:

        async def main() -> None:
            stream = await provider.astream("m", REQ, timeouts)
            assert (await stream.__anext__()).content == "first"
            with pytest.raises(ProviderTimeoutError, match=r"stall|chunk|silen"):
                await stream.__anext__()
            await stream.aclose()

        asyncio.run(main())
    assert time.monotonic() - started < 2.5  # the stall (0.2 s), not the hang (3 s)


def test_a_sync_only_stream_on_the_async_path_is_read_on_a_worker() -> None:
    class SyncStreamer(Streamer):
        _astream = BaseChatModel._astream  # type: ignore[assignment]

    assert LangChainAdapter(SyncStreamer()).sync_only(True)
    provider = lc(SyncStreamer(hang=3.0))

    async def main() -> None:
        stream = await provider.astream("m", REQ, Timeouts(total=10, first_token=2, stall=0.2))
        assert (await stream.__anext__()).content == "first"
        with pytest.raises(ProviderTimeoutError):
            await stream.__anext__()
        await stream.aclose()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2.5


def test_cancelling_an_astream_midway_closes_the_foreign_generator() -> None:
    closed: list[str] = []
    llm = MeshChatModel.from_models({"one.a": Streamer(closed=closed)})

    async def main() -> None:
        got: list[str] = []

        async def consume() -> None:
            async for chunk in llm.astream("hi"):
                got.append(str(chunk.content))

        task = asyncio.create_task(consume())
        while len(got) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert closed == ["async"]
    llm.mesh.close()


# --- odd answers ----------------------------------------------------------------------------


def test_content_as_a_list_of_blocks_is_its_text() -> None:
    blocks = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]
    provider = lc(Chat(act=lambda m: AIMessage(content=[*blocks, {"type": "text", "text": "b"}])))
    assert provider.complete("m", REQ, ROOMY).response.content == "ab"


def test_empty_content_with_tool_calls_is_a_tool_call_answer() -> None:
    message = AIMessage(content="", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c1"}])
    reply = lc(Chat(act=lambda m: message)).complete("m", REQ, ROOMY).response
    assert reply.content is None and reply.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [("f", {"x": 1})]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tool_call_arguments_that_are_not_json_are_a_malformed_answer(mode: str) -> None:
    message = AIMessage(content="", tool_calls=[{"name": "f", "args": {"x": object()}, "id": "1"}])
    provider = lc(Chat(act=lambda m: message))
    with pytest.raises(MalformedResponseError, match="arguments are not JSON") as info:
        if mode == "sync":
            provider.complete("m", REQ, ROOMY)
        else:
            asyncio.run(provider.acomplete("m", REQ, ROOMY))
    assert info.value.provider_id == "p"


class _ToolStreamer(BaseChatModel):
    """Streams one tool-call fragment whose ``args`` is ``args`` (LangChain wants text)."""

    args: Any = None

    @property
    def _llm_type(self) -> str:
        return "tool-streamer"

    def _generate(self, messages: Any, stop: Any = None, **kw: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="x"))])

    def _stream(self, messages: Any, stop: Any = None, **kw: Any) -> Iterator[ChatGenerationChunk]:
        chunk = AIMessageChunk(content="")
        fragment = {"name": "f", "args": self.args, "id": 7, "index": "zero"}
        chunk.tool_call_chunks = [{**fragment, "type": "tool_call_chunk"}]  # type: ignore[list-item]
        yield ChatGenerationChunk(message=chunk)


def test_a_streamed_tool_call_with_odd_fields_is_text_or_malformed() -> None:
    chunks = list(lc(_ToolStreamer(args={"a": 1})).stream("m", REQ, ROOMY))
    delta = chunks[0].tool_call_deltas[0]
    assert (delta.index, delta.id, delta.name, json.loads(delta.arguments or "")) == (
        0,
        "7",
        "f",
        {"a": 1},
    )
    assert chunks[-1].finish_reason == "tool_calls"
    with pytest.raises(MalformedResponseError, match="not JSON"):
        list(lc(_ToolStreamer(args={"a": object()})).stream("m", REQ, ROOMY))


@pytest.mark.parametrize(
    "usage",
    [None, {"input_tokens": -5, "output_tokens": -1, "total_tokens": -6}],
    ids=["missing", "negative"],
)
def test_missing_or_negative_usage_is_estimated_not_trusted(usage: Any) -> None:
    llm = MeshChatModel.from_models(
        {"one.a": Chat(act=lambda m: AIMessage(content="hello there", usage_metadata=usage))}
    )
    msg = llm.invoke("hi")
    meta = msg.usage_metadata
    assert meta is not None and meta["input_tokens"] > 0 and meta["output_tokens"] > 0
    llm.mesh.close()


# --- odd exceptions -------------------------------------------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no")


def raising(exc: BaseException) -> Chat:
    def act(messages: Any) -> AIMessage:
        raise exc

    return Chat(act=act)


def test_an_exception_whose_str_raises_is_unclassified_by_name() -> None:
    with pytest.raises(ServerError, match=r"unclassified.*_Unprintable") as info:
        lc(raising(_Unprintable())).complete("m", REQ, ROOMY)
    assert info.value.details["unclassified"] is True


def test_a_one_megabyte_message_is_cut() -> None:
    with pytest.raises(ProviderError) as info:
        lc(raising(RuntimeError("x" * (1 << 20)))).complete("m", REQ, ROOMY)
    assert len(str(info.value)) < 2000 and "RuntimeError" in str(info.value)


def test_an_adapters_own_huge_message_is_cut_and_scrubbed() -> None:
    class Verbose(_Raising):
        def classify(self, exc: BaseException) -> ProviderError | None:
            return MalformedResponseError(f"{ODD_KEY} " + "y" * (1 << 20))

    with pytest.raises(MalformedResponseError) as info:
        ForeignProvider("p", Verbose(RuntimeError("x")), secrets=(ODD_KEY,)).complete(
            "m", REQ, ROOMY
        )
    assert len(str(info.value)) < 3000 and ODD_KEY not in str(info.value)


LEAKS = {
    "plain": f"invalid key {ODD_KEY}",
    "url-encoded": f"GET /v1?token={urllib.parse.quote(ODD_KEY, safe='')} failed",
    "json": json.dumps({"error": "bad", "sent": {"credential": ODD_KEY}}),
    "repr": repr({"credential": ODD_KEY}),
    "basic auth": "Authorization: Basic " + base64.b64encode(f"me:{ODD_KEY}".encode()).decode(),
    "key-shaped": f"Incorrect API key provided: {KEY}",
    "api_key=": "client(api_key='abcdefgh12345')",
    "x-api-key": "headers {'x-api-key': 'zyxwvut98765'}",
    "api-key query": "https://h.example/v1?api-key=qwertyuiop123&x=1",
}


@pytest.mark.parametrize("text", LEAKS.values(), ids=list(LEAKS))
@pytest.mark.parametrize("status", [None, 401], ids=["unclassified", "http"])
def test_no_key_in_any_form_reaches_a_message(text: str, status: int | None) -> None:
    exc = RuntimeError(text)
    if status is not None:
        exc.status_code = status  # type: ignore[attr-defined]
    provider = lc(raising(exc), secrets=(ODD_KEY,))
    with pytest.raises(ProviderError) as info:
        provider.complete("m", REQ, ROOMY)
    shown = [str(info.value), repr(info.value), *map(str, info.value.args)]
    cause = info.value.__cause__
    while cause is not None:  # what a logged traceback would print too
        shown.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    for secret in (
        ODD_KEY,
        urllib.parse.quote(ODD_KEY, safe=""),
        KEY,
        "abcdefgh12345",
        "zyxwvut98765",
        "qwertyuiop123",
        base64.b64encode(f"me:{ODD_KEY}".encode()).decode(),
    ):
        assert all(secret not in s for s in shown), (secret, shown)


class _Raising:
    """A ForeignAdapter raising ``exc`` from every call (no framework in between)."""

    name = "raw"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def invoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse:
        raise self.exc

    async def ainvoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse:
        raise self.exc

    def stream(self, model_name: str, request: CompletionRequest) -> Iterator[CompletionChunk]:
        yield CompletionChunk(content="x")
        raise self.exc

    async def astream(
        self, model_name: str, request: CompletionRequest
    ) -> AsyncIterator[CompletionChunk]:
        yield CompletionChunk(content="x")
        raise self.exc

    def classify(self, exc: BaseException) -> ProviderError | None:
        return None

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()], ids=lambda e: type(e).__name__
)
@pytest.mark.parametrize("call", ["complete", "acomplete", "stream", "astream"])
def test_interrupts_propagate_unclassified(exc: BaseException, call: str) -> None:
    provider = ForeignProvider("p", _Raising(exc))

    async def astream() -> None:
        stream = await provider.astream("m", REQ, ROOMY)
        async for _ in stream:
            pass

    with pytest.raises(type(exc)):
        if call == "complete":
            provider.complete("m", REQ, ROOMY)
        elif call == "acomplete":
            asyncio.run(provider.acomplete("m", REQ, ROOMY))
        elif call == "stream":
            for _ in provider.stream("m", REQ, ROOMY):
                pass
        else:
            asyncio.run(astream())


def test_a_keyboard_interrupt_goes_through_the_whole_mesh() -> None:
    llm = MeshChatModel.from_models({"one.a": raising(KeyboardInterrupt())})
    with pytest.raises(KeyboardInterrupt):
        llm.invoke("hi")
    llm.mesh.close()


# --- concurrency ----------------------------------------------------------------------------


def test_one_foreign_model_from_many_threads_and_tasks() -> None:
    llm = MeshChatModel.from_models({"one.a": Chat()})
    bad: list[Any] = []

    def work(i: int) -> None:
        for j in range(5):
            text = f"thread {i} call {j}"
            got = llm.invoke(text).content
            if got != f"echo: {text}":
                bad.append((text, got))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()

    async def task(i: int) -> None:
        text = f"task {i}"
        got = (await llm.ainvoke(text)).content
        if got != f"echo: {text}":
            bad.append((text, got))

    async def tasks() -> None:
        await asyncio.gather(*(task(i) for i in range(32)))

    asyncio.run(tasks())
    for t in threads:
        t.join(30)
    assert not bad and not any(t.is_alive() for t in threads)
    assert llm.mesh.stats()["models"]["one.a"]["requests"] == 16 * 5 + 32
    llm.mesh.close()


# --- from_models and configuration ----------------------------------------------------------


def test_from_models_with_shared_prefixes_names_providers_by_whole_id() -> None:
    llm = MeshChatModel.from_models({"openai.a": Chat(), "openai.b": Chat(), "other.c": Chat()})
    assert set(llm.mesh.providers) == {"openai.a", "openai.b", "other"}
    assert llm.invoke("x").content == "echo: x"
    llm.mesh.close()


@pytest.mark.parametrize(
    "models",
    [{}, {"a.x": "not a model"}, {"a.x": None}, {"": Chat()}, {"a.x": Chat(), "b.y": 3}],
    ids=["empty", "a string", "None", "empty id", "one not a model"],
)
def test_from_models_refuses_what_is_not_a_pool_of_models(models: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError, ConfigurationError)) as info:
        MeshChatModel.from_models(models)
    assert str(info.value)


@pytest.mark.parametrize(
    "models", [{}, {"a.x": "not an llm"}, {"a.x": None}], ids=["empty", "a string", "None"]
)
def test_llamaindex_from_models_refuses_the_same(models: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError, ConfigurationError)) as info:
        MeshLLM.from_models(models)
    assert str(info.value)


def test_secrets_nested_in_kwargs_never_show() -> None:
    data = {
        "providers": {
            "lc": {
                "type": "langchain",
                "class": "langchain_openai:ChatOpenAI",
                "kwargs": {
                    "model": "a",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": KEY,
                    "default_headers": {"x-api-key": ODD_KEY},
                    "temperature": "very hot",  # refused: the error must not show the keys
                },
            }
        },
        "models": {"lc.a": {"provider": "lc"}},
        "pools": {"chat": {"models": ["lc.a"]}},
    }
    loaded = load_config(data)
    shown = repr(loaded) + str(loaded.providers["lc"])
    shown += json.dumps(loaded.model_dump(mode="json"))
    from mesh_core import Mesh

    with pytest.raises(ConfigurationError) as info:
        Mesh.from_config(data)
    shown += str(info.value) + repr(info.value)
    assert KEY not in shown and ODD_KEY not in shown


# --- LlamaIndex: a sync-only LLM on the async path ------------------------------------------


class _HangingLLM(CustomLLM):
    """A LlamaIndex CustomLLM: sync code only (LlamaIndex's async methods call it on the
    event loop, blocking it)."""

    release: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="hanging")

    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        if self.release is not None:
            self.release.wait()
        return CompletionResponse(text="done")

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kw: Any
    ) -> CompletionResponseGen:
        yield CompletionResponse(text="done", delta="done")


def test_a_sync_only_llamaindex_llm_never_blocks_the_event_loop() -> None:
    release = threading.Event()
    provider = ForeignProvider("p", LlamaIndexAdapter(_HangingLLM(release=release)))
    assert provider.adapter.sync_only(False) and provider.adapter.sync_only(True)  # type: ignore[attr-defined]

    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        with pytest.raises(ProviderTimeoutError):
            await provider.acomplete("m", REQ, Timeouts(total=0.3))
        tick.cancel()
        assert ticks > 3  # the loop ran while the LLM hung

    try:
        asyncio.run(main())
    finally:
        release.set()
    answer = asyncio.run(provider.acomplete("m", REQ, ROOMY))
    assert answer.response.content == "done"
    _ = ChatMessage  # (the adapter converts the request to these)
