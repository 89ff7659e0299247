"""Embedding dialects and space rules, sans I/O: request bodies, endpoints, reply parsing
(every malformed shape is a MalformedResponseError), the space syntax and the
configuration rules. The request path over HTTP is in test_embeddings.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mesh_core import ConfigurationError, EmbeddingRequest, load_config
from mesh_core._errors import MalformedResponseError
from mesh_core._spaces import embedding_specs, parse_space
from mesh_core.providers import AzureOpenAIDialect, GeminiDialect, OpenAIDialect
from mesh_core.providers._dialect import EmbeddingDialect
from mesh_core.providers._embeddings import check_vectors
from mesh_core.testing._embedding_wire import fake_vector


def req(*texts: str, **kw: Any) -> EmbeddingRequest:
    return EmbeddingRequest(model="pool", texts=list(texts), **kw)


def openai_body(vectors: list[Any], **extra: Any) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return json.dumps({"object": "list", "data": data, **extra}).encode()


# --- request bodies and endpoints -----------------------------------------------------


def test_openai_payload_asks_for_floats_and_sends_dimensions_only_when_set() -> None:
    d = OpenAIDialect()
    assert d.build_embedding_payload(req("a", "b"), "te3") == {
        "model": "te3",
        "input": ["a", "b"],
        "encoding_format": "float",
    }
    body = d.build_embedding_payload(req("a", dimensions=256, extra={"user": "u1"}), "te3")
    assert body["dimensions"] == 256 and body["user"] == "u1"
    assert d.embedding_endpoint("te3", 5) == ("/embeddings", {})


def test_azure_endpoint_is_the_deployment_with_the_api_version() -> None:
    d = AzureOpenAIDialect("2024-06-01", deployments={"te3": "my dep"})
    path, query = d.embedding_endpoint("te3", 3)
    assert path == "/openai/deployments/my%20dep/embeddings"
    assert query == {"api-version": "2024-06-01"}
    assert d.embedding_endpoint("other", 1)[0] == "/openai/deployments/other/embeddings"


def test_gemini_uses_embed_content_for_one_text_and_batch_for_several() -> None:
    d = GeminiDialect()
    assert d.embedding_endpoint("text-embedding-004", 1) == (
        "/v1beta/models/text-embedding-004:embedContent",
        {},
    )
    assert d.embedding_endpoint("models/text-embedding-004", 2)[0].endswith(
        "/models/text-embedding-004:batchEmbedContents"
    )
    one = d.build_embedding_payload(req("hi", dimensions=64), "text-embedding-004")
    assert one == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "hi"}]},
        "outputDimensionality": 64,
    }
    batch = d.build_embedding_payload(req("a", "b", extra={"taskType": "RETRIEVAL_DOCUMENT"}), "e")
    assert [r["content"]["parts"][0]["text"] for r in batch["requests"]] == ["a", "b"]
    assert all(r["model"] == "models/e" and r["taskType"] for r in batch["requests"])
    assert "outputDimensionality" not in batch["requests"][0]


def test_anthropic_has_no_embedding_hooks_and_the_others_do() -> None:
    from mesh_core.providers import AnthropicDialect

    assert not isinstance(AnthropicDialect(), EmbeddingDialect)
    for d in (OpenAIDialect(), AzureOpenAIDialect(), GeminiDialect()):
        assert isinstance(d, EmbeddingDialect)


# --- replies ---------------------------------------------------------------------------


def test_openai_reply_is_put_back_in_input_order_with_its_usage() -> None:
    body = json.dumps(
        {
            "data": [
                {"index": 1, "embedding": [0.0, 1.0]},
                {"index": 0, "embedding": [1, 0]},  # integers are numbers too
            ],
            "model": "te3-0125",
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        }
    ).encode()
    parsed = OpenAIDialect().parse_embeddings(body, req("a", "b"))
    assert parsed.vectors == [[1.0, 0.0], [0.0, 1.0]]
    assert all(type(x) is float for v in parsed.vectors for x in v)
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 7
    assert parsed.usage.completion_tokens == 0 and parsed.provider_model == "te3-0125"


def test_unusable_usage_is_missing_not_trusted() -> None:
    body = openai_body([[0.5]], usage={"prompt_tokens": -3, "total_tokens": "x"})
    assert OpenAIDialect().parse_embeddings(body, req("a")).usage is None


BAD_OPENAI = {
    "not json": b"{nope",
    "not an object": b"[1, 2]",
    "no data": json.dumps({"object": "list"}).encode(),
    "wrong count": openai_body([[0.1, 0.2]]),
    "non-numeric": openai_body([[0.1, "0.2"], [0.3, 0.4]]),
    "boolean": openai_body([[True, 0.2], [0.3, 0.4]]),
    "null value": openai_body([[None, 0.2], [0.3, 0.4]]),
    "NaN": b'{"data": [{"index": 0, "embedding": [NaN, 1]}, {"index": 1, "embedding": [1, 1]}]}',
    "infinity": b'{"data": [{"index": 0, "embedding": [1, 1]}, '
    b'{"index": 1, "embedding": [Infinity, 1]}]}',
    "huge integer": openai_body([[10**400, 1], [1, 1]]),
    "overflowing": openai_body([[1e308, 1e308], [1, 1]]),
    "ragged": openai_body([[0.1, 0.2], [0.3]]),
    "empty vector": openai_body([[], []]),
    "missing embedding": json.dumps({"data": [{"index": 0}, {"index": 1}]}).encode(),
    "repeated index": json.dumps(
        {"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [1]}]}
    ).encode(),
    "index out of range": json.dumps(
        {"data": [{"index": 0, "embedding": [1]}, {"index": 5, "embedding": [1]}]}
    ).encode(),
    "base64": json.dumps(
        {"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": "AAAA"}]}
    ).encode(),
    "item not an object": json.dumps({"data": [[1.0], [2.0]]}).encode(),
    "nested too deep": b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("body", BAD_OPENAI.values(), ids=list(BAD_OPENAI))
def test_malformed_openai_replies_are_malformed_response_errors(body: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        OpenAIDialect().parse_embeddings(body, req("a", "b"))


def test_gemini_replies_single_and_batch() -> None:
    d = GeminiDialect()
    one = d.parse_embeddings(b'{"embedding": {"values": [0.1, 0.2]}}', req("a"))
    assert one.vectors == [[0.1, 0.2]] and one.usage is None
    batch = d.parse_embeddings(
        b'{"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}', req("a", "b")
    )
    assert batch.vectors == [[1.0], [2.0]]


BAD_GEMINI = {
    "no embedding": (b"{}", 1),
    "values missing": (b'{"embedding": {}}', 1),
    "no embeddings list": (b'{"embeddings": {"values": [1]}}', 2),
    "too few": (b'{"embeddings": [{"values": [1.0]}]}', 2),
    "string value": (b'{"embeddings": [{"values": ["1"]}, {"values": [1]}]}', 2),
    "NaN": (b'{"embedding": {"values": [NaN]}}', 1),
}


@pytest.mark.parametrize("case", BAD_GEMINI.values(), ids=list(BAD_GEMINI))
def test_malformed_gemini_replies_are_malformed_response_errors(case: tuple[bytes, int]) -> None:
    body, n = case
    with pytest.raises(MalformedResponseError):
        GeminiDialect().parse_embeddings(body, req(*["t"] * n))


def test_check_vectors_counts_and_converts() -> None:
    assert check_vectors([[1, 2.5]], 1) == [[1.0, 2.5]]
    with pytest.raises(MalformedResponseError, match="2 embedding vectors for 3 inputs"):
        check_vectors([[1.0], [1.0]], 3)


def test_the_fault_servers_vectors_are_deterministic_unit_vectors() -> None:
    v = fake_vector("hello", "te3", 16)
    assert v == fake_vector("hello", "te3", 16) and len(v) == 16
    assert abs(sum(x * x for x in v) - 1.0) < 1e-9
    assert v != fake_vector("hello", "other", 16) and v != fake_vector("hellO", "te3", 16)


# --- spaces ----------------------------------------------------------------------------


def test_parse_space() -> None:
    assert parse_space("openai/te3@1536") == ("openai/te3@1536", 1536)
    assert parse_space("openai/te3", 256) == ("openai/te3@256", 256)
    assert parse_space("openai/te3@256", 256) == ("openai/te3@256", 256)
    for bad, dims, why in [
        ("openai/te3", None, "has no dimension"),
        ("openai/te3@1536", 256, "must agree"),
        ("open ai@3", None, "without spaces"),
        ("x@0", None, "must be 1 to"),
        ("", None, "without spaces"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_space(bad, dims)


def embedding_config(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "providers": {
            "oa": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"},
            "az": {"type": "azure", "base_url": "http://127.0.0.1:9"},
            "an": {"type": "anthropic", "base_url": "http://127.0.0.1:9"},
        },
        "models": {
            "oa.te3": {
                "provider": "oa",
                "name": "text-embedding-3-small",
                "capabilities": ["text-embeddings"],
                "embedding_space": "openai/te3-small@1536",
            },
            "az.te3": {
                "provider": "az",
                "name": "te3",
                "capabilities": ["text-embeddings"],
                "embedding_space": "openai/te3-small@1536",
            },
        },
        "pools": {"embeddings": {"capability": "text-embeddings"}},
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        cfg[section][name] = value
    return cfg


def problems(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as info:
        load_config(cfg)
    return str(info.value)


def test_a_pool_of_one_space_loads_and_its_specs_are_known() -> None:
    specs = embedding_specs(load_config(embedding_config()))
    assert specs["oa.te3"].space == specs["az.te3"].space == "openai/te3-small@1536"
    assert specs["oa.te3"].dimensions == 1536 and specs["oa.te3"].send_dimensions is None


def test_a_pool_mixing_spaces_is_refused_naming_the_pool_and_the_spaces() -> None:
    other = {
        "provider": "oa",
        "name": "text-embedding-3-large",
        "capabilities": ["text-embeddings"],
        "embedding_space": "openai/te3-large@3072",
    }
    text = problems(embedding_config(models__oa_large=other))
    assert "pools.embeddings" in text and "mixes embedding spaces" in text
    assert "openai/te3-small@1536" in text and "openai/te3-large@3072" in text
    assert "oa_large" in text and "mixed_embedding_spaces" in text
    allowed = embedding_config(models__oa_large=other)
    allowed["pools"]["embeddings"]["mixed_embedding_spaces"] = True
    load_config(allowed)


def test_an_embedding_model_without_a_space_is_an_error() -> None:
    cfg = embedding_config()
    del cfg["models"]["az.te3"]["embedding_space"]
    text = problems(cfg)
    assert "models.az.te3.embedding_space" in text and "must declare its embedding space" in text


def test_dimensions_must_agree_with_the_space() -> None:
    cfg = embedding_config()
    cfg["models"]["oa.te3"]["dimensions"] = 256
    text = problems(cfg)
    assert "models.oa.te3.embedding_space" in text and "must agree" in text
    cfg["models"]["oa.te3"]["embedding_space"] = "openai/te3-small"  # the dimension from it
    cfg["models"]["az.te3"]["embedding_space"] = "openai/te3-small@256"
    cfg["models"]["az.te3"]["dimensions"] = 256
    specs = embedding_specs(load_config(cfg))
    assert specs["oa.te3"].space == specs["az.te3"].space == "openai/te3-small@256"
    assert specs["oa.te3"].send_dimensions == 256


def test_an_anthropic_embedding_model_is_a_clear_error() -> None:
    cfg = embedding_config()
    cfg["models"]["an.claude"] = {
        "provider": "an",
        "name": "claude",
        "capabilities": ["text-embeddings"],
        "embedding_space": "x@8",
    }
    text = problems(cfg)
    assert "models.an.claude" in text and "has no embeddings API" in text
