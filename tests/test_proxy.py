"""A provider behind an HTTP proxy (``providers.<id>.proxy``), through a forward proxy on
127.0.0.1 that relays to the fault server and records what it saw."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from mesh_core import Mesh
from mesh_core._config import load_config
from mesh_core._errors import ConfigurationError
from tests.conftest import config_for

_HOP_BY_HOP = {"connection", "proxy-authorization", "proxy-connection", "keep-alive", "host"}


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        target = urlsplit(self.path)  # a forward proxy gets the absolute URL
        self.server.seen.append((self.path, self.headers.get("proxy-authorization")))
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        upstream.request("POST", target.path, body, headers)
        reply = upstream.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(key, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Relay)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_requests_and_streams_go_through_the_proxy(servers, proxy):
    cfg = config_for(servers)
    port = proxy.server_address[1]
    cfg["providers"]["p1"]["proxy"] = f"http://mesh:s3cret-pw@127.0.0.1:{port}"
    with Mesh.from_config(cfg) as mesh:
        assert mesh.complete("chat", "hi").model == "p1.m1"
        chunks = list(mesh.stream("chat", "hello there"))
        shown = repr(mesh.config) + repr(mesh.providers) + repr(mesh.stats())
    assert "".join(c.content for c in chunks).endswith("hello there")
    assert [path for path, _ in proxy.seen] == [f"{servers[0].base_url}/chat/completions"] * 2
    credentials = base64.b64encode(b"mesh:s3cret-pw").decode()
    assert {auth for _, auth in proxy.seen} == {f"Basic {credentials}"}
    assert len(servers[0].requests_for("m1")) == 2  # relayed to the provider
    assert "s3cret" not in shown


def test_a_dead_proxy_fails_over_and_hides_its_password(servers):
    cfg = config_for(servers)
    cfg["providers"]["p1"]["proxy"] = f"http://mesh:s3cret-pw@127.0.0.1:{free_port()}"
    with Mesh.from_config(cfg) as mesh:
        r = mesh.complete("chat", "hi")
    assert r.model == "p2.m2"
    assert r.attempts[0].outcome == "connection_error"
    assert "s3cret" not in repr(r.attempts)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:21", "127.0.0.1:3128"])
def test_a_proxy_that_is_not_a_url_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError) as info:
        load_config({"providers": {"p": {"proxy": url}}})
    assert "providers.p.proxy: proxy must be a URL starting with http://" in str(info.value)


def test_an_empty_proxy_means_none():
    cfg = load_config({"providers": {"p": {"proxy": "${HTTPS_PROXY:-}"}}}, env={})
    assert cfg.providers["p"].proxy is None
