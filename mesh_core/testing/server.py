"""A real HTTP server on 127.0.0.1 that speaks several providers' protocols and fails on command.

On one port, by path: OpenAI's ``POST /v1/chat/completions`` (plain and streamed as
server-sent events, with a usage chunk and ``[DONE]``) and ``GET /v1/models``; Azure
OpenAI's ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``; and
Anthropic's ``POST /v1/messages``; and Gemini's ``POST /v1beta/models/{model}:generateContent``
and ``:streamGenerateContent?alt=sse`` (each wire in its own module: ``_openai_wire``,
``_anthropic_wire``, ``_gemini_wire``). Every fault below exists in each of them, in that provider's
shapes (error bodies, rate-limit headers, stream events). Each model
name it is asked for can be told what to do with its next requests: answer,
answer with a scripted reply or tool call, return any HTTP error, reset the
connection, stay silent, delay the first token, stall, cut or corrupt a stream,
omit ``[DONE]``, or send rate-limit headers; or be hostile: trickle the reply a byte
at a time, send ``100 Continue`` forever, answer with a gzip bomb, verbatim JSON or
verbatim event-stream text, or gzip the stream. Every request is recorded.

In-process::

    with FaultServer() as server:
        server.set("m1", faults.server_error(503))   # every request from now on
        server.enqueue("m1", faults.reset())          # only the next request
        base_url = server.base_url                    # http://127.0.0.1:PORT/v1
        server.url_for("anthropic")                   # http://127.0.0.1:PORT (its base URL)

Over HTTP (for a server started with ``python -m mesh_core.testing``):
``POST /_control/behaviour`` with ``{"model": ..., "behaviour": {...}, "once": false}``,
``POST /_control/reset``, ``GET /_control/requests``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._anthropic_wire import AnthropicWire
from ._dialect import Answer, ServerDialect, openai_error
from ._embedding_wire import embedding_route, serve_embeddings
from ._gemini_wire import GeminiWire
from ._hostile import Trickle, bomb
from ._openai_wire import AzureWire, OpenAIWire, words as _words
from .faults import Behaviour
from .responder import scripted_answer

__all__ = ["FaultServer", "RecordedRequest"]

_MAX_WAIT = 300.0


@dataclass
class RecordedRequest:
    model: str
    body: dict[str, Any]
    stream: bool
    time: float
    behaviour: str
    """What the server did: ``ok``, ``status:503``, ``reset``, ``silent``, ``cut``..."""
    authorization: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Every request header, lower-cased names."""
    client_port: int | None = None
    """The client's TCP port: requests on one kept-alive connection share it."""
    dialect: str = "openai"
    """The protocol the request came in: ``openai``, ``azure-openai`` or ``anthropic``
    (``body`` is as sent, in that protocol's shape)."""


@dataclass
class _RateLimit:
    limit: int
    window: float
    used: deque[float] = field(default_factory=deque)


