"""The async transport (mesh_core/providers/_h1*.py) against raw hostile servers.

Each server here is a few lines of socket code on 127.0.0.1 that breaks HTTP/1.1 one way:
malformed heads, conflicting framing, interim-reply floods, trickles, servers that close,
half-close, answer before reading, or never read. The rule under test: the answer, or a
classified :class:`ProviderError` within the attempt's deadline; never a raw exception, a
hang, a leaked socket (ResourceWarning) or a pool that keeps a slot. Cancellation at each
await point of an exchange leaves the pool empty and the next call working.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mesh_core._errors import ErrorKind, ProviderError
from mesh_core._types import CompletionRequest
from mesh_core.providers import OpenAICompatibleProvider, Timeouts

TIMEOUTS = Timeouts(connect=2, first_token=3, stall=3, total=3)
REQUEST = CompletionRequest(model="chat", messages=[{"role": "user", "content": "hi"}])
REPLY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
    }
).encode()
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(REPLY),
    REPLY,
)

Handler = Callable[[socket.socket], None]


class RawServer:
    """A listening socket on 127.0.0.1; each accepted connection runs ``handler`` in a thread."""

    def __init__(self, handler: Handler, rcvbuf: int | None = None) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler, **kw: Any) -> RawServer:
        server = RawServer(handler, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def read_request(conn: socket.socket) -> bytes:
    """One request (head and body) off ``conn``; b"" if the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = conn.recv(65536)
        if not got:
            return b""
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        got = conn.recv(65536)
        if not got:
            return b""
        body += got
    return head


def reply_once(reply: bytes, close: bool = True) -> Handler:
    def handler(conn: socket.socket) -> None:
        if read_request(conn):
            conn.sendall(reply)
            if close:
                conn.shutdown(socket.SHUT_WR)
                time.sleep(0.05)
            else:
                time.sleep(1)

    return handler


def keep_alive(reply: bytes) -> Handler:
    def handler(conn: socket.socket) -> None:
        while read_request(conn):
            conn.sendall(reply)

    return handler


def provider(url: str, **kw: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("p", base_url=url, **kw)


def pools(p: OpenAICompatibleProvider) -> list[Any]:
    return [t._pool for t in p._async_shards().transports]


def assert_pool_empty(p: OpenAICompatibleProvider) -> None:
    for pool in pools(p):
        assert pool._count == len(pool.connections) == 0 and not pool._waiters, (
            pool._count,
            pool.connections,
        )
    assert p._async_shards().load == [0] * len(p._async_shards().load)


def run(coro_fn: Callable[[], Any]) -> Any:
    """``asyncio.run`` with ResourceWarnings and unhandled loop errors as failures."""
    errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        return await coro_fn()

    # Garbage of earlier tests (another library's unclosed client) is collected first, outside
    # the filter: only what this call leaves behind may fail it.
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        result = asyncio.run(main())
        gc.collect()
    assert not errors, errors
    return result


def call(url: str, timeouts: Timeouts = TIMEOUTS) -> Any:
    """One ``acomplete`` on a fresh provider, closed after; the reply or the ProviderError."""

    async def go() -> Any:
        p = provider(url)
        try:
            return await p.acomplete("m1", REQUEST, timeouts)
        except ProviderError as err:
            assert_pool_empty(p)
            return err
        finally:
            await p.aclose()

    return run(go)


def assert_classified(result: Any, kind: ErrorKind | None = None) -> ProviderError:
    assert isinstance(result, ProviderError), result
    if kind is not None:
        assert result.kind is kind, (result.kind, result.message)
    return result


# --- malformed heads and framing -------------------------------------------------------------
BAD_REPLIES = {
    "garbage status line": b"HTTP/1.1 OK\r\n\r\n",
    "not http": b"SSH-2.0-OpenSSH_9.0\r\n",
    "status out of range": b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
    "NUL in a header value": b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 0\r\n\r\n",
    "CR in a header value": b"HTTP/1.1 200 OK\r\nx-a: a\rb\r\ncontent-length: 0\r\n\r\n",
    "space before the colon": b"HTTP/1.1 200 OK\r\nx-a : b\r\ncontent-length: 0\r\n\r\n",
    "conflicting content-length": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"
    ),
    "content-length and chunked": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    ),
    "negative content-length": b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    "invalid chunk size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    "chunk size overflow": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffffff\r\n"
    ),
    "short body then close": b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{}",
    "chunked cut short": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
    "closed before a reply": b"",
    "head cut short": b"HTTP/1.1 200 OK\r\ncontent-le",
    # llhttp refuses even identical duplicates (h11 took them): an error, not a wrong answer
    "identical duplicate content-length": (
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-length: %d\r\n\r\n%s"
        % (len(REPLY), len(REPLY), REPLY)
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_REPLIES))
def test_a_malformed_reply_is_a_classified_error(serve, name):
    server = serve(reply_once(BAD_REPLIES[name]))
    err = assert_classified(call(server.url))
    assert err.kind in (ErrorKind.CONNECTION, ErrorKind.MALFORMED_RESPONSE), err


