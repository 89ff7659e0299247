"""Property-based tests: whatever the input, a valid result or a documented error."""

from __future__ import annotations

import string
import zlib

from hypothesis import HealthCheck, given, settings, strategies as st

from mesh_core._clock import ManualClock
from mesh_core._config import load_config
from mesh_core._errors import ConfigurationError, NoAvailableModelError, ProviderError
from mesh_core._state import ModelSnapshot
from mesh_core._types import CompletionChunk, CompletionRequest
from mesh_core.providers._base import sse_chunks
from mesh_core.providers._decoding import BodyDecoder
from mesh_core.providers._wire import SSEDecoder, classify_error, parse_chunk, parse_completion
from mesh_core.strategies import SHIPPED_STRATEGIES, StrategyContext

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
keys = st.sampled_from(
    [
        "providers",
        "models",
        "pools",
        "storage",
        "observability",
        "capabilities",
        "base_url",
        "api_key",
        "provider",
        "capability",
        "strategy",
        "deactivation",
        "retry_limit",
        "cron",
        "maintenance_window",
        "recovery",
        "cooldown",
        "p",
        "m.x",
        "chat",
        "timeouts",
        "total",
        "request_limit",
        "budget_limit",
        "backend",
        "pricing",
        "features",
        "rate_limit",
        "x",
    ]
) | st.text(string.ascii_lowercase + "._-", max_size=10)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


@SETTINGS
@given(st.dictionaries(keys, json_like, max_size=6))
def test_any_config_is_valid_or_a_configuration_error(data):
    try:
        load_config(data, env={})
    except ConfigurationError as exc:
        assert exc.errors and all(isinstance(p, str) and m for p, m in exc.errors)


@SETTINGS
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_body_parses_or_is_a_classified_error(body):
    try:
        parsed = parse_completion(body)
    except ProviderError as exc:
        assert exc.kind.value == "malformed_response"
    else:
        assert parsed.content is None or isinstance(parsed.content, str)


json_bodies = st.dictionaries(
    st.sampled_from(["choices", "usage", "model", "id", "error"]), json_like, max_size=4
)


@SETTINGS
@given(json_bodies)
def test_any_json_body_parses_or_is_a_classified_error(body):
    import json

    try:
        parse_completion(json.dumps(body))
    except ProviderError as exc:
        assert exc.kind.value == "malformed_response"


@SETTINGS
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_any_byte_stream_yields_chunks_or_a_classified_error(pieces):
    decoder = SSEDecoder()
    try:
        for raw in [*pieces, None]:
            for chunk in sse_chunks(decoder, raw):
                assert chunk is None or isinstance(chunk, CompletionChunk)
    except ProviderError as exc:
        assert exc.kind.value in ("malformed_response", "server_error")


@SETTINGS
@given(st.text(max_size=200))
def test_any_sse_payload_parses_or_is_a_classified_error(data):
    try:
        parse_chunk(data)
    except ProviderError as exc:
        assert exc.kind.value in ("malformed_response", "server_error")


@SETTINGS
@given(
    st.integers(400, 599),
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["retry-after", "retry-after-ms", "x"]), st.text(max_size=20), max_size=2
    ),
)
def test_any_error_reply_is_classified_with_its_status(status, body, headers):
    err = classify_error(status, headers, body)
    assert isinstance(err, ProviderError) and err.status_code == status
    assert err.retry_after is None or err.retry_after >= 0


snapshots = st.builds(
    ModelSnapshot,
    model_id=st.sampled_from(["a", "b", "c", "d", "e"]),
    provider_id=st.sampled_from(["p", "q"]),
    status=st.just("active"),
    failure_count=st.integers(0, 5),
    error_rate=st.floats(0, 1),
    cooldown_remaining=st.just(0.0),
    quota_used=st.integers(0, 100),
    tokens_used=st.integers(0, 1000),
    cost_accumulated=st.floats(0, 10),
    latency_history=st.lists(st.floats(0.001, 5), max_size=4).map(tuple),
    requests_remaining=st.none() | st.integers(0, 100),
    requests_limit=st.none() | st.integers(1, 100),
    input_price=st.none() | st.floats(0, 5),
    output_price=st.none() | st.floats(0, 5),
)


@SETTINGS
@given(
    st.sampled_from(SHIPPED_STRATEGIES),
    st.lists(snapshots, max_size=5, unique_by=lambda s: s.model_id),
    st.none() | st.sampled_from(["s1", "s2"]),
)
def test_any_snapshots_give_an_active_candidate_deterministically(cls, candidates, session):
    request = CompletionRequest(
        model="p", messages=[{"role": "user", "content": "x"}], session_id=session
    )

    def run():
        strategy = cls(context=StrategyContext(clock=ManualClock(0.0)))
        strategy.bind("pool", ["a", "b", "c", "d", "e"])
        return [strategy.select(candidates, request).model_id for _ in range(3)]

    if not candidates:
        try:
            run()
        except NoAvailableModelError:
            return
        raise AssertionError("no candidates must raise NoAvailableModelError")
    chosen = run()
    assert set(chosen) <= {c.model_id for c in candidates}
    assert chosen == run()  # the same inputs give the same choices


@SETTINGS
@given(
    st.lists(
        st.sampled_from([b"data: x", b"data: {}", b"\n", b"\r\n", b": c", b"\xff"]), max_size=30
    ),
    st.data(),
)
def test_events_do_not_depend_on_how_the_bytes_are_split(pieces, data):
    whole = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=10)))
    parts = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]

    def events(chunks):
        decoder = SSEDecoder()
        out = [e for chunk in chunks for e in decoder.feed(chunk)]
        return out + list(decoder.close())

    assert events(parts) == events([whole])


def _encode(raw: bytes, encoding: str | None) -> bytes:
    if encoding is None:
        return raw
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[encoding]
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(raw) + c.flush()


@SETTINGS
@given(
    st.binary(max_size=3000) | st.integers(0, 5000).map(bytes),
    st.sampled_from([None, "gzip", "deflate", "raw-deflate"]),
    st.integers(1, 200),
    st.integers(0, 4000),
    st.booleans(),
)
def test_a_body_decodes_whole_or_stops_at_its_cap(raw, encoding, step, limit, truncate):
    wire = _encode(raw, encoding)
    header = "deflate" if encoding == "raw-deflate" else encoding
    decoder = BodyDecoder(header, limit, truncate=truncate)
    out = []
    try:
        for i in range(0, len(wire), step):
            out.append(decoder.feed(wire[i : i + step]))
            if decoder.full:
                break
        else:
            out.append(decoder.flush())
    except ProviderError as exc:
        assert exc.kind.value == "malformed_response"
        assert not truncate and len(raw) > limit
        return
    assert b"".join(out) == raw[:limit]
    assert truncate or len(raw) <= limit
