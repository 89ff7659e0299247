"""The async transport on httptools (mesh_core/providers/_h1*.py), on real local servers.

The request-path suites (test_request_path, test_hostile_provider, test_request_limits,
test_stream_*, test_proxy, test_shutdown, ...) run every async call over this transport;
here is what is its own: the connection limit and its queue, keep-alive, what a cancelled
request does to its connection, replies framed by the connection's end, bytes nobody asked
for, TLS (verification, and a CONNECT tunnel through a proxy with credentials), and the
httpx fallback that SOCKS proxies use.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from mesh_core._errors import ErrorKind, ProviderError
from mesh_core._types import CompletionRequest
from mesh_core.providers import OpenAICompatibleProvider, Timeouts
from mesh_core.testing import FaultServer, faults

TIMEOUTS = Timeouts(connect=5, first_token=10, stall=10, total=10)
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


@pytest.fixture
def server() -> Iterator[FaultServer]:
    s = FaultServer().start()
    yield s
    s.stop()


def provider(base_url: str, **kw: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("p", base_url=base_url, **kw)


def pools(p: OpenAICompatibleProvider) -> list[Any]:
    return [t._pool for t in p._async_shards().transports]


# --- the pool -------------------------------------------------------------------------------
def test_concurrent_calls_share_at_most_max_connections(server):
    """Eight streams held open at once over two connections: six wait their turn, all end."""
    server.set("m1", faults.slow_first_token(0.2))
    p = provider(server.base_url, max_connections=2)

    async def one() -> str:
        stream = await p.astream("m1", REQUEST, TIMEOUTS)
        return "".join([c.content async for c in stream])

    async def run() -> list[str]:
        texts = await asyncio.gather(*(one() for _ in range(8)))
        assert all(len(pool.connections) <= 2 for pool in pools(p))
        await p.aclose()
        return texts

    texts = asyncio.run(run())
    assert len(set(texts)) == 1 and texts[0]
    assert len({r.client_port for r in server.requests_for("m1")}) <= 2


def test_sequential_calls_keep_one_connection(server):
    p = provider(server.base_url)

    async def run() -> None:
        for _ in range(5):
            await p.acomplete("m1", REQUEST, TIMEOUTS)
            [c async for c in await p.astream("m1", REQUEST, TIMEOUTS)]
        await p.aclose()

    asyncio.run(run())
    assert len({r.client_port for r in server.requests_for("m1")}) == 1


def test_a_cancelled_call_closes_its_connection_and_frees_its_slot(server):
    """Half a reply must never reach the next request: the connection goes, the slot stays."""
    server.set("m1", faults.silent())
    p = provider(server.base_url, max_connections=1)

    async def run() -> None:
        task = asyncio.create_task(p.acomplete("m1", REQUEST, TIMEOUTS))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (pool,) = pools(p)
        assert pool.connections == [] and pool._count == 0
        assert p._async_shards().load == [0]
        server.set("m1", faults.ok())
        reply = await p.acomplete("m1", REQUEST, TIMEOUTS)  # the one slot is free again
        assert reply.response.content
        await p.aclose()

    asyncio.run(run())


def test_a_call_cancelled_in_the_queue_leaves_it(server):
    """One connection, busy; a queued call is cancelled; the next queued call gets it."""
    server.set("m1", faults.slow_first_token(0.3))
    p = provider(server.base_url, max_connections=1)

    async def drain() -> int:
        return len([c async for c in await p.astream("m1", REQUEST, TIMEOUTS)])

    async def run() -> None:
        first = asyncio.create_task(drain())
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(drain())
        third = asyncio.create_task(drain())
        await asyncio.sleep(0.05)
        queued.cancel()
        assert await first and await third
        with pytest.raises(asyncio.CancelledError):
            await queued
        (pool,) = pools(p)
        assert pool._count == 1 and len(pool.connections) == 1 and not pool._waiters
        await p.aclose()

    asyncio.run(run())
    assert len({r.client_port for r in server.requests_for("m1")}) == 1


def test_waiting_for_a_connection_is_a_local_timeout(server):
    server.set("m1", faults.silent())
    p = provider(server.base_url, max_connections=1)
    short = Timeouts(connect=5, first_token=0.5, stall=0.5, total=0.5)

    async def run() -> ProviderError:
        busy = asyncio.create_task(p.acomplete("m1", REQUEST, TIMEOUTS))
        await asyncio.sleep(0.1)
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", REQUEST, short)
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
        await p.aclose()
        return info.value

    err = asyncio.run(run())
    assert err.kind is ErrorKind.TIMEOUT and err.details.get("local") is True


# --- replies a plain server could send ----------------------------------------------------
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _LoopThread:
    """asyncio servers on their own loop, in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []

    def serve(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> int:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)

        server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        for server in self._servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def loop_thread() -> Iterator[_LoopThread]:
    lt = _LoopThread()
    yield lt
    lt.stop()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return head