GOOD_REPLIES = {
    "chunked with extensions and trailers": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x;name=value;x\r\n%s\r\n" % (len(REPLY), REPLY)
        + b"0\r\nx-trailer: 1\r\nx-other: 2\r\n\r\n"
    ),
    "HTTP/1.0 framed by close": b"HTTP/1.0 200 OK\r\n\r\n" + REPLY,
    "HTTP/1.0 with a length": b"HTTP/1.0 200 OK\r\ncontent-length: %d\r\n\r\n%s"
    % (len(REPLY), REPLY),
    "100 continues first": b"HTTP/1.1 100 Continue\r\n\r\n" * 50 + OK,
    "103 early hints first": b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK,
    "body longer than content-length": OK + b"trailing garbage",
    "transfer-encoding identity framed by close": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\n" + REPLY
    ),
}


@pytest.mark.parametrize("name", sorted(GOOD_REPLIES))
def test_an_odd_but_valid_reply_is_the_answer(serve, name):
    server = serve(reply_once(GOOD_REPLIES[name]))
    result = call(server.url)
    assert not isinstance(result, ProviderError), result
    assert result.response.content == "hello"


@pytest.mark.parametrize("status", [204, 304])
def test_a_bodyless_status_with_a_body_costs_the_connection(serve, status):
    server = serve(keep_alive(b"HTTP/1.1 %d X\r\ncontent-length: 5\r\n\r\nhello" % status))
    assert_classified(call(server.url))


def test_101_switching_protocols_is_a_classified_error(serve):
    server = serve(
        reply_once(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
        )
    )
    assert_classified(call(server.url), ErrorKind.CONNECTION)


def test_an_endless_trailer_section_is_bounded(serve):
    """Trailers come after the body's cap is checked: they are bounded like a head."""

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n")
        line = b"x-t: " + b"a" * 1000 + b"\r\n"
        for _ in range(20_000):  # 20 MB of trailers, unless the client hangs up
            conn.sendall(line * 10)

    server = serve(handler)
    started = time.monotonic()
    err = assert_classified(
        call(server.url, Timeouts(connect=2, first_token=20, stall=20, total=20))
    )
    assert "too long" in err.message
    assert time.monotonic() - started < 10


def test_an_endless_trailer_value_is_bounded(serve):
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-t: ")
        for _ in range(2_000):
            conn.sendall(b"a" * 10_000)

    server = serve(handler)
    err = assert_classified(
        call(server.url, Timeouts(connect=2, first_token=20, stall=20, total=20))
    )
    assert "too long" in err.message


# --- connections the server closes, half-closes or never reads -----------------------------
def test_connection_close_is_never_reused(serve):
    """``connection: close`` with the socket left open: the next call opens another."""
    server = serve(keep_alive(OK.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)))

    async def go() -> None:
        p = provider(server.url)
        for _ in range(3):
            assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()

    run(go)
    assert server.accepted == 3


def test_a_kept_alive_connection_closed_while_idle_is_not_reused(serve):
    """The server closes an idle connection and the loop has not seen it yet (it was busy):
    the next call is not sent into the dead socket (httpcore checked the same)."""

    def handler(conn: socket.socket) -> None:
        if read_request(conn):
            conn.sendall(OK)
            time.sleep(0.1)  # then the keep-alive timeout of a server shorter than ours

    server = serve(handler)

    async def go() -> None:
        p = provider(server.url)
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        time.sleep(0.4)  # the loop is busy: the FIN waits in the socket, unseen
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()

    run(go)
    assert server.accepted == 2


