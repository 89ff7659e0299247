"""A hostile or broken provider costs one attempt, never the caller's answer or memory.

Over real sockets on 127.0.0.1, sync and async: decompression bombs (as answers and as error
bodies), answers and event lines past their size caps, gzip-encoded streams, JSON that breaks
the parser (10,000 levels deep) or the schema (``tool_calls: 5``, ``choices: ["x"]``), usage
counts that are strings, NaN, negative or absurd, a proxy that demands credentials (407), and
credentials in ``base_url``. Each malformed reply is a classified MalformedResponseError that
counts against its model and fails over to the next one.
"""

from __future__ import annotations

import base64
import json
import logging
import resource
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mesh_core import Mesh
from mesh_core._config import load_config
from mesh_core._errors import ConfigurationError
from mesh_core.providers import OpenAICompatibleProvider
from mesh_core.providers._wire import SSEDecoder, classify_error, parse_completion
from mesh_core.testing import faults
from tests.conftest import MODES, complete, config_for, stream

TIMEOUTS = {"connect": "2s", "first_token": "10s", "stall": "10s", "total": "20s"}
MIB = 1 << 20
MALFORMED = "malformed_response"


def two_providers(servers, **p1) -> dict:
    """Providers p1 and p2 (one model each, pool 'chat'); ``p1`` adds to p1's section."""
    cfg = config_for(servers)
    for p in cfg["providers"].values():
        p["timeouts"] = dict(TIMEOUTS)
    cfg["providers"]["p1"].update(p1)
    cfg["models"]["p1.m1"]["pricing"] = {"input_per_1k": 1.0, "output_per_1k": 2.0}
    return cfg


@pytest.fixture
def mesh(servers):
    m = Mesh.from_config(two_providers(servers))
    yield m
    m.close()


def outcomes(r):
    return [(a.model_id, a.outcome) for a in r.attempts]


