"""A real OpenAI-compatible HTTP server on 127.0.0.1 that fails on command.

It serves ``POST /v1/chat/completions`` (plain and streamed as server-sent
events, with a usage chunk and ``[DONE]``) and ``GET /v1/models``. Each model
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

Over HTTP (for a server started with ``python -m mesh_core.testing``):
``POST /_control/behaviour`` with ``{"model": ..., "behaviour": {...}, "once": false}``,
``POST /_control/reset``, ``GET /_control/requests``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
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


@dataclass
class _RateLimit:
    limit: int
    window: float
    used: deque[float] = field(default_factory=deque)


def _words(text: str) -> list[str]:
    parts, current = [], ""
    for ch in text:
        if ch == " " and current:
            parts.append(current)
            current = ""
        current += ch
    if current:
        parts.append(current)
    return parts or [""]


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
    def _next(self, model: str) -> tuple[Behaviour, dict[str, str]]:
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
            headers = {
                "x-ratelimit-limit-requests": str(limit.limit),
                "x-ratelimit-remaining-requests": str(max(0, limit.limit - len(limit.used))),
                "x-ratelimit-reset-requests": f"{limit.window:g}s",
            }
            return behaviour, headers

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(min(seconds, _MAX_WAIT))


_KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
"""The top-level fields of OpenAI's chat-completions request. Anything else is a 400, as
OpenAI and Azure answer it, so tests catch a client that sends its own options."""


@functools.lru_cache(maxsize=4)
def _bomb(inflated: int) -> bytes:
    """A gzip body of ``inflated`` zero bytes, built in a blink: after a full flush, deflate
    compresses each identical MiB of zeros to identical bytes, so one block is repeated."""
    mib = 1 << 20
    blocks, rest = divmod(inflated, mib)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH) if blocks else b""
    block = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH) if blocks > 1 else b""
    # The trailer's CRC and length cover every block; compress them through ``c`` too.
    tail_c = c.copy()
    crc = zlib.crc32(bytes(mib)) if blocks else 0
    for _ in range(max(0, blocks - 1)):
        crc = zlib.crc32(bytes(mib), crc)
    tail = tail_c.compress(bytes(rest)) + tail_c.flush(zlib.Z_SYNC_FLUSH)
    crc = zlib.crc32(bytes(rest), crc)
    # End the deflate stream with an empty final block, then the gzip trailer.
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    final = end.flush()  # an empty final block, raw deflate
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, inflated & 0xFFFFFFFF)
    return head + block * max(0, blocks - 1) + tail + final + trailer


class _Trickle:
    """A write file that sends one byte every ``interval`` seconds (until the server stops)."""

    def __init__(self, raw: Any, interval: float, owner: FaultServer) -> None:
        self._raw, self._interval, self._owner = raw, interval, owner

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def write(self, data: bytes) -> int:
        for i in range(len(data)):
            if self._owner._stopping.is_set():
                raise OSError("the fault server is stopping")
            self._raw.write(data[i : i + 1])
            self._owner._wait(self._interval)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()


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
            self.wfile = _Trickle(self.wfile, b.trickle, self.owner)

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
                self._send_bytes(status, _bomb(b.bomb), headers, "gzip")
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
        path = self.path.rstrip("/")
        if path == "/_control/behaviour":
            self._control(body)
        elif path == "/_control/reset":
            self.owner.reset()
            self._json(200, {"ok": True})
        elif path in ("/v1/chat/completions", "/chat/completions"):
            self._completion(body)
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

    def _completion(self, body: Any) -> None:
        owner = self.owner
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._json(
                400,
                {
                    "error": {
                        "message": "body must be JSON with a 'messages' list",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        unknown = sorted(set(body) - _KNOWN_FIELDS)
        if unknown:  # as OpenAI and Azure do: a client must not leak its own options
            self._json(
                400,
                {
                    "error": {
                        "message": f"Unrecognized request argument supplied: {', '.join(unknown)}",
                        "type": "invalid_request_error",
                        "param": unknown[0],
                    }
                },
            )
            return
        model = str(body.get("model") or "")
        stream = bool(body.get("stream"))
        auth = self.headers.get("authorization")
        sent = {k.lower(): v for k, v in self.headers.items()}
        rec = RecordedRequest(
            model, body, stream, time.time(), "ok", auth, sent, self.client_address[1]
        )
        if owner.api_key is not None and auth != f"Bearer {owner.api_key}":
            rec.behaviour = "status:401"
            owner._record(rec)
            self._json(
                401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
            )
            return
        behaviour, rl_headers = owner._next(model)
        last = body["messages"][-1] if body["messages"] else {}
        if behaviour.reject_prefill and isinstance(last, dict) and last.get("role") == "assistant":
            rec.behaviour = "status:400"
            owner._record(rec)
            self._json(
                400,
                {
                    "error": {
                        "message": "assistant prefill is not supported",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        headers = {**rl_headers, **behaviour.headers}
        if behaviour.delay:
            owner._wait(behaviour.delay)
        self._behaviour = behaviour
        if behaviour.trickle:
            self.close_connection = True  # the trickling writer must not serve another request
            if not behaviour.trickle_body_only:
                self.wfile = _Trickle(self.wfile, behaviour.trickle, owner)
        if behaviour.kind == "interim":
            rec.behaviour = "interim"
            owner._record(rec)
            self.close_connection = True
            with contextlib.suppress(OSError):
                while not owner._stopping.is_set():
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    owner._wait(0.005)
            return
        if behaviour.kind == "reset":
            rec.behaviour = "reset"
            owner._record(rec)
            self._reset()
            return
        if behaviour.kind == "silent":
            rec.behaviour = "silent"
            owner._record(rec)
            owner._wait(_MAX_WAIT)
            self.close_connection = True
            return
        if behaviour.kind == "status":
            rec.behaviour = f"status:{behaviour.status}"
            owner._record(rec)
            if behaviour.retry_after is not None:
                headers["retry-after"] = f"{behaviour.retry_after:g}"
            if not self._hostile_body(behaviour.status, behaviour, headers):
                body = behaviour.body or {"error": {"message": "error"}}
                self._json(behaviour.status, body, headers)
            return
        if behaviour.text is None and not behaviour.tool_calls:
            text, calls = scripted_answer(model, body)
            behaviour = replace(behaviour, text=text, tool_calls=tuple(calls))
        text = behaviour.text or ""
        self._finish = None  # as a model does: the answer stops at max_tokens pieces
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and not behaviour.tool_calls:
            words = _words(text)
            if len(words) > limit:
                text, self._finish = "".join(words[:limit]), "length"
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + 1
        owner._record(rec)  # before replying: a fast client must find it counted
        if stream:
            self._stream(rec, body, behaviour, text, prompt_tokens, headers)
        elif not self._hostile_body(200, behaviour, headers):
            self._plain(model, behaviour, text, prompt_tokens, headers)

    # --- answers -------------------------------------------------------------------------
    @staticmethod
    def _tool_calls(behaviour: Behaviour) -> list[dict[str, Any]]:
        calls = []
        for i, tc in enumerate(behaviour.tool_calls):
            args = tc.get("arguments", {})
            calls.append(
                {
                    "id": tc.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                    "type": "function",
                    "function": {
                        "name": tc["name"],
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                    "index": i,
                }
            )
        return calls

    def _plain(
        self,
        model: str,
        behaviour: Behaviour,
        text: str,
        prompt_tokens: int,
        headers: dict[str, str],
    ) -> None:
        calls = self._tool_calls(behaviour)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        completion = len(_words(text)) if text else 1
        self._json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if calls else self._finish or "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                },
            },
            headers,
        )

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

    def _event(self, payload: Any) -> None:
        self._write_chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _stream(
        self,
        rec: RecordedRequest,
        body: dict[str, Any],
        b: Behaviour,
        text: str,
        prompt_tokens: int,
        headers: dict[str, str],
    ) -> None:
        """Stream the answer; ``rec.behaviour`` says how it ended (set before the last bytes)."""
        model = rec.model
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
        cid = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return base | {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

        self._event(delta({"role": "assistant", "content": ""}))
        if b.first_token_delay:
            owner._wait(b.first_token_delay)
        pieces: list[dict[str, Any]] = [{"content": w} for w in _words(text)] if text else []
        for call in self._tool_calls(b):
            args = call["function"]["arguments"]
            half = len(args) // 2
            pieces.append(
                {
                    "tool_calls": [
                        {
                            "index": call["index"],
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": call["function"]["name"],
                                "arguments": args[:half],
                            },
                        }
                    ]
                }
            )
            pieces.append(
                {"tool_calls": [{"index": call["index"], "function": {"arguments": args[half:]}}]}
            )
        try:
            for i, piece in enumerate(pieces):
                if b.cut_after is not None and i >= b.cut_after:
                    rec.behaviour = "cut"
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if b.stall_after is not None and i == b.stall_after:
                    owner._wait(b.stall_for)
                if b.malformed_after is not None and i == b.malformed_after:
                    self._write_chunk(b"data: {not json\n\n")
                if b.chunk_delay:
                    owner._wait(b.chunk_delay)
                self._event(delta(piece))
            finish = "tool_calls" if b.tool_calls else self._finish or "stop"
            self._event(delta({}, finish))
            opts = body.get("stream_options") or {}
            if opts.get("include_usage"):
                completion = max(1, len(pieces))
                self._event(
                    base
                    | {
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion,
                            "total_tokens": prompt_tokens + completion,
                        },
                    }
                )
            rec.behaviour = "no-done" if b.omit_done else "ok"
            if not b.omit_done:
                self._write_chunk(b"data: [DONE]\n\n")
            if b.linger_after_done:  # a server that holds the body open after [DONE]
                self.wfile.flush()
                owner._wait(b.linger_after_done)
            self._end_body()
        except OSError:
            self.close_connection = True
            rec.behaviour = "client-gone"