class FaultServer:
    """The server. ``start()``/``stop()`` or use it as a context manager."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None
    ) -> None:
        self._host, self._port = host, port
        self.api_key = api_key
        self._lock = threading.Lock()
        self._default: dict[str, Behaviour] = {}
        self._queue: dict[str, deque[Behaviour]] = defaultdict(deque)
        self._limits: dict[str, _RateLimit] = {}
        self.requests: list[RecordedRequest] = []
        self.embedding_dimensions: dict[str, int] = {}
        """The dimension of each model's vectors when a request sets none (default 8)."""
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> FaultServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._stopping.clear()
        self._httpd = _QuietServer((self._host, self._port), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fault-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not running"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://{self._host}:{self.port}/v1"

    def url_for(self, provider_type: str) -> str:
        """The ``base_url`` a provider of ``provider_type`` is configured with to reach this
        server (``openai-compatible``: :attr:`base_url`; ``anthropic`` and ``azure-openai``:
        the server's root, as their API hosts are)."""
        if provider_type in ("openai-compatible", "openai"):
            return self.base_url
        return f"http://{self._host}:{self.port}"

    # --- control ----------------------------------------------------------------
    def set(self, model: str, behaviour: Behaviour) -> None:
        """What ``model`` does with every request from now on (until changed)."""
        with self._lock:
            self._default[model] = behaviour

    def enqueue(self, model: str, *behaviours: Behaviour) -> None:
        """What ``model`` does with its next requests, one behaviour each, before its default."""
        with self._lock:
            self._queue[model].extend(behaviours)

    def rate_limit(self, model: str, limit: int, window: float = 60.0) -> None:
        """Simulate a request rate limit: ``x-ratelimit-*`` headers on every reply, 429 past it."""
        with self._lock:
            self._limits[model] = _RateLimit(limit, window)

    def reset(self) -> None:
        """Forget every behaviour, rate limit and recorded request."""
        with self._lock:
            self._default.clear()
            self._queue.clear()
            self._limits.clear()
            self.requests.clear()

    def requests_for(self, model: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.model == model]

    def count(self, model: str | None = None, behaviour: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (model is None or r.model == model)
                and (behaviour is None or r.behaviour == behaviour)
            )

    # --- decisions (called by the handler) ------------------------------------------
    def _next(self, model: str, wire: ServerDialect) -> tuple[Behaviour, dict[str, str]]:
        """The behaviour for one request, and rate-limit headers to send with it."""
        with self._lock:
            queue = self._queue.get(model)
            behaviour = queue.popleft() if queue else self._default.get(model, Behaviour())
            limit = self._limits.get(model)
            if limit is None:
                return behaviour, {}
            now = time.monotonic()
            while limit.used and limit.used[0] <= now - limit.window:
                limit.used.popleft()
            if len(limit.used) >= limit.limit and behaviour.kind == "ok":
                reset_in = limit.window - (now - limit.used[0])
                behaviour = Behaviour(
                    kind="status",
                    status=429,
                    retry_after=round(reset_in, 3),
                    body={
                        "error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}
                    },
                )
            else:
                limit.used.append(now)
            remaining = max(0, limit.limit - len(limit.used))
            return behaviour, wire.rate_limit_headers(limit.limit, remaining, limit.window)

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(min(seconds, _MAX_WAIT))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Broken connections are this server's trade: do not print them."""


class _Handler(BaseHTTPRequestHandler):
    owner: FaultServer
    protocol_version = "HTTP/1.1"
    timeout = 60
    _behaviour: Behaviour | None = None
    _finish: str | None = None
    """A finish reason that overrides the usual one (``length`` past ``max_tokens``)."""
    _gz: Any = None

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every reply.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.owner._lock:
            self.owner._conns.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    # --- plumbing ----------------------------------------------------------------------
    def end_headers(self) -> None:
        super().end_headers()
        b = self._behaviour
        if b is not None and b.trickle and b.trickle_body_only:
            self.wfile.flush()
            self.wfile = Trickle(self.wfile, b.trickle, self.owner)  # type: ignore[assignment]

    def _send_bytes(
        self, status: int, data: bytes, headers: dict[str, str], encoding: str | None = None
    ) -> None:
        """A reply with exactly ``data`` as its body."""
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if encoding:
            self.send_header("content-encoding", encoding)
        self.send_header("content-length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _hostile_body(self, status: int, b: Behaviour, headers: dict[str, str]) -> bool:
        """Send a bomb or a verbatim body when ``b`` asks for one; tell whether it did."""
        if b.bomb:
            self.close_connection = True  # the client may well stop reading mid-body
            with contextlib.suppress(OSError):
                self._send_bytes(status, bomb(b.bomb), headers, "gzip")
            return True
        if b.raw_body is not None:
            self._send_bytes(status, b.raw_body.encode(), headers)
            return True
        return False

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if "gzip" in (self.headers.get("accept-encoding") or ""):  # as hosted APIs do
            data = gzip.compress(data, compresslevel=1)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    # --- routes --------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            with self.owner._lock:
                names = sorted(set(self.owner._default) | set(self.owner._queue))
            self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": n, "object": "model", "owned_by": "fault-server"} for n in names
                    ],
                },
            )
        elif self.path.startswith("/_control/requests"):
            with self.owner._lock:
                recs = [r.__dict__ | {"authorization": None} for r in self.owner.requests]
            self._json(200, recs)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        self._behaviour, self._gz = None, None
        body = self._body()
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        query = dict(parse_qsl(url.query))
        if path == "/_control/behaviour":
            self._control(body)
        elif path == "/_control/reset":
            self.owner.reset()
            self._json(200, {"ok": True})
        elif path in ("/v1/chat/completions", "/chat/completions"):
            self._completion(body, _OPENAI, None, query)
        elif path == "/v1/messages":
            self._completion(body, _ANTHROPIC, None, query)
        elif path.startswith(_AZURE_PREFIX) and path.endswith(_AZURE_SUFFIX):
            deployment = unquote(path[len(_AZURE_PREFIX) : -len(_AZURE_SUFFIX)])
            self._completion(body, _AZURE, deployment, query)
        elif (gemini := _GEMINI_PATH.match(path)) is not None:
            model, method = unquote(gemini.group(1)), gemini.group(2)
            stream = method == "streamGenerateContent"
            self._completion(body, _GEMINI, model, query, stream)
        elif (route := embedding_route(path)) is not None:
            serve_embeddings(self, route, body, query, _WIRES[route.kind])
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _control(self, body: Any) -> None:
        try:
            behaviour = Behaviour.from_dict(body.get("behaviour") or {})
            model = str(body["model"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            self._json(400, {"error": {"message": f"bad control request: {exc}"}})
            return
        if body.get("once"):
            self.owner.enqueue(model, behaviour)
        else:
            self.owner.set(model, behaviour)
        self._json(200, {"ok": True})

    def _completion(
        self,
        body: Any,
        wire: ServerDialect,
        deployment: str | None,
        query: dict[str, str],
        stream: bool | None = None,
    ) -> None:
        owner = self.owner
        sent = {k.lower(): v for k, v in self.headers.items()}
        refused = wire.check(body, query, sent)
        if refused is not None:
            self._json(refused.status, refused.body)
            return
        openai_body = wire.to_openai(body)
        model = deployment or str(openai_body.get("model") or "")
        if stream is None:
            stream = bool(body.get("stream"))
        auth = self.headers.get("authorization")
        rec = RecordedRequest(
            model, body, stream, time.time(), "ok", auth, sent, self.client_address[1], wire.name
        )
        admitted = self._admit(rec, wire, sent)
        if admitted is None:
            return
        behaviour, rl_headers = admitted
        messages = openai_body["messages"]
        last = messages[-1] if messages else {}
        if behaviour.reject_prefill and isinstance(last, dict) and last.get("role") == "assistant":
            rec.behaviour = "status:400"
            owner._record(rec)
            self._json(
                400, wire.error_body(400, openai_error("assistant prefill is not supported"))
            )
            return
        headers = {**rl_headers, **behaviour.headers}
        if self._fault(rec, wire, behaviour, headers):
            return
        answer = self._answer(model, openai_body, behaviour)
        owner._record(rec)  # before replying: a fast client must find it counted
        if stream:
            self._stream(rec, wire, openai_body, behaviour, answer, headers)
        elif not self._hostile_body(200, behaviour, headers):
            self._json(200, wire.reply(answer), headers)

    def _admit(
        self, rec: RecordedRequest, wire: ServerDialect, sent: dict[str, str]
    ) -> tuple[Behaviour, dict[str, str]] | None:
        """The behaviour for ``rec`` and its rate-limit headers; None when the request was
        refused for its credential (recorded and answered here)."""
        owner = self.owner
        if owner.api_key is not None and wire.credential(sent) != owner.api_key:
            rec.behaviour = "status:401"
            owner._record(rec)
            error = {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
            self._json(wire.error_status(401, error), wire.error_body(401, error))
            return None
        return owner._next(rec.model, wire)

    def _fault(
        self,
        rec: RecordedRequest,
        wire: ServerDialect,
        behaviour: Behaviour,
        headers: dict[str, str],
    ) -> bool:
        """Apply the behaviour's delay and trickle; serve it when it is no answer (a status, a
        reset, silence, interim responses), recorded. True when it was served here."""
        owner = self.owner
        if behaviour.delay:
            owner._wait(behaviour.delay)
        self._behaviour = behaviour
        if behaviour.trickle:
            self.close_connection = True  # the trickling writer must not serve another request
            if not behaviour.trickle_body_only:
                self.wfile = Trickle(self.wfile, behaviour.trickle, owner)  # type: ignore[assignment]
        if behaviour.kind == "interim":
            rec.behaviour = "interim"
            owner._record(rec)
            self.close_connection = True
            with contextlib.suppress(OSError):
                while not owner._stopping.is_set():
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    owner._wait(0.005)
            return True
        if behaviour.kind == "reset":
            rec.behaviour = "reset"
            owner._record(rec)
            self._reset()
            return True
        if behaviour.kind == "silent":
            rec.behaviour = "silent"
            owner._record(rec)
            owner._wait(_MAX_WAIT)
            self.close_connection = True
            return True
        if behaviour.kind == "status":
            rec.behaviour = f"status:{behaviour.status}"
            owner._record(rec)
            if behaviour.retry_after is not None:
                headers["retry-after"] = f"{behaviour.retry_after:g}"
            if not self._hostile_body(behaviour.status, behaviour, headers):
                error = behaviour.body or {"error": {"message": "error"}}
                status = wire.error_status(behaviour.status, error)
                payload = wire.error_body(behaviour.status, error, behaviour.retry_after)
                self._json(status, payload, headers)
            return True
        return False

    # --- answers -------------------------------------------------------------------------
    @staticmethod
    def _answer(model: str, body: dict[str, Any], behaviour: Behaviour) -> Answer:
        """What the model answers (the same whatever the protocol)."""
        if behaviour.refusal:
            return Answer(model, "", [], "content_filter", _prompt_tokens(body), 1)
        if behaviour.text is None and not behaviour.tool_calls:
            text, calls = scripted_answer(model, body)
            behaviour = replace(behaviour, text=text, tool_calls=tuple(calls))
        text = behaviour.text or ""
        finish = None  # as a model does: the answer stops at max_tokens pieces
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and not behaviour.tool_calls:
            pieces = _words(text)
            if len(pieces) > limit:
                text, finish = "".join(pieces[:limit]), "length"
        calls = []
        for i, tc in enumerate(behaviour.tool_calls):
            args = tc.get("arguments", {})
            calls.append(
                {
                    "id": tc.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                    "name": tc["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                    "index": i,
                }
            )
        finish = "tool_calls" if calls else finish or "stop"
        completion = len(_words(text)) if text else 1
        return Answer(model, text, calls, finish, _prompt_tokens(body), completion)

    def _write_chunk(self, data: bytes) -> None:
        if self._gz is not None:
            data = self._gz.compress(data) + self._gz.flush(zlib.Z_SYNC_FLUSH)
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_body(self) -> None:
        if self._gz is not None:
            data, self._gz = self._gz.flush(), None
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _raw_events(self, rec: RecordedRequest, pieces: tuple[str, ...]) -> None:
        rec.behaviour = "raw"
        self.close_connection = True
        try:
            for piece in pieces:
                data = piece.encode()
                for i in range(0, len(data), 1 << 16):
                    self._write_chunk(data[i : i + (1 << 16)])
            self._end_body()
        except OSError:
            rec.behaviour = "client-gone"

    def _stream(
        self,
        rec: RecordedRequest,
        wire: ServerDialect,
        body: dict[str, Any],
        b: Behaviour,
        answer: Answer,
        headers: dict[str, str],
    ) -> None:
        """Stream the answer; ``rec.behaviour`` says how it ended (set before the last bytes)."""
        owner = self.owner
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        if b.gzip_stream:
            self.send_header("content-encoding", "gzip")
            self._gz = zlib.compressobj(6, zlib.DEFLATED, 31)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()
        if b.raw_events:
            self._raw_events(rec, b.raw_events)
            return
        script = wire.stream(answer, body)
        for data in script.opening:
            self._write_chunk(data)
        if b.first_token_delay:
            owner._wait(b.first_token_delay)
        try:
            for i, piece in enumerate([*script.pieces, None]):
                if b.error_event_after is not None and i == b.error_event_after:
                    rec.behaviour = "error-event"
                    error = b.body or {"error": {"message": "Overloaded"}}
                    self._write_chunk(wire.error_event(500, error))
                    self._end_body()
                    return
                if piece is None:
                    break
                if b.cut_after is not None and i >= b.cut_after:
                    rec.behaviour = "cut"
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if b.stall_after is not None and i == b.stall_after:
                    owner._wait(b.stall_for)
                if b.malformed_after is not None and i == b.malformed_after:
                    self._write_chunk(wire.malformed_event())
                if b.chunk_delay:
                    owner._wait(b.chunk_delay)
                self._write_chunk(piece)
            for data in script.closing:
                self._write_chunk(data)
            rec.behaviour = "no-done" if b.omit_done else "ok"
            if not b.omit_done and script.done is not None:
                self._write_chunk(script.done)
            if b.linger_after_done:  # a server that holds the body open after [DONE]
                self.wfile.flush()
                owner._wait(b.linger_after_done)
            self._end_body()
        except OSError:
            self.close_connection = True
            rec.behaviour = "client-gone"


_OPENAI = OpenAIWire()
_AZURE = AzureWire()
_ANTHROPIC = AnthropicWire()
_GEMINI = GeminiWire()
_WIRES: dict[str, ServerDialect] = {"openai": _OPENAI, "azure-openai": _AZURE, "gemini": _GEMINI}
"""The wire whose error shapes each embedding route answers with."""
_GEMINI_PATH = re.compile(
    r"^/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent)$"
)
_AZURE_PREFIX = "/openai/deployments/"
_AZURE_SUFFIX = "/chat/completions"


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + 1
