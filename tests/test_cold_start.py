"""Cold start and new event loops cost what bare httpx costs, and leave nothing behind
(mesh_core.providers._openai_compat).

The TLS context (loading the CA bundle: most of what building a transport costs) is built
once per process, and never for a plain-HTTP provider, so neither a first call nor the first
call in a new event loop pays for it again. An event loop's pools close when the loop shuts
down, when a closed loop is found at the next new loop, and in close(): after many
``asyncio.run``, the process's sockets are back to where they were, with no
ResourceWarning. These tests count (CA bundle loads, file descriptors, warnings); the
timings are bench/cold_start.py's.
"""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from mesh_core import Mesh
from mesh_core.providers import OpenAICompatibleProvider, _pools as compat
from tests.test_stream_stress import fault_server_process

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc"
)

LOOPS, CONCURRENCY = 30, 10
SLACK = 3
"""Descriptors a test may find open beyond its baseline (a lazily opened file elsewhere)."""


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A fault server in another process: its sockets are not counted with ours."""
    with fault_server_process() as url:
        yield url


def config(base_url: str) -> dict[str, Any]:
    return {
        "providers": {"p1": {"base_url": base_url}},
        "models": {"p1.m1": {"provider": "p1"}},
        "pools": {"chat": {"capability": "chat-completion"}},
    }


@pytest.fixture
def ca_loads(monkeypatch) -> list[object]:
    """Every CA bundle loaded from now on (with the process's shared contexts forgotten)."""
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def load_verify_locations(self, *args, **kw):
        loads.append(args or kw)
        return real(self, *args, **kw)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", load_verify_locations)
    monkeypatch.setattr(compat, "_TLS", {})
    return loads


async def _calls(mesh: Mesh, n: int = CONCURRENCY) -> None:
    results = await asyncio.gather(*(mesh.acomplete("chat", f"hi {i}") for i in range(n)))
    assert {r.model for r in results} == {"p1.m1"}


# --- the TLS context ------------------------------------------------------------------------
def test_a_plain_http_provider_never_loads_a_ca_bundle(base_url, ca_loads):
    with Mesh.from_config(config(base_url)) as mesh:
        mesh.complete("chat", "hi")
        list(mesh.stream("chat", "hi"))
        for _ in range(3):
            asyncio.run(_calls(mesh, 2))
    assert ca_loads == []


def test_https_providers_load_the_ca_bundle_once_for_every_transport_and_loop(ca_loads):
    """Two providers, their sync pools and the pools of three event loops: one load."""
    providers = [
        OpenAICompatibleProvider(f"p{i}", base_url=f"https://api{i}.example.com/v1")
        for i in range(2)
    ]
    contexts = set()
    for provider in providers:
        contexts |= {id(t._pool._ssl_context) for t in provider._sync_shards().transports}

    async def loop_pools(provider: OpenAICompatibleProvider) -> set[int]:
        return {id(t._pool._ssl_context) for t in provider._async_shards().transports}

    for _ in range(3):
        for provider in providers:
            contexts |= asyncio.run(loop_pools(provider))
    assert len(ca_loads) == 1
    assert len(contexts) == 1  # one context, shared
    unverified = OpenAICompatibleProvider("p9", base_url="https://x.example", verify_tls=False)
    unverified._sync_shards()
    assert len(ca_loads) == 1  # verify_tls: false needs no CA bundle
    for provider in [*providers, unverified]:
        provider.close()


def test_an_https_proxy_gets_the_shared_context_too(ca_loads):
    """httpcore would otherwise load a CA bundle for each connection to the proxy."""
    provider = OpenAICompatibleProvider(
        "p1", base_url="http://10.0.0.1/v1", proxy="https://proxy.example:8443"
    )
    pools = [t._pool for t in provider._sync_shards().transports]
    assert len(ca_loads) == 1
    assert len({id(p._proxy_ssl_context) for p in pools}) == 1
    provider.close()


# --- every event loop's pools close ----------------------------------------------------------
def test_many_event_loops_leave_no_socket_open_and_no_warning(base_url):
    """30 asyncio.run of 10 concurrent calls: each loop's sockets close with the loop (the
    issue: 600 left open after mesh.close(), and 'unclosed transport' warnings)."""
    mesh = Mesh.from_config(config(base_url))
    asyncio.run(_calls(mesh))  # anything a first call opens for good (not sockets)
    baseline = open_fds()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(LOOPS):
            asyncio.run(_calls(mesh))
            assert mesh.providers["p1"]._async == {}  # closed with its loop
        after_loops = open_fds()
        mesh.close()
        after_close = open_fds()
    assert after_loops <= baseline + SLACK, (baseline, after_loops)
    assert after_close <= baseline + SLACK, (baseline, after_close)
    assert [str(w.message) for w in seen if w.category is ResourceWarning] == []


def test_loops_closed_without_shutting_down_are_cleaned_up(base_url):
    """A loop closed by hand (no shutdown_asyncgens): its sockets close at the next new loop,
    or in mesh.close(), without a warning."""
    mesh = Mesh.from_config(config(base_url))
    asyncio.run(_calls(mesh))
    baseline = open_fds()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(5):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(_calls(mesh))
            loop.close()
        asyncio.run(_calls(mesh))  # a new loop: the closed ones' sockets go
        after_new_loop = open_fds()
        loop = asyncio.new_event_loop()
        loop.run_until_complete(_calls(mesh))
        loop.close()
        mesh.close()  # and close() takes care of the last one
        after_close = open_fds()
        del loop
    assert after_new_loop <= baseline + SLACK, (baseline, after_new_loop)
    assert after_close <= baseline + SLACK, (baseline, after_close)
    assert [str(w.message) for w in seen if w.category is ResourceWarning] == []


def test_close_reaches_the_pools_of_a_loop_running_in_another_thread(base_url):
    mesh = Mesh.from_config(config(base_url))
    asyncio.run(_calls(mesh))
    baseline = open_fds()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(_calls(mesh), loop).result(timeout=30)
        assert open_fds() > baseline  # that loop's connections are kept alive...
        mesh.close()
        # ...until close() asks the loop to drop them: a round trip through it is enough.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout=30)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout=30)
        assert open_fds() <= baseline + SLACK
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def test_aclose_closes_this_loop_and_every_other(base_url):
    mesh = Mesh.from_config(config(base_url))
    asyncio.run(_calls(mesh))
    baseline = open_fds()
    idle = asyncio.new_event_loop()  # open, not running: its pools close at once
    idle.run_until_complete(_calls(mesh))

    async def main() -> None:
        await _calls(mesh)
        await mesh.aclose()

    asyncio.run(main())
    assert open_fds() <= baseline + SLACK
    idle.close()


def test_langchain_abatch_under_asyncio_run_warns_of_nothing(base_url):
    pytest.importorskip("langchain_core")
    from modelmesh_langchain import MeshChatModel

    llm = MeshChatModel(pool="chat", config=config(base_url))
    asyncio.run(llm.abatch(["hi"] * 3))
    baseline = open_fds()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(5):
            answers = asyncio.run(llm.abatch(["hi"] * CONCURRENCY))
            assert all("Hello from m1" in a.content for a in answers)
        after = open_fds()
    assert [str(w.message) for w in seen if w.category is ResourceWarning] == []
    assert after <= baseline + SLACK
    llm.mesh.close()
