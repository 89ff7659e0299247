"""MeshChatModel behaves like LangChain's own models where issue 15 found it did not.

Per-call limits applied and never sent, streams that never garble an answer, copies
(pickle, cloudpickle, deepcopy, model_copy) that share the mesh, LangChain's typed
errors, the model profile, and what callbacks receive.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import subprocess
import sys
import time
from typing import Any

import cloudpickle
import pytest
import yaml
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelInvalidRequestError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate

from mesh_core import _errors as errors
from mesh_core._errors import StreamInterruptedError, UnknownPoolError
from mesh_core._mesh import InvalidRequestError
from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import faults
from modelmesh_langchain import MeshChatModel
from tests.conftest import config_for

SLOW = {"connect": "5s", "first_token": "10s", "stall": "10s", "total": "10s"}
CONTINUE = {"strategy": "priority-selection", "stream_recovery": "continue"}
LIMIT_KEYS = {"timeout", "request_timeout", "max_retries"}


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_shared_meshes()


@pytest.fixture
def cfg(servers) -> dict[str, Any]:
    return config_for(servers, pool={"strategy": "priority-selection"})


def slow_config(servers) -> dict[str, Any]:
    """Provider timeouts of 10 s: only a per-call timeout can make a hang short."""
    cfg = config_for(servers, pool={"strategy": "priority-selection"})
    for provider in cfg["providers"].values():
        provider["timeouts"] = dict(SLOW)
    return cfg


def sent_bodies(servers) -> list[dict[str, Any]]:
    return [r.body for s in servers for r in s.requests]


# --- bug 1: timeout and max_retries are applied, never sent -------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda cfg: MeshChatModel(pool="chat", config=cfg, timeout=0.5),
        lambda cfg: MeshChatModel(pool="chat", config=cfg, request_timeout=0.5),
        lambda cfg: MeshChatModel(pool="chat", config=cfg).bind(timeout=0.5),
    ],
    ids=["timeout", "request_timeout", "bind"],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_timeout_caps_each_attempt_and_is_not_sent(servers, make, mode):
    servers[0].set("m1", faults.silent())
    llm = make(slow_config(servers))
    start = time.monotonic()
    msg = llm.invoke("hi") if mode == "sync" else asyncio.run(llm.ainvoke("hi"))
    elapsed = time.monotonic() - start
    assert msg.response_metadata["model_name"] == "p2.m2"
    assert elapsed < 5.0  # 0.5 s attempts on m1, not 10 s ones
    for body in sent_bodies(servers):
        assert not LIMIT_KEYS & set(body), body


def test_a_streamed_call_takes_the_timeout_too(servers):
    servers[0].set("m1", faults.slow_first_token(8))
    llm = MeshChatModel(pool="chat", config=slow_config(servers), timeout=0.5, max_retries=0)
    start = time.monotonic()
    chunks = list(llm.stream("hi"))
    assert time.monotonic() - start < 4.0
    assert chunks[-1].response_metadata["model_name"] == "p2.m2"
    for body in sent_bodies(servers):
        assert not LIMIT_KEYS & set(body)


@pytest.mark.parametrize("how", ["field", "bind"])
def test_max_retries_zero_tries_a_failing_model_once(cfg, servers, how):
    servers[0].set("m1", faults.server_error(503))
    if how == "field":
        llm = MeshChatModel(pool="chat", config=cfg, max_retries=0)
    else:
        llm = MeshChatModel(pool="chat", config=cfg).bind(max_retries=0)
    assert llm.invoke("hi").response_metadata["model_name"] == "p2.m2"
    assert servers[0].count("m1") == 1  # the pool's retry.max_attempts is 2
    assert MeshChatModel(pool="chat", config=cfg).invoke("hi").content.startswith("Hello from m2")
    for body in sent_bodies(servers):
        assert not LIMIT_KEYS & set(body)


# --- bug 2: a restarted stream never garbles the answer ------------------------------------
@pytest.fixture
def recovering(servers) -> dict[str, Any]:
    """m1 cuts its stream after three chunks; m2 rejects prefill; m3 is healthy."""
    servers[0].set("m1", faults.cut(after=3))
    servers[1].set("m2", faults.ok(reject_prefill=True))
    return config_for(servers, pool=CONTINUE, n=3)


def test_streaming_invoke_raises_rather_than_joining_two_answers(recovering):
    llm = MeshChatModel(pool="chat", config=recovering, streaming=True)
    with pytest.raises(StreamInterruptedError) as ei:
        llm.invoke("hi")
    assert ei.value.partial_text == "Hello from m1."
    assert isinstance(ei.value, ModelConnectionError)  # and LangChain's type


def test_chain_stream_yields_only_a_prefix_then_raises(recovering):
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | MeshChatModel(
        pool="chat", config=recovering
    )
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as ei:
        for piece in (chain | StrOutputParser()).stream({"q": "hi"}):
            got.append(piece)
    assert "".join(got) == ei.value.partial_text == "Hello from m1."


def test_async_stream_and_aggregated_chunks(recovering):
    llm = MeshChatModel(pool="chat", config=recovering)

    async def run() -> tuple[list[str], BaseException | None]:
        got: list[str] = []
        try:
            async for chunk in llm.astream("hi"):
                got.append(chunk.content)
        except StreamInterruptedError as exc:
            return got, exc
        return got, None

    got, err = asyncio.run(run())
    assert err is not None and "".join(got) == err.partial_text == "Hello from m1."


def test_a_continuation_by_prefill_is_one_coherent_answer(servers):
    servers[0].set("m1", faults.cut(after=3))
    cfg = config_for(servers, pool=CONTINUE, n=3)
    llm = MeshChatModel(pool="chat", config=cfg, streaming=True)
    msg = llm.invoke("hi")
    assert msg.content == "Hello from m1. You said: hi"  # m1's start, m2's continuation
    assert msg.response_metadata["model_name"] == "p2.m2"
    chunks = list(MeshChatModel(pool="chat", config=cfg).stream("hi"))
    assert "".join(c.content for c in chunks) == "Hello from m1. You said: hi"


def test_a_restart_before_any_chunk_is_still_transparent(servers):
    servers[0].set("m1", faults.reset())
    cfg = config_for(servers, pool=CONTINUE, n=3)
    text = (MeshChatModel(pool="chat", config=cfg) | StrOutputParser()).invoke("hi")
    assert text == "Hello from m2. You said: hi"


# --- bug 3: pickle, cloudpickle, deepcopy -----------------------------------------------------
COPIES = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "cloudpickle": lambda m: cloudpickle.loads(cloudpickle.dumps(m)),
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_share_the_mesh_and_answer(cfg, servers, how, caplog):
    llm = MeshChatModel(pool="chat", config=cfg, temperature=0.2, model_kwargs={"user": "u"})
    with caplog.at_level(logging.WARNING):
        twin = COPIES[how](llm)
    assert not caplog.records  # nothing logged, least of all on the root logger
    assert twin.mesh is llm.mesh and twin.config == cfg
    assert (twin.pool, twin.temperature, twin.model_kwargs) == ("chat", 0.2, {"user": "u"})
    llm.mesh.deactivate("p1.m1")  # one state: the copy sees it
    assert twin.invoke("hi").response_metadata["model_name"] == "p2.m2"
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | llm | StrOutputParser()
    assert COPIES[how](chain).invoke({"q": "x"}) == "Hello from m2. You said: x"


def _load_in_a_new_process(data: bytes, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "import pickle, sys\n"
        "try:\n"
        "    llm = pickle.loads(sys.stdin.buffer.read())\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "    sys.exit(3)\n"
        "print(llm.invoke('hi').content)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        input=data,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MODELMESH_CONFIG"}
    return env | extra


def test_a_dict_with_references_travels_to_another_process(servers, monkeypatch):
    cfg = config_for(servers)
    cfg["providers"]["p1"]["api_key"] = "${MESH_TEST_KEY}"
    monkeypatch.setenv("MESH_TEST_KEY", "from-env-1")
    data = pickle.dumps(MeshChatModel(pool="chat", config=cfg))
    assert b"${MESH_TEST_KEY}" in data and b"from-env-1" not in data
    done = _load_in_a_new_process(data, _env(MESH_TEST_KEY="from-env-2"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.decode().strip() == "Hello from m1. You said: hi"
    assert servers[0].requests[-1].authorization == "Bearer from-env-2"


def test_a_literal_secret_never_travels(servers, tmp_path):
    cfg = config_for(servers)
    cfg["providers"]["p1"]["api_key"] = "sk-literal-secret-123"
    llm = MeshChatModel(pool="chat", config=cfg)
    data = pickle.dumps(llm)
    assert b"sk-literal-secret-123" not in data
    assert pickle.loads(data).config is cfg  # in this process: the same objects
    done = _load_in_a_new_process(data, _env())
    assert done.returncode == 3
    assert b"ConfigurationError" in done.stdout and b"literal secrets" in done.stdout
    path = tmp_path / "mesh.yaml"  # elsewhere: that process's own configuration
    path.write_text(yaml.safe_dump(config_for(servers)))
    done = _load_in_a_new_process(data, _env(MODELMESH_CONFIG=str(path)))
    assert done.returncode == 0 and done.stdout.decode().startswith("Hello from m1")


def test_a_config_path_travels(servers, tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(config_for(servers)))
    data = cloudpickle.dumps(MeshChatModel(pool="chat", config=str(path)))
    done = _load_in_a_new_process(data, _env())
    assert done.returncode == 0, done.stdout + done.stderr


# --- bug 4: model_copy ------------------------------------------------------------------------
def test_model_copy_with_a_new_config_routes_through_its_mesh(cfg, servers):
    llm = MeshChatModel(pool="chat", config=cfg)
    other = config_for(servers)  # a pool of p2.m2 alone
    other["models"] = {"p2.m2": {"provider": "p2"}}
    other["providers"] = {"p2": other["providers"]["p2"]}
    twin = llm.model_copy(update={"config": other})
    assert twin.mesh is not llm.mesh
    assert twin.invoke("hi").response_metadata["model_name"] == "p2.m2"
    assert llm.invoke("hi").response_metadata["model_name"] == "p1.m1"


def test_model_copy_validates_the_pool_and_follows_the_pin(cfg):
    llm = MeshChatModel(pool="chat", config=cfg)
    with pytest.raises(UnknownPoolError, match="did you mean 'chat'"):
        llm.model_copy(update={"pool": "chta"})
    pinned = llm.model_copy(update={"model_name": "p2.m2"})
    assert pinned.model == "p2.m2"
    assert pinned.invoke("hi").response_metadata["model_name"] == "p2.m2"
    assert llm.model_copy(update={"temperature": 1}).mesh is llm.mesh


# --- LangChain's typed errors ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "mesh_type", "lc_type"),
    [
        (faults.context_length_exceeded(), errors.ContextWindowExceededError, ContextOverflowError),
        (faults.rate_limited(), errors.AllProvidersExhaustedError, ModelRateLimitError),
        (faults.quota_exhausted(), errors.AllProvidersExhaustedError, ModelRateLimitError),
        (faults.server_error(503), errors.AllProvidersExhaustedError, ModelAPIError),
        (faults.unauthorized(401), errors.AllProvidersExhaustedError, ModelAuthenticationError),
        (faults.content_policy(), errors.ContentPolicyError, ModelInvalidRequestError),
        (faults.error(400, "bad"), errors.BadRequestError, ModelInvalidRequestError),
    ],
    ids=["context", "rate", "quota", "server", "auth", "policy", "bad-request"],
)
@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke"])
def test_mesh_errors_are_langchain_typed_errors(cfg, servers, fault, mesh_type, lc_type, mode):
    for i, server in enumerate(servers[:2]):
        server.set(f"m{i + 1}", fault)
    llm = MeshChatModel(pool="chat", config=cfg)
    with pytest.raises(lc_type) as ei:
        if mode == "invoke":
            llm.invoke("hi")
        elif mode == "stream":
            list(llm.stream("hi"))
        else:
            asyncio.run(llm.ainvoke("hi"))
    err = ei.value
    assert isinstance(err, mesh_type)  # `except mesh_core._errors.X` still works
    assert isinstance(err, errors.ModelMeshError)
    assert pickle.loads(pickle.dumps(err)).args == err.args


def test_typed_errors_keep_their_attributes(cfg, servers):
    servers[0].set("m1", faults.unauthorized(403))
    llm = MeshChatModel(pool="chat", config=cfg, model="p1.m1")
    with pytest.raises(ModelPermissionDeniedError) as ei:
        llm.invoke("hi", model="p1.m1")
    assert isinstance(ei.value, errors.ModelMeshError)
    servers[0].set("m1", faults.silent())
    pinned = MeshChatModel(pool="chat", config=slow_config(servers), model="p1.m1", timeout=0.3)
    with pytest.raises(ModelTimeoutError):
        pinned.invoke("hi")
    with pytest.raises(ModelInvalidRequestError) as bad:
        llm.bind(tools=[{"type": "function", "function": {"name": ""}}]).invoke("hi")
    assert isinstance(bad.value, InvalidRequestError) and isinstance(bad.value, ValueError)


def test_every_model_in_standby_is_a_retryable_api_error(cfg):
    llm = MeshChatModel(pool="chat", config=cfg)
    llm.mesh.deactivate("p1.m1")
    llm.mesh.deactivate("p2.m2")
    with pytest.raises(ModelAPIError) as ei:
        llm.invoke("hi")
    assert isinstance(ei.value, errors.NoAvailableModelError) and ei.value.is_retryable


# --- the model profile ----------------------------------------------------------------------
def test_the_profile_describes_the_pool(servers):
    cfg = config_for(
        servers,
        models={
            "p1.m1": {"context_window": 16000, "max_output_tokens": 4000},
            "p2.m2": {
                "context_window": 8000,
                "max_output_tokens": 2000,
                "features": {"vision": True, "tool_calling": False},
            },
        },
    )
    profile = MeshChatModel(pool="chat", config=cfg).profile
    assert profile["max_input_tokens"] == 8000 and profile["max_output_tokens"] == 2000
    assert profile["tool_calling"] and profile["structured_output"] and profile["image_inputs"]
    pinned = MeshChatModel(pool="chat", config=cfg, model="p1.m1").profile
    assert pinned["max_input_tokens"] == 16000 and not pinned["image_inputs"]
    assert pinned["tool_calling"]
    llm = MeshChatModel(pool="chat", config=cfg)
    assert llm.model_copy(update={"model": "p2.m2"}).profile["tool_calling"] is False
    assert MeshChatModel(pool="chat", config=cfg, profile={"max_input_tokens": 5}).profile == {
        "max_input_tokens": 5
    }


def test_summarization_middleware_takes_fractional_triggers(servers):
    from langchain.agents import create_agent
    from langchain.agents.middleware import SummarizationMiddleware

    cfg = config_for(servers, models={"p1.m1": {"context_window": 100}})
    llm = MeshChatModel(pool="chat", config=cfg)
    middleware = SummarizationMiddleware(model=llm, trigger=("fraction", 0.5), keep=("messages", 2))
    agent = create_agent(llm, middleware=[middleware])
    long = "word " * 80  # past half of a 100-token window: the history gets summarized
    out = agent.invoke({"messages": [("user", long), ("assistant", "ok"), ("user", "and now?")]})
    assert out["messages"][-1].content.startswith("Hello from")
    sent = [r.body for s in servers for r in s.requests]
    assert any("summar" in str(b["messages"]).lower() for b in sent)


# --- callbacks: on_llm_end and invocation_params --------------------------------------------
class Record(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ends: list[LLMResult] = []
        self.params: list[dict[str, Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.params.append(kwargs["invocation_params"])

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.ends.append(response)


@pytest.mark.parametrize("how", ["invoke", "stream", "streaming-invoke", "astream"])
def test_on_llm_end_says_who_answered_and_the_usage(cfg, servers, how):
    servers[0].set("m1", faults.server_error(503))
    record = Record()
    config = {"callbacks": [record]}
    llm = MeshChatModel(pool="chat", config=cfg, streaming=how == "streaming-invoke")
    if how == "stream":
        list(llm.stream("hi", config=config))
    elif how == "astream":

        async def run() -> None:
            async for _ in llm.astream("hi", config=config):
                pass

        asyncio.run(run())
    else:
        llm.invoke("hi", config=config)
    (end,) = record.ends
    info = end.generations[0][0].generation_info or {}
    assert info["model_name"] == "p2.m2" and info["finish_reason"] == "stop"
    assert info["token_usage"]["total_tokens"] > 0
    if end.llm_output:  # LangChain passes none for streams
        assert end.llm_output["model_name"] == "p2.m2"
        assert end.llm_output["token_usage"]["total_tokens"] > 0
    assert how != "invoke" or end.llm_output


def test_invocation_params_name_the_pool_and_the_pinned_model(cfg):
    record = Record()
    MeshChatModel(pool="chat", config=cfg, model="p2.m2").invoke(
        "hi", config={"callbacks": [record]}
    )
    MeshChatModel(pool="chat", config=cfg).invoke(
        "hi", model="p1.m1", config={"callbacks": [record]}
    )
    assert record.params[0]["pool"] == "chat" and record.params[0]["model"] == "p2.m2"
    assert record.params[1]["pool"] == "chat" and record.params[1]["model"] == "p1.m1"
