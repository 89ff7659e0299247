"""What the mesh does with each SDK's errors raised by a foreign member: a small chat model
raising the real error types (built offline: see tests/test_foreign_errors.py) fails over,
retries, goes to standby or raises, as the error's kind says."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from mesh_core._errors import CALLER_KINDS, ErrorKind, ProviderError
from modelmesh_langchain import MeshChatModel
from tests.test_foreign_errors import CASES, _openai


class Raising(BaseChatModel):
    """Raises ``errors`` one per call (then answers); streams a word, then ``mid_stream``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    errors: list[Any] = Field(default_factory=list)
    mid_stream: Any = None
    answer: str = "fine"
    calls: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "raising"

    def _next_error(self) -> None:
        self.calls.append(1)
        if self.errors:
            raise self.errors.pop(0)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self._next_error()
        usage = {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}
        message = AIMessage(content=self.answer, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        self._next_error()
        yield ChatGenerationChunk(message=AIMessageChunk(content=self.answer))
        if self.mid_stream is not None:
            raise self.mid_stream
        yield ChatGenerationChunk(message=AIMessageChunk(content=" end"))


def mesh_of(first: Raising, second: Raising, max_attempts: int = 1) -> MeshChatModel:
    return MeshChatModel.from_models(
        {"one.x": first, "two.y": second},
        config={"pools": {"default": {"retry": {"max_attempts": max_attempts}}}},
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("exc", "kind", "status"), [c[1:4] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_error_kind_does_what_it_says(
    exc: BaseException, kind: ErrorKind, status: int | None, mode: str
) -> None:
    first, second = Raising(errors=[exc]), Raising(answer="from y")
    llm = mesh_of(first, second)

    def ask() -> Any:
        return llm.invoke("x") if mode == "sync" else asyncio.run(llm.ainvoke("x"))

    if kind in CALLER_KINDS:  # the caller's doing: raised at once, no other model asked
        with pytest.raises(ProviderError) as info:
            ask()
        assert info.value.kind is kind and info.value.provider_id == "one"
        assert info.value.status_code == status
        assert second.calls == []
        return
    msg = ask()
    assert msg.content == "from y"
    outcome = msg.response_metadata["mesh"]["attempts"][0]
    assert (outcome["model_id"], outcome["outcome"]) == ("one.x", kind.value)
    assert outcome["status_code"] == status
    status = llm.mesh.stats()["models"]["one.x"]["status"]
    shut_out = kind in (ErrorKind.AUTHENTICATION, ErrorKind.QUOTA_EXHAUSTED)  # until recovery
    assert status == ("standby" if shut_out else "active")


def test_retry_after_is_honoured_on_the_same_model() -> None:
    limited = _openai(openai.RateLimitError, 429, None, **{"retry-after": "0.01"})
    first, second = Raising(errors=[limited], answer="from x"), Raising(answer="from y")
    msg = mesh_of(first, second, max_attempts=2).invoke("x")
    assert msg.content == "from x" and len(first.calls) == 2 and second.calls == []


def test_an_unclassified_error_fails_over_and_says_so() -> None:
    first, second = Raising(errors=[KeyError("my_tool_arg")]), Raising(answer="from y")
    msg = mesh_of(first, second).invoke("x")
    error = msg.response_metadata["mesh"]["attempts"][0]["error"]
    assert "unclassified" in error and "KeyError" in error and "my_tool_arg" in error
    assert msg.content == "from y"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_errors_before_the_first_token_fail_over(mode: str) -> None:
    exc = _openai(openai.InternalServerError, 503)
    llm = mesh_of(Raising(errors=[exc]), Raising(answer="from y"))

    async def collect() -> list[Any]:
        return [c async for c in llm.astream("x")]

    chunks = list(llm.stream("x")) if mode == "sync" else asyncio.run(collect())
    assert "".join(str(c.content) for c in chunks) == "from y end"
    assert chunks[-1].response_metadata["mesh"]["attempts"][0]["outcome"] == "server_error"


def test_a_stream_broken_by_an_sdk_error_continues_on_the_next_model() -> None:
    broken = Raising(answer="part", mid_stream=openai.APIConnectionError(request=None))  # type: ignore[arg-type]
    llm = mesh_of(broken, Raising(answer="rest"))
    chunks = list(llm.stream("x"))
    assert "".join(str(c.content) for c in chunks) == "partrest end"
    marks = [c.response_metadata.get("mesh", {}).get("continued_from") for c in chunks]
    assert "one.x" in marks