def test_a_server_closing_on_the_second_request_fails_cleanly(serve):
    """Closed as the request arrives (no byte of a reply): a classified connection error,
    and the connection is gone from the pool."""

    def handler(conn: socket.socket) -> None:
        if read_request(conn):
            conn.sendall(OK)
            read_request(conn)

    server = serve(handler)

    async def go() -> Any:
        p = provider(server.url)
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", REQUEST, TIMEOUTS)
        assert_pool_empty(p)
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()
        return info.value

    assert_classified(run(go), ErrorKind.CONNECTION)


def test_a_server_closing_right_after_accepting(serve):
    server = serve(lambda conn: None)
    assert_classified(call(server.url), ErrorKind.CONNECTION)


def test_a_server_half_closing_before_replying(serve):
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.3)

    server = serve(handler)
    assert_classified(call(server.url), ErrorKind.CONNECTION)


def test_a_server_half_closing_its_read_side_still_answers(serve):
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.shutdown(socket.SHUT_RD)
        conn.sendall(OK)
        time.sleep(0.2)

    server = serve(handler)
    assert call(server.url).response.content == "hello"


def test_a_reply_sent_before_the_request_is_read(serve):
    """The reply is on the wire before the request is written: the answer, or a classified
    error; never a raw exception or a hang."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(OK)
        read_request(conn)
        time.sleep(0.2)

    server = serve(handler)
    result = call(server.url)
    if isinstance(result, ProviderError):
        assert_classified(result, ErrorKind.CONNECTION)
    else:
        assert result.response.content == "hello"


def test_a_trickled_reply_ends_at_the_deadline(serve):
    """One byte per 100 ms under a 1 s deadline: the call ends near 1 s, not at the end."""

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        for byte in OK:
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    server = serve(handler)
    started = time.monotonic()
    err = assert_classified(call(server.url, Timeouts(connect=1, first_token=1, stall=1, total=1)))
    assert err.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 10  # generous: the trickle alone would take 25 s


def test_an_endless_stream_of_interim_replies_ends_at_the_deadline(serve):
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        for _ in range(2000):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 20)
            time.sleep(0.01)

    server = serve(handler)
    started = time.monotonic()
    err = assert_classified(call(server.url, Timeouts(connect=1, first_token=1, stall=1, total=1)))
    assert err.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 10  # generous: the interim replies alone last 20 s


def test_a_server_that_never_reads_a_large_request_is_a_write_timeout(serve):
    """16 MB to a server that accepts and never reads: the write is bounded (by ``connect``)."""
    server = serve(lambda conn: time.sleep(4), rcvbuf=4096)
    # More than loopback's socket buffers take (2 MB may fit whole in them)
    big = CompletionRequest(model="chat", messages=[{"role": "user", "content": "x" * (16 << 20)}])

    async def go() -> ProviderError:
        p = provider(server.url)
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", big, Timeouts(connect=0.5, first_token=5, stall=5, total=5))
        assert_pool_empty(p)
        await p.aclose()
        return info.value

    assert_classified(run(go), ErrorKind.TIMEOUT)


def backlogged_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener that never accepts, its backlog full: further SYNs are dropped."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(listener.getsockname())
        fillers.append(s)
    time.sleep(0.05)
    return listener, fillers


def test_the_connect_deadline_holds_against_a_full_backlog():
    listener, fillers = backlogged_listener()
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        err = call(
            f"http://127.0.0.1:{port}/v1", Timeouts(connect=0.5, first_token=5, stall=5, total=5)
        )
    finally:
        for s in [*fillers, listener]:
            s.close()
    assert_classified(err, ErrorKind.TIMEOUT)
    assert "connect" in err.message
    assert (
        time.monotonic() - started < 10
    )  # generous (a loaded machine); the message names the connect deadline


# --- cancellation at every await point ------------------------------------------------------
def first_then_ok(hostile: Handler) -> Handler:
    """The first connection gets ``hostile``; every later one plain kept-alive answers."""
    seen = [0]
    lock = threading.Lock()

    def handler(conn: socket.socket) -> None:
        with lock:
            seen[0] += 1
            first = seen[0] == 1
        (hostile if first else keep_alive(OK))(conn)

    return handler


def event(text: str) -> bytes:
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def silent(conn: socket.socket) -> None:
    read_request(conn)
    time.sleep(2)


def half_body(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + REPLY[:10])
    time.sleep(2)


def half_stream(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + event("hel"))
    time.sleep(2)


def never_reads(conn: socket.socket) -> None:
    time.sleep(2)


async def cancel_after(coro: Any, delay: float) -> None:
    task = asyncio.create_task(coro)
    await asyncio.sleep(delay)
    assert not task.done(), task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    "where", ["writing the request", "waiting for the head", "mid-body", "mid-stream"]
)
def test_a_cancelled_call_empties_the_pool_and_the_next_call_works(serve, where):
    hostile = {
        "writing the request": never_reads,
        "waiting for the head": silent,
        "mid-body": half_body,
        "mid-stream": half_stream,
    }[where]
    server = serve(first_then_ok(hostile), rcvbuf=4096 if hostile is never_reads else None)
    big = CompletionRequest(model="chat", messages=[{"role": "user", "content": "x" * (16 << 20)}])

    async def go() -> None:
        p = provider(server.url, max_connections=1)
        if where == "mid-stream":
            stream = await p.astream("m1", REQUEST, TIMEOUTS)
            assert (await stream.__anext__()).content == "hel"
            await cancel_after(stream.__anext__(), 0.2)
        else:
            request = big if hostile is never_reads else REQUEST
            await cancel_after(p.acomplete("m1", request, TIMEOUTS), 0.3)
        assert_pool_empty(p)
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()

    run(go)


def test_a_call_cancelled_while_connecting_frees_its_slot():
    listener, fillers = backlogged_listener()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    short = Timeouts(connect=0.3, first_token=5, stall=5, total=5)

    async def go() -> ProviderError:
        p = provider(url, max_connections=1)
        await cancel_after(p.acomplete("m1", REQUEST, TIMEOUTS), 0.2)
        assert_pool_empty(p)
        with pytest.raises(ProviderError) as info:  # the one slot is free: it connects again
            await p.acomplete("m1", REQUEST, short)
        assert_pool_empty(p)
        await p.aclose()
        return info.value

    try:
        assert_classified(run(go), ErrorKind.TIMEOUT)
    finally:
        for s in [*fillers, listener]:
            s.close()


def test_many_calls_over_two_connections_some_cancelled(serve):
    def slow(conn: socket.socket) -> None:
        while read_request(conn):
            time.sleep(0.02)
            conn.sendall(OK)

    server = serve(slow)

    async def go() -> None:
        p = provider(server.url, max_connections=2)
        tasks = [asyncio.create_task(p.acomplete("m1", REQUEST, TIMEOUTS)) for _ in range(24)]
        await asyncio.sleep(0.05)
        for task in tasks[1::3]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3 == 1:
                assert isinstance(result, asyncio.CancelledError) or result.response.content
            else:
                assert not isinstance(result, BaseException), result
                assert result.response.content == "hello"
        (pool,) = pools(p)
        assert pool._count == len(pool.connections) <= 2 and not pool._waiters
        assert p._async_shards().load == [0]
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()

    run(go)
    assert server.accepted <= 2 + 8  # cancelled exchanges cost their connection, no more


def test_aclose_with_calls_in_flight(serve):
    """Calls in flight (and queued) when the provider closes end with a classified error;
    the provider opens new pools for the next call."""

    def slow(conn: socket.socket) -> None:
        while read_request(conn):
            time.sleep(0.5)
            conn.sendall(OK)

    server = serve(slow)

    async def go() -> None:
        p = provider(server.url, max_connections=2)
        tasks = [asyncio.create_task(p.acomplete("m1", REQUEST, TIMEOUTS)) for _ in range(5)]
        await asyncio.sleep(0.2)
        (pool,) = pools(p)
        await p.aclose()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            assert_classified(result, ErrorKind.CONNECTION)
        assert pool._count == 0 and pool.connections == []
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()

    run(go)


def test_a_new_event_loop_per_call_leaks_nothing(serve):
    server = serve(keep_alive(OK))
    p = provider(server.url)

    async def one() -> str:
        return (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content

    for _ in range(20):
        assert run(one) == "hello"
    p.close()
    gc.collect()
    assert not p._async


# --- streams that break, and the mesh failing over ------------------------------------------
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


BROKEN_STREAM_TAILS: dict[str, Callable[[socket.socket], None]] = {
    "reset": reset,
    "invalid chunk": lambda conn: conn.sendall(b"zz\r\n"),
    "cut mid-chunk": lambda conn: conn.sendall(b"100\r\ndata: {"),
    "trailer flood": lambda conn: conn.sendall(b"0\r\n" + b"x-t: " + b"a" * 200_000),
    "101 in the middle": lambda conn: conn.sendall(b"HTTP/1.1 101 Switching\r\n\r\n"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_STREAM_TAILS))
def test_a_stream_that_breaks_after_its_first_token_is_a_classified_error(serve, name):
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(STREAM_HEAD + chunk(event("hel")))
        time.sleep(0.1)
        BROKEN_STREAM_TAILS[name](conn)
        time.sleep(0.3)

    server = serve(handler)

    async def go() -> ProviderError:
        p = provider(server.url)
        stream = await p.astream("m1", REQUEST, TIMEOUTS)
        texts = []
        with pytest.raises(ProviderError) as info:
            async for c in stream:
                texts.append(c.content)
        assert texts == ["hel"]
        assert_pool_empty(p)
        await p.aclose()
        return info.value

    assert_classified(run(go))


def raw_mesh(url: str, fallback: str) -> Any:
    from mesh_core import Mesh

    timeouts = {"connect": "2s", "first_token": "3s", "stall": "3s", "total": "3s"}
    return Mesh.from_config(
        {
            "providers": {
                "p1": {"base_url": url, "timeouts": timeouts},
                "p2": {"base_url": fallback, "timeouts": timeouts},
            },
            "models": {"p1.m1": {"provider": "p1"}, "p2.m2": {"provider": "p2"}},
            "pools": {
                "chat": {"capability": "chat-completion", "retry": {"initial_delay": "10ms"}}
            },
        }
    )


@pytest.mark.parametrize(
    "reply",
    [
        BAD_REPLIES["content-length and chunked"],
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n" + b"x: y\r\n" * 50_000,
    ],
    ids=["framing", "upgrade", "trailers"],
)
def test_the_mesh_fails_over_from_a_hostile_provider(serve, reply):
    from mesh_core.testing import FaultServer

    hostile = serve(keep_alive(reply))
    fallback = FaultServer().start()
    mesh = raw_mesh(hostile.url, fallback.base_url)

    async def go() -> Any:
        try:
            return await mesh.acomplete("chat", "hi")
        finally:
            for p in mesh.providers.values():
                await p.aclose()

    try:
        result = run(go)
    finally:
        mesh.close()
        fallback.stop()
    assert result.model == "p2.m2"
    first = result.attempts[0]
    assert (first.model_id, first.outcome) == ("p1.m1", "connection_error")


ERROR_413 = json.dumps({"error": {"message": "request too large", "type": "invalid_request"}})
EARLY_413 = (
    b"HTTP/1.1 413 Too Large\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (
        len(ERROR_413),
        ERROR_413.encode(),
    )
)


@pytest.mark.parametrize("then", ["closes", "stays open"])
def test_an_early_error_reply_to_a_large_request(serve, then):
    """The server answers 413 after the request's head, never reading its 16 MB body: the
    reply is the answer (a classified error, at once), not a write timeout."""

    def handler(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(EARLY_413)
        if then == "closes":
            conn.shutdown(socket.SHUT_WR)
        time.sleep(15)

    server = serve(handler, rcvbuf=4096)
    big = CompletionRequest(model="chat", messages=[{"role": "user", "content": "x" * (16 << 20)}])

    async def go() -> ProviderError:
        p = provider(server.url)
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", big, Timeouts(connect=20, first_token=30, stall=30, total=30))
        assert_pool_empty(p)
        await p.aclose()
        return info.value

    started = time.monotonic()
    err = run(go)
    # The write would time out at 20 s (``connect``); the answer comes long before, even on
    # a loaded machine (generous bound), and it is the server's 413, not a timeout.
    assert time.monotonic() - started < 12
    assert err.status_code == 413 or err.details.get("status") == 413, (err.kind, err.message)


# --- a hostile proxy (CONNECT tunnel), and the SOCKS fallback --------------------------------
def proxy_replying(reply: bytes, then: Handler | None = None) -> Handler:
    def handler(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            got = conn.recv(65536)
            if not got:
                return
            data += got
        conn.sendall(reply)
        if then is not None:
            then(conn)
        time.sleep(0.5)

    return handler


HOSTILE_PROXIES: dict[str, Handler] = {
    "refuses": proxy_replying(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
    "not http": proxy_replying(b"garbage\r\n\r\n"),
    "bytes after its reply": proxy_replying(b"HTTP/1.1 200 OK\r\n\r\nEXTRA"),
    "endless reply": proxy_replying(b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 20_000),
    "closes at once": lambda conn: None,
    "closes after 200": proxy_replying(b"HTTP/1.1 200 OK\r\n\r\n", lambda conn: conn.close()),
    "not TLS behind the tunnel": proxy_replying(
        b"HTTP/1.1 200 OK\r\n\r\n", lambda conn: conn.sendall(b"garbage" * 100)
    ),
    "silent after 200": proxy_replying(b"HTTP/1.1 200 OK\r\n\r\n", lambda conn: time.sleep(2)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PROXIES))
def test_a_hostile_proxy_is_a_classified_error_within_the_connect_deadline(serve, name):
    proxy = serve(HOSTILE_PROXIES[name])

    async def go() -> ProviderError:
        p = provider("https://127.0.0.1:1/v1", proxy=f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", REQUEST, Timeouts(connect=0.5, first_token=5, stall=5, total=5))
        assert_pool_empty(p)
        await p.aclose()
        return info.value

    started = time.monotonic()
    err = assert_classified(run(go))
    assert err.kind in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT)
    assert err.message.rstrip(": ") not in ("connection error", "connection error: ConnectError")
    assert time.monotonic() - started < 10  # generous (a loaded machine)


@pytest.mark.parametrize("name", sorted(BAD_REPLIES))
def test_the_socks_fallback_classifies_malformed_replies_too(serve, monkeypatch, name):
    """The httpx transport that SOCKS providers use (minus the proxy), on the same replies."""
    import httpx

    from mesh_core.providers import _h1pool, _h1socks
    from mesh_core.providers._pools import no_tls

    def fallback(route: Any, headers: httpx.Headers, limit: int) -> Any:
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        options = {"verify": no_tls(), "limits": limits, "trust_env": False}
        return _h1socks.HttpxTransport(options, headers)

    monkeypatch.setattr(_h1pool, "H1Transport", fallback)
    server = serve(reply_once(BAD_REPLIES[name]))

    async def go() -> Any:
        p = provider(server.url)
        try:
            return await p.acomplete("m1", REQUEST, TIMEOUTS)
        except ProviderError as err:
            return err
        finally:
            await p.aclose()

    result = run(go)
    if name == "identical duplicate content-length":  # h11 takes identical duplicates
        assert result.response.content == "hello"
    else:
        assert_classified(result)


@pytest.mark.parametrize("framing", ["chunked", "by the connection's end"])
def test_a_stream_reset_mid_way_is_an_error_not_its_end(serve, framing):
    """A reset is not the end of a body framed by the connection's end (h11 said so too)."""
    head = (
        STREAM_HEAD
        if framing == "chunked"
        else STREAM_HEAD.replace(b"transfer-encoding: chunked\r\n", b"")
    )
    frame = chunk if framing == "chunked" else (lambda data: data)

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(head + frame(event("hel")))
        time.sleep(0.1)
        reset(conn)

    server = serve(handler)

    async def go() -> ProviderError:
        p = provider(server.url)
        stream = await p.astream("m1", REQUEST, TIMEOUTS)
        texts = []
        with pytest.raises(ProviderError) as info:
            async for c in stream:
                texts.append(c.content)
        assert texts == ["hel"]
        assert_pool_empty(p)
        await p.aclose()
        return info.value

    err = assert_classified(run(go), ErrorKind.CONNECTION)
    assert "ConnectionResetError" in err.message