def assert_failed_over(mesh, r, kind: str = MALFORMED) -> None:
    assert r.model == "p2.m2", outcomes(r)
    assert outcomes(r)[0] == ("p1.m1", kind)
    assert mesh.snapshot("p1.m1").failure_count == 1  # counted against the model


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def completion(**fields) -> str:
    """A completion body (JSON text) with ``fields`` replacing the defaults."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    body["choices"][0]["finish_reason"] = "stop"
    body.update(fields)
    return json.dumps(body)


def event(payload) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def delta(d: dict, finish: str | None = None) -> str:
    return event({"choices": [{"index": 0, "delta": d, "finish_reason": finish}]})


DEEP = "[" * 10_000 + "]" * 10_000


# --- size caps -----------------------------------------------------------------------------


@MODES
def test_a_gzip_bomb_answer_stops_at_the_cap_and_fails_over(mesh, servers, mode):
    servers[0].set("m1", faults.gzip_bomb(1200 * MIB))  # 1.2 MB on the wire
    before = peak_rss_mib()
    t0 = time.monotonic()
    r = complete(mesh, mode, "chat", "hi")
    assert time.monotonic() - t0 < 15
    assert_failed_over(mesh, r)
    assert "max_response_bytes" in r.attempts[0].error
    assert peak_rss_mib() - before < 400  # inflated to 32 MiB at most, never 1.2 GB


@MODES
def test_a_gzip_bomb_error_body_is_read_only_up_to_the_error_cap(mesh, servers, mode):
    servers[0].set("m1", faults.gzip_bomb(1200 * MIB, status=500))
    before = peak_rss_mib()
    r = complete(mesh, mode, "chat", "hi")
    assert outcomes(r) == [
        ("p1.m1", "server_error"),  # still classified by its status
        ("p1.m1", "server_error"),
        ("p2.m2", "success"),
    ]
    assert r.attempts[0].status_code == 500
    assert peak_rss_mib() - before < 100


@MODES
def test_a_gzip_bomb_error_body_on_a_stream_is_read_only_up_to_the_error_cap(mesh, servers, mode):
    servers[0].set("m1", faults.gzip_bomb(1200 * MIB, status=503))
    before = peak_rss_mib()
    last = stream(mesh, mode, "chat", "hi")[-1]
    assert last.model == "p2.m2" and outcomes(last)[0] == ("p1.m1", "server_error")
    assert peak_rss_mib() - before < 100


@MODES
def test_the_response_cap_is_per_provider(servers, mode):
    cfg = two_providers(servers, limits={"max_response_bytes": "4KiB"})
    servers[0].set("m1", faults.reply("word " * 2000))
    servers[1].set("m2", faults.reply("word " * 2000))
    with Mesh.from_config(cfg) as mesh:
        r = complete(mesh, mode, "chat", "hi")
        assert_failed_over(mesh, r)  # p2 has the default cap, 32 MiB
    with Mesh.from_config(cfg) as mesh:  # a stream counts its bytes too, after its first token
        chunks = stream(mesh, mode, "chat", "hi")  # and is continued elsewhere past the cap
        assert chunks[-1].model == "p2.m2" and chunks[-1].finish_reason == "stop"
        assert [c.continued_from for c in chunks if c.continued_from] == ["p1.m1"]
        broke = [a for a in chunks[-1].attempts if a.outcome == "stream_interrupted"]
        assert "max_response_bytes" in broke[0].error
        assert mesh.snapshot("p1.m1").failure_count == 1


@MODES
def test_an_endless_event_line_fails_over(mesh, servers, mode):
    servers[0].set("m1", faults.raw_stream("data: " + "x" * (5 * MIB)))  # the cap is 4 MiB
    t0 = time.monotonic()
    chunks = stream(mesh, mode, "chat", "hi")
    assert time.monotonic() - t0 < 15
    assert_failed_over(mesh, chunks[-1])
    assert "max_sse_line_bytes" in chunks[-1].attempts[0].error


def test_the_event_decoder_is_linear_in_the_line_length():
    decoder = SSEDecoder(max_line_bytes=32 * MIB)
    piece = b"x" * 512
    t0 = time.perf_counter()
    assert list(decoder.feed(b"data: ")) == []
    for _ in range(16 * MIB // len(piece)):  # 32,768 pieces of one 16 MiB line
        assert list(decoder.feed(piece)) == []
    (data,) = decoder.feed(b"\n\n")
    assert len(data) == 16 * MIB
    assert time.perf_counter() - t0 < 5  # quadratic: ~256 GB copied, minutes


def test_the_event_decoder_caps_an_event_of_many_lines():
    decoder = SSEDecoder(max_line_bytes=1024)
    with pytest.raises(Exception) as info:
        for _ in range(100):
            list(decoder.feed(b"data: " + b"x" * 100 + b"\n"))
    assert info.value.kind.value == MALFORMED


# --- encodings ----------------------------------------------------------------------------


@MODES
def test_a_gzip_encoded_stream_is_decoded(mesh, servers, mode):
    servers[0].set("m1", faults.gzip_stream())
    chunks = stream(mesh, mode, "chat", "hello there")
    assert "".join(c.content for c in chunks) == "Hello from m1. You said: hello there"
    assert outcomes(chunks[-1]) == [("p1.m1", "success")]


@MODES
def test_a_corrupt_gzip_body_fails_over(mesh, servers, mode):
    broken = faults.raw_body("not gzip at all").with_headers(content_encoding="gzip")
    servers[0].set("m1", broken)
    assert_failed_over(mesh, complete(mesh, mode, "chat", "hi"))


# --- malformed JSON ------------------------------------------------------------------------

MALFORMED_BODIES = {
    "10,000 levels deep": DEEP,
    "deep inside a valid answer": completion(extra="@@").replace('"@@"', DEEP),
    "tool_calls: 5": completion(
        choices=[{"message": {"role": "assistant", "content": None, "tool_calls": 5}}]
    ),
    "tool call arguments: 5": completion(
        choices=[
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"function": {"name": "f", "arguments": 5}}],
                }
            }
        ]
    ),
    "choices: ['x']": completion(choices=["x"]),
    "finish_reason: 7": completion(choices=[{"message": {"content": "hi"}, "finish_reason": 7}]),
    "not an object": "[1, 2]",
}


@MODES
@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_a_malformed_answer_fails_over(mesh, servers, mode, body):
    servers[0].set("m1", faults.raw_body(body))
    assert_failed_over(mesh, complete(mesh, mode, "chat", "hi"))


MALFORMED_STREAMS = {
    "choices: ['x']": event({"choices": ["x"]}),
    "tool-call index 'a'": delta(
        {"tool_calls": [{"index": "a", "id": "c", "function": {"name": "f", "arguments": ""}}]}
    ),
    "tool-call function 'f'": delta({"tool_calls": [{"index": 0, "function": "f"}]}),
    "10,000 levels deep": f"data: {DEEP}\n\n",
    "delta: 5": event({"choices": [{"delta": 5}]}),
    "finish_reason: []": event({"choices": [{"delta": {"content": "x"}, "finish_reason": []}]}),
}


@MODES
@pytest.mark.parametrize("events", MALFORMED_STREAMS.values(), ids=MALFORMED_STREAMS.keys())
def test_a_malformed_stream_fails_over_before_its_first_token(mesh, servers, mode, events):
    servers[0].set("m1", faults.raw_stream(events, "data: [DONE]\n\n"))
    chunks = stream(mesh, mode, "chat", "hi")
    assert_failed_over(mesh, chunks[-1])
    assert "".join(c.content for c in chunks) == "Hello from m2. You said: hi"


def test_every_parse_failure_is_a_classified_error():
    """The parsers are total: nothing but MalformedResponseError comes out of them."""
    for body in [*MALFORMED_BODIES.values(), b"\xff\xfe", b"{" * 100_000, "NaN", '"x"']:
        with pytest.raises(Exception) as info:
            parse_completion(body)
        assert info.value.kind.value == MALFORMED


def test_an_error_body_that_breaks_the_parser_is_still_classified():
    err = classify_error(500, {}, DEEP.encode())
    assert err.kind.value == "server_error" and err.status_code == 500
    err = classify_error(429, {"retry-after": "nan"}, b'{"error": {"message": 5, "code": []}}')
    assert err.kind.value == "rate_limited" and err.retry_after is None


@MODES
def test_absurd_rate_limit_headers_are_ignored(mesh, servers, mode):
    hostile = faults.ok().with_headers(
        x_ratelimit_remaining_requests="inf",
        x_ratelimit_limit_requests="nan",
        x_ratelimit_remaining_tokens="-5",
        x_ratelimit_reset_requests="1e999s",
    )
    servers[0].set("m1", hostile)
    assert complete(mesh, mode, "chat", "hi").model == "p1.m1"
    assert stream(mesh, mode, "chat", "hi")[-1].model == "p1.m1"


# --- usage and metadata -----------------------------------------------------------------

BAD_USAGE = {
    "strings": {"prompt_tokens": "many", "completion_tokens": "1", "total_tokens": "x"},
    "NaN": {"prompt_tokens": float("nan"), "completion_tokens": 1},
    "infinite": {"prompt_tokens": float("inf"), "completion_tokens": 1},
    "negative": {"prompt_tokens": -1000, "completion_tokens": -5, "total_tokens": -1005},
    "absurd": {"prompt_tokens": 1e23, "completion_tokens": 1},
    "fractional": {"prompt_tokens": 2.5, "completion_tokens": 1},
    "booleans": {"prompt_tokens": True, "completion_tokens": False},
    "a list": [1, 2, 3],
}


@MODES
@pytest.mark.parametrize("usage", BAD_USAGE.values(), ids=BAD_USAGE.keys())
def test_invalid_usage_is_dropped_and_never_poisons_counters_or_cost(servers, mode, usage):
    """Unusable usage counts are ignored (as if the provider sent none): the answer is good,
    and tokens and cost stay finite and never negative."""
    with Mesh.from_config(two_providers(servers)) as mesh:
        servers[0].set("m1", faults.raw_body(completion(usage=usage)))
        r = complete(mesh, mode, "chat", "hi")
        assert r.model == "p1.m1" and r.content == "hi"
        u = r.usage
        assert all(isinstance(n, int) and 0 <= n < 10**9 for n in u.to_dict().values())
        assert 0 <= r.cost < 1
        pieces = [
            delta({"content": "hi"}),
            delta({}, "stop"),
            event({"choices": [], "usage": usage}),
        ]
        servers[0].set("m1", faults.raw_stream(*pieces, "data: [DONE]\n\n"))
        last = stream(mesh, mode, "chat", "hi")[-1]
        assert last.model == "p1.m1" and last.usage.total_tokens > 0  # estimated
        stats = json.dumps(mesh.stats(), allow_nan=False)  # finite numbers only
        model = mesh.stats()["models"]["p1.m1"]
    assert model["tokens"] >= 0 and 0 <= model["cost"] < 1, stats


@MODES
def test_a_bad_created_timestamp_is_replaced_not_fatal(mesh, servers, mode):
    servers[0].set("m1", faults.raw_body(completion(created="yesterday", id=5, model=[1])))
    r = complete(mesh, mode, "chat", "hi")
    assert r.model == "p1.m1" and r.content == "hi"
    assert abs(r.created - time.time()) < 600 and isinstance(r.id, str)


@MODES
def test_null_content_with_stop_is_an_empty_answer(mesh, servers, mode):
    servers[0].set(
        "m1",
        faults.raw_body(
            completion(
                choices=[
                    {"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}
                ]
            )
        ),
    )
    r = complete(mesh, mode, "chat", "hi")
    assert r.model == "p1.m1" and r.content == "" and r.finish_reason == "stop"
    assert outcomes(r) == [("p1.m1", "success")]


# --- a proxy that wants credentials ------------------------------------------------------------

PROXY_SECRET = "pr0xy-S3CRET-pw"


class _Demanding(BaseHTTPRequestHandler):
    """A forward proxy that refuses every request with 407, echoing what it was sent."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        echo = f"bad credentials {self.headers.get('proxy-authorization')} ({PROXY_SECRET})"
        data = json.dumps({"error": {"message": echo}}).encode()
        self.send_response(407)
        self.send_header("proxy-authenticate", 'Basic realm="corp"')
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def demanding_proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Demanding)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@MODES
def test_a_proxy_answering_407_is_the_providers_connection_failure(
    servers, demanding_proxy, mode, caplog
):
    port = demanding_proxy.server_address[1]
    cfg = two_providers(servers, proxy=f"http://mesh:{PROXY_SECRET}@127.0.0.1:{port}")
    token = base64.b64encode(f"mesh:{PROXY_SECRET}".encode()).decode()
    seen: list[str] = []
    record = seen.append
    with caplog.at_level(logging.DEBUG):
        for call in (complete, stream):
            with Mesh.from_config(cfg) as mesh:
                spans = _record_spans(mesh)
                mesh.on(None, lambda e: record(repr(e)))
                result = call(mesh, mode, "chat", "hi")
                r = result[-1] if call is stream else result
                assert_failed_over(mesh, r, "connection_error")
                assert r.attempts[0].status_code == 407
                seen += [repr(result), repr(mesh.stats()), repr(mesh.providers)]
                seen += [repr(mesh.config), *spans()]
    seen += [rec.getMessage() + repr(getattr(rec, "modelmesh", "")) for rec in caplog.records]
    text = "\n".join(seen)
    assert "407" in text
    assert PROXY_SECRET not in text and token not in text