def _call(base_url: str) -> Any:
    async def run() -> Any:
        p = provider(base_url)
        try:
            return await p.acomplete("m1", REQUEST, TIMEOUTS)
        finally:
            await p.aclose()

    return asyncio.run(run())


def test_a_reply_framed_by_the_end_of_the_connection_is_read_whole(loop_thread):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + REPLY)
        await writer.drain()
        writer.close()

    port = loop_thread.serve(handler)
    assert _call(f"http://127.0.0.1:{port}/v1").response.content == "hello"


def test_bytes_after_the_reply_cost_the_connection_not_the_answer(loop_thread):
    """A second reply to one request: the answer stands, the connection is not reused."""
    ports: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports.append(writer.get_extra_info("peername")[1])
        reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
        try:
            while True:
                await _read_request(reader)
                writer.write(reply + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    port = loop_thread.serve(handler)
    p = provider(f"http://127.0.0.1:{port}/v1")

    async def run() -> None:
        for _ in range(3):
            assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()

    asyncio.run(run())
    assert len(ports) >= 2


def test_an_endless_head_is_a_connection_error(loop_thread):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        try:
            for i in range(10_000):
                writer.write(b"x-filler-%d: %s\r\n" % (i, b"a" * 100))
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    port = loop_thread.serve(handler)
    with pytest.raises(ProviderError) as info:
        _call(f"http://127.0.0.1:{port}/v1")
    assert info.value.kind is ErrorKind.CONNECTION and "too long" in info.value.message


def test_a_header_with_a_line_break_is_refused_before_sending(server):
    p = provider(server.base_url, headers={"x-team": "a\r\nx-injected: 1"})

    async def run() -> None:
        try:
            await p.acomplete("m1", REQUEST, TIMEOUTS)
        finally:
            await p.aclose()

    with pytest.raises(ValueError, match="line break"):
        asyncio.run(run())
    assert server.requests_for("m1") == []


# --- TLS, and a CONNECT tunnel ---------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (files: cert, key)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def _tls_origin(loop_thread: _LoopThread, certificate: tuple[str, str]) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
        try:
            while True:
                await _read_request(reader)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    return loop_thread.serve(handler, context)


def _connect_proxy(loop_thread: _LoopThread, seen: list[tuple[bytes, bytes | None]]) -> int:
    """A CONNECT proxy that records each tunnel asked for, and its credentials."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        auth = next(
            (
                ln.split(b": ", 1)[1]
                for ln in lines
                if ln.lower().startswith(b"proxy-authorization")
            ),
            None,
        )
        seen.append((lines[0], auth))
        host, port = lines[0].split(b" ")[1].split(b":")
        up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return loop_thread.serve(handler)


def test_tls_is_verified(loop_thread, certificate):
    """A self-signed certificate fails (verify_tls: true, the default) and fails over."""
    port = _tls_origin(loop_thread, certificate)
    with pytest.raises(ProviderError) as info:
        _call(f"https://127.0.0.1:{port}/v1")
    assert (
        info.value.kind is ErrorKind.CONNECTION
        and "CERTIFICATE_VERIFY_FAILED" in info.value.message
    )


def test_https_through_a_connect_tunnel_with_secret_credentials(loop_thread, certificate):
    port = _tls_origin(loop_thread, certificate)
    seen: list[tuple[bytes, bytes | None]] = []
    proxy_port = _connect_proxy(loop_thread, seen)
    p = provider(
        f"https://127.0.0.1:{port}/v1",
        verify_tls=False,
        proxy=f"http://user:s3cret-proxy-pw@127.0.0.1:{proxy_port}",
    )

    async def run() -> None:
        for _ in range(3):
            assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content == "hello"
        await p.aclose()

    asyncio.run(run())
    token = base64.b64encode(b"user:s3cret-proxy-pw")
    assert seen == [(f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode(), b"Basic " + token)]  # kept


def test_an_https_proxy_is_verified_too(loop_thread, certificate):
    """TLS to the proxy itself (before the tunnel) verifies the proxy's certificate."""
    proxy_port = _tls_origin(loop_thread, certificate)  # a TLS server nobody's CA signed
    p = provider("https://127.0.0.1:9/v1", proxy=f"https://127.0.0.1:{proxy_port}")

    async def run() -> None:
        try:
            await p.acomplete("m1", REQUEST, TIMEOUTS)
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as info:
        asyncio.run(run())
    assert info.value.kind is ErrorKind.CONNECTION
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.message


def test_a_proxy_refusing_the_tunnel_hides_its_credentials(loop_thread):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        auth = next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"proxy-auth"))
        writer.write(b"HTTP/1.1 407 Denied " + auth.split(b" ")[-1] + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy_port = loop_thread.serve(handler)
    p = provider("https://127.0.0.1:9/v1", proxy=f"http://u:hunter22@127.0.0.1:{proxy_port}")

    async def run() -> None:
        try:
            await p.acomplete("m1", REQUEST, TIMEOUTS)
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as info:
        asyncio.run(run())
    message = info.value.message
    assert "407" in message and "hunter22" not in message
    assert base64.b64encode(b"u:hunter22").decode() not in message


# --- the httpx fallback (SOCKS proxies) ----------------------------------------------------------
@pytest.fixture
def over_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every provider's async transport is the SOCKS fallback's (httpx), minus the proxy."""
    from mesh_core.providers import _h1pool, _h1socks
    from mesh_core.providers._pools import no_tls

    def fallback(route: Any, headers: httpx.Headers, limit: int) -> Any:
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        options = {"verify": no_tls(), "limits": limits, "trust_env": False}
        return _h1socks.HttpxTransport(options, headers)

    monkeypatch.setattr(_h1pool, "H1Transport", fallback)


def test_the_httpx_fallback_keeps_the_same_guarantees(server, over_httpx):
    from mesh_core.providers._h1socks import HttpxTransport

    p = provider(server.base_url)
    short = Timeouts(connect=5, first_token=0.5, stall=0.5, total=0.5)

    async def run() -> None:
        assert isinstance(p._async_shards().transports[0], HttpxTransport)
        assert (await p.acomplete("m1", REQUEST, TIMEOUTS)).response.content
        assert [c async for c in await p.astream("m1", REQUEST, TIMEOUTS)]
        server.set("m1", faults.server_error(503))
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", REQUEST, TIMEOUTS)
        assert info.value.kind is ErrorKind.SERVER_ERROR
        server.set("m1", faults.reset())
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", REQUEST, TIMEOUTS)
        assert info.value.kind is ErrorKind.CONNECTION
        server.set("m1", faults.trickle(0.05))
        with pytest.raises(ProviderError) as info:
            await p.acomplete("m1", REQUEST, short)
        assert info.value.kind is ErrorKind.TIMEOUT and "total" in info.value.message
        server.set("m1", faults.slow_first_token(2))
        with pytest.raises(ProviderError) as info:
            [c async for c in await p.astream("m1", REQUEST, short)]
        assert info.value.kind is ErrorKind.TIMEOUT
        assert p._async_shards().load == [0] * len(p._async_shards().load)
        await p.aclose()

    asyncio.run(run())