def test_aclose_during_a_stream_framed_by_the_connection_end_is_an_error(serve):
    """Closing the provider under a stream ends it with an error: our own close is not the
    end of a body framed by the connection's end."""

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(STREAM_HEAD.replace(b"transfer-encoding: chunked\r\n", b"") + event("hel"))
        time.sleep(1)

    server = serve(handler)

    async def go() -> ProviderError:
        p = provider(server.url)
        stream = await p.astream("m1", REQUEST, TIMEOUTS)
        assert (await stream.__anext__()).content == "hel"
        rest = asyncio.create_task(stream.__anext__())
        await asyncio.sleep(0.05)
        await p.aclose()
        with pytest.raises(ProviderError) as info:
            await rest
        return info.value

    assert_classified(run(go), ErrorKind.CONNECTION)


def test_an_endless_chunk_extension_is_bounded(serve):
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=")
        for _ in range(2_000):
            conn.sendall(b"a" * 10_000)

    server = serve(handler)
    long = Timeouts(connect=2, first_token=20, stall=20, total=20)
    err = assert_classified(call(server.url, long), ErrorKind.CONNECTION)
    assert "too long" in err.message


def test_the_mesh_stream_fails_over_from_a_hostile_provider(serve):
    from mesh_core.testing import FaultServer

    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n"
    hostile = serve(keep_alive(upgrade))
    fallback = FaultServer().start()
    mesh = raw_mesh(hostile.url, fallback.base_url)

    async def go() -> list[Any]:
        try:
            return [c async for c in mesh.astream("chat", "hi")]
        finally:
            for p in mesh.providers.values():
                await p.aclose()

    try:
        chunks = run(go)
    finally:
        mesh.close()
        fallback.stop()
    assert chunks and "".join(c.content for c in chunks)
    assert mesh.snapshot("p1.m1").failure_count == 1