def _record_spans(mesh):
    """Spans of ``mesh`` into a local in-memory exporter; returns a reader of their text."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = mesh._router.tracing
    if not tracing.enabled:
        pytest.skip("opentelemetry-api is not installed")
    tracing._tracer, tracing._configured = provider.get_tracer("test"), True
    return lambda: [
        f"{s.name} {dict(s.attributes)} {s.status.description}"
        for s in exporter.get_finished_spans()
    ]


# --- credentials in base_url, repr -------------------------------------------------------------


def test_credentials_in_base_url_are_sent_as_basic_auth_and_never_shown(servers):
    cfg = two_providers(servers)
    url = servers[0].base_url.replace("http://", "http://alice:s%40fe-PW@")
    cfg["providers"]["p1"]["base_url"] = url
    with Mesh.from_config(cfg) as mesh:
        assert mesh.complete("chat", "hi").model == "p1.m1"
        list(mesh.stream("chat", "hi"))
        provider = mesh.providers["p1"]
        shown = [repr(provider), str(provider), provider.base_url, repr(mesh.config)]
        shown += [repr(mesh.providers), str(mesh.config.providers["p1"])]
    expected = "Basic " + base64.b64encode(b"alice:s@fe-PW").decode()
    assert {r.authorization for r in servers[0].requests} == {expected}
    text = "\n".join(shown)
    assert "s%40fe-PW" not in text and "s@fe-PW" not in text and expected[6:] not in text
    assert servers[0].base_url in repr(provider)  # the URL itself is shown, without userinfo


def test_credentials_in_base_url_and_an_api_key_conflict():
    cfg = {"providers": {"p": {"base_url": "https://bob:hunter2@example.test/v1", "api_key": "k"}}}
    with pytest.raises(ConfigurationError) as info:
        load_config(cfg)
    (path, problem), *_ = info.value.errors
    assert path == "providers.p.api_key" and "base_url" in problem
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="both"):
        OpenAICompatibleProvider("p", base_url="https://bob:hunter2@example.test/v1", api_key="k")


@pytest.mark.parametrize(
    "url",
    ["ftp://bob:hunter2@example.test/v1", "example.test/v1", "", "http://", "https:///v1", "x"],
)
def test_a_base_url_that_is_not_http_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError) as info:
        load_config({"providers": {"p": {"base_url": url}}})
    (path, problem), *_ = info.value.errors
    assert path == "providers.p.base_url" and "HTTP or HTTPS URL" in problem
    assert "hunter2" not in str(info.value)


def test_secret_headers_are_never_shown_and_redacted_when_echoed(servers):
    cfg = two_providers(servers, headers={"x-api-key": "HDR-S3CRET-0123"})
    servers[0].set("m1", faults.error(401, "key HDR-S3CRET-0123 is not valid"))
    with Mesh.from_config(cfg) as mesh:
        r = mesh.complete("chat", "hi")
        text = repr(mesh.providers) + repr(r.attempts) + str(mesh.providers["p1"])
    assert r.model == "p2.m2" and "HDR-S3CRET" not in text
    assert servers[0].requests[0].headers["x-api-key"] == "HDR-S3CRET-0123"  # sent, though


def test_limits_are_validated():
    cfg = load_config({"providers": {"p": {"limits": {"max_error_bytes": "1KiB"}}}})
    limits = cfg.providers["p"].limits
    assert (limits.max_response_bytes, limits.max_error_bytes, limits.max_sse_line_bytes) == (
        32 * MIB,
        1024,
        4 * MIB,
    )
    with pytest.raises(ConfigurationError) as info:
        load_config({"providers": {"p": {"limits": {"max_response_bytes": 10, "max_line": 5}}}})
    paths = [p for p, _ in info.value.errors]
    assert "providers.p.limits.max_response_bytes" in paths
    assert "providers.p.limits.max_line" in paths
