"""A healthy stream is never cut (mesh_core.providers._streams, .watchdog, .base.StreamTimer).

Each read of a stream is held to its deadline by the read itself (a blocking read's capped
timeout, sync; a ReadDeadline, async), so no checker on another thread can fail a read that
has already returned, nor shut down a socket the pool has since handed to another request.
What a deadline counts is the provider's time: from when the request was sent, not from
before the pools were built. And a timeout is named after the deadline the read was armed
with. The stress test runs hundreds of healthy streams, sync and async, concurrently, beside
plain calls sharing their connections, with two CPU-burning processes running: not one may
be cut. These tests assert what happened (errors, chunks, names), never a wall-clock margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mesh_core import Mesh
from mesh_core._types import CompletionChunk, CompletionRequest
from mesh_core.providers import OpenAICompatibleProvider, Timeouts, _transport as compat
from mesh_core.providers._base import StreamTimer
from mesh_core.testing import FaultServer, faults
from tests.conftest import MODES

MESSAGES = [{"role": "user", "content": "hi"}]
WORDS = " ".join(f"w{i}" for i in range(40))


def _request() -> CompletionRequest:
    return CompletionRequest(model="m1", messages=list(MESSAGES))


def _text(chunks: list[CompletionChunk]) -> str:
    return "".join(c.content or "" for c in chunks)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


# --- a timeout is named after the deadline that was armed ----------------------------------
def test_a_first_token_expiry_is_never_reported_as_a_stall():
    timer = StreamTimer(Timeouts(first_token=1.0, stall=5.0, total=60.0), start=100.0)
    armed = timer.deadline(100.2)  # the read waiting for the first token
    assert armed == 101.0
    timer.saw(CompletionChunk(content="late"))  # the token that came with the expiry
    assert "first token" in timer.expired(armed).message
    stall = timer.deadline(101.5)
    assert "stalled for 5s" in timer.expired(stall).message
    total = StreamTimer(Timeouts(first_token=10.0, total=2.0), start=0.0)
    assert "total" in total.expired(total.deadline(0.0)).message
    assert "first token" in StreamTimer.opening_expired(Timeouts(first_token=1.0)).message
    assert "total" in StreamTimer.opening_expired(Timeouts(first_token=5.0, total=1.0)).message


# --- bytes that arrived in time are read, even when the reader comes back late -------------
@MODES
def test_a_read_after_the_deadline_still_takes_what_arrived_in_time(server, mode):
    """The consumer takes the role chunk, then leaves for longer than the first-token
    timeout; the token arrived long before. Reading it then is no timeout: what counts is
    when the provider sent it, not when this process got round to reading it."""
    server.set("m1", faults.reply("late reader", first_token_delay=0.05))
    provider = OpenAICompatibleProvider("p1", base_url=server.base_url)
    timeouts = Timeouts(first_token=1.0, stall=30.0, total=30.0)
    away = 2.0  # twice the first-token timeout

    def run_sync() -> list[CompletionChunk]:
        stream = provider.stream("m1", _request(), timeouts)
        first = next(stream)
        assert not first.has_token  # the role chunk: the first-token deadline is still armed
        time.sleep(away)
        return [first, *stream]

    async def run_async() -> list[CompletionChunk]:
        stream = await provider.astream("m1", _request(), timeouts)
        first = await anext(stream)
        assert not first.has_token
        await asyncio.sleep(away)
        rest = [c async for c in stream]
        await provider.aclose()
        return [first, *rest]

    chunks = run_sync() if mode == "sync" else asyncio.run(run_async())
    assert _text(chunks) == "late reader"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    provider.close()


def test_a_read_that_returned_in_time_is_not_failed_by_a_slow_reader(server, monkeypatch):
    """The race of the watchdog thread this replaced: a read returns the role chunk at once,
    then the reading thread is held up (a busy machine, the GIL) past the first-token
    deadline before it can say the read is over; the token came in the meantime, in time.
    Nothing may fail that stream: no check may act on a read that has already returned (the
    watchdog shut the socket down, and the words still to come were lost)."""
    text = "held up a while but in time all along"
    server.set("m1", faults.reply(text, first_token_delay=0.3, chunk_delay=0.25))
    real = httpx.Response.iter_raw
    held = []

    def iter_raw(self, chunk_size=None):
        for raw in real(self, chunk_size):
            yield raw
            if not held:  # just after the first read returned, before the stream resumes
                held.append(raw)
                time.sleep(2.0)  # twice the first-token timeout

    monkeypatch.setattr(httpx.Response, "iter_raw", iter_raw)
    provider = OpenAICompatibleProvider("p1", base_url=server.base_url)
    chunks = list(provider.stream("m1", _request(), Timeouts(first_token=1.0, stall=30.0)))
    assert held and _text(chunks) == text
    provider.close()


# --- the deadlines count from the request, not from the pools ------------------------------
@MODES
def test_stream_deadlines_start_when_the_request_is_sent(server, monkeypatch, mode):
    """Building the pools takes longer than the first-token timeout (slowed down here, as a
    CA bundle on a busy machine can be): the stream still gets its whole budget."""
    build = 1.5
    real = compat.Shards

    class SlowShards(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kw) -> None:
            time.sleep(build)
            super().__init__(*args, **kw)

    monkeypatch.setattr(compat, "Shards", SlowShards)
    provider = OpenAICompatibleProvider("p1", base_url=server.base_url)
    timeouts = Timeouts(first_token=1.0, stall=30.0, total=30.0)
    server.set("m1", faults.reply("on time"))

    async def run_async() -> list[CompletionChunk]:
        chunks = [c async for c in await provider.astream("m1", _request(), timeouts)]
        await provider.aclose()
        return chunks

    t0 = time.monotonic()
    if mode == "sync":
        chunks = list(provider.stream("m1", _request(), timeouts))
    else:
        chunks = asyncio.run(run_async())
    assert time.monotonic() - t0 > timeouts.first_token  # the pools did eat the budget...
    assert _text(chunks) == "on time"  # ...and the stream was not charged for it
    provider.close()


# --- hundreds of healthy streams, sync and async, under CPU load ---------------------------
@contextlib.contextmanager
def fault_server_process() -> Iterator[str]:
    """The fault server in its own process (its timing is not this process's GIL's, nor are
    its sockets counted with this process's): yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh_core.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "fault server listening at http://127.0.0.1:PORT/v1"
        assert "listening at http://" in line, line
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _cpu_hogs(n: int = 2) -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


SYNC_THREADS, SYNC_EACH = 8, 25
ASYNC_TASKS, ASYNC_EACH = 25, 8


def test_hundreds_of_healthy_streams_under_cpu_load_are_never_cut():
    """200 sync streams on 8 threads and 200 async streams on 25 tasks, at once, with plain
    calls reusing the same connections in between, while two processes burn the CPUs.

    ``first_token`` is tight next to what a local server takes (milliseconds) but generous
    next to a loaded machine's scheduling delays; one attempt per call, so any cut, false
    stall or lost connection is seen as an error, not hidden by a retry."""
    with fault_server_process() as base_url, _cpu_hogs():
        cfg = {
            "providers": {
                "p1": {
                    "base_url": base_url,
                    "timeouts": {
                        "connect": "10s",
                        "first_token": "2s",
                        "stall": "2s",
                        "total": "60s",
                    },
                }
            },
            "models": {"p1.m1": {"provider": "p1"}},
            "pools": {"chat": {"capability": "chat-completion", "retry": {"max_attempts": 1}}},
        }
        mesh = Mesh.from_config(cfg)
        errors: list[str] = []
        counts = {"sync": 0, "async": 0, "plain": 0}
        lock = threading.Lock()

        def record(kind: str, chunks: list, prompt: str) -> None:
            text = "".join(c.content for c in chunks)
            with lock:
                if prompt not in text or chunks[-1].finish_reason != "stop":
                    errors.append(f"{kind}: incomplete answer {text!r}")
                else:
                    counts[kind] += 1

        def sync_worker(t: int) -> None:
            for i in range(SYNC_EACH):
                prompt = f"s{t}-{i} {WORDS}"
                try:
                    record("sync", list(mesh.stream("chat", prompt)), prompt)
                    if i % 5 == 0:  # a plain call on a connection a stream just gave back
                        assert mesh.complete("chat", "plain").model == "p1.m1"
                        with lock:
                            counts["plain"] += 1
                except Exception as exc:
                    with lock:
                        errors.append(f"sync: {type(exc).__name__}: {exc}")

        async def async_main() -> None:
            async def task(t: int) -> None:
                for i in range(ASYNC_EACH):
                    prompt = f"a{t}-{i} {WORDS}"
                    try:
                        record("async", [c async for c in mesh.astream("chat", prompt)], prompt)
                    except Exception as exc:
                        with lock:
                            errors.append(f"async: {type(exc).__name__}: {exc}")

            await asyncio.gather(*(task(t) for t in range(ASYNC_TASKS)))

        threads = [threading.Thread(target=sync_worker, args=(t,)) for t in range(SYNC_THREADS)]
        threads.append(threading.Thread(target=lambda: asyncio.run(async_main())))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mesh.close()
    assert errors == [], f"{len(errors)} healthy calls failed, first: {errors[:3]}"
    assert counts == {
        "sync": SYNC_THREADS * SYNC_EACH,
        "async": ASYNC_TASKS * ASYNC_EACH,
        "plain": SYNC_THREADS * ((SYNC_EACH + 4) // 5),
    }