def test_a_stream_closed_by_another_task_while_read(serve):
    """``aclose()`` from another task while a read waits: the reader gets a classified error
    and the connection goes; the closer gets no RuntimeError."""
    server = serve(first_then_ok(half_stream))

    async def go() -> ProviderError:
        p = provider(server.url, max_connections=1)
        stream = await p.astream("m1", REQUEST, TIMEOUTS)
        assert (await stream.__anext__()).content == "hel"
        reader = asyncio.create_task(stream.__anext__())
        await asyncio.sleep(0.05)
        await stream.aclose()
        with pytest.raises(ProviderError) as info:
            await reader
        assert_pool_empty(p)
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()
        return info.value

    assert_classified(run(go), ErrorKind.CONNECTION)


def test_a_connection_handed_to_a_queued_call_after_the_server_closed_it(serve):
    """One connection; the server closes it just after its reply, while the loop is busy:
    the call queued for it opens a fresh one instead of writing into the dead socket."""

    def handler(conn: socket.socket) -> None:
        if read_request(conn):
            time.sleep(0.1)
            conn.sendall(OK)
            time.sleep(0.05)

    server = serve(handler)

    async def go() -> None:
        p = provider(server.url, max_connections=1)

        async def first() -> str:
            reply = await p.acomplete("m1", REQUEST, TIMEOUTS)
            time.sleep(0.3)  # the loop is busy: the server's FIN waits, unseen
            return reply.response.content

        texts = await asyncio.gather(first(), p.acomplete("m1", REQUEST, TIMEOUTS))
        assert texts[0] == "hello" and texts[1].response.content == "hello"
        await p.aclose()

    run(go)
    assert server.accepted == 2


@pytest.mark.parametrize("where", ["in the loop", "from another thread"])
def test_a_sync_close_with_calls_and_streams_in_flight(serve, where):
    """``close()`` (sync) while a call waits for its body and a stream for its next event:
    both end at once with a classified error, not at their deadlines."""

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(STREAM_HEAD + chunk(event("hel")))  # and then nothing
        time.sleep(2)

    server = serve(handler)

    async def go() -> list[Any]:
        p = provider(server.url)
        stream = await p.astream("m1", REQUEST, TIMEOUTS)
        assert (await stream.__anext__()).content == "hel"
        pending = [asyncio.create_task(stream.__anext__())]
        pending.append(asyncio.create_task(p.acomplete("m1", REQUEST, TIMEOUTS)))
        await asyncio.sleep(0.1)
        if where == "in the loop":
            p.close()
        else:
            closer = threading.Thread(target=p.close)
            closer.start()
            await asyncio.to_thread(closer.join)
        async with asyncio.timeout(1):
            return await asyncio.gather(*pending, return_exceptions=True)

    for result in run(go):
        assert_classified(result, ErrorKind.CONNECTION)


def test_a_body_of_many_tiny_chunks_is_not_mistaken_for_endless_framing(serve):
    """300 KB of one-byte chunks, mostly framing, in large reads: the answer."""
    body = b" " * 300_000 + REPLY
    chunks = b"".join(b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
    server = serve(
        reply_once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    )
    assert call(server.url).response.content == "hello"
