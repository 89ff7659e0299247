"""The fault server's embedding endpoints, as the official SDKs see them: ``openai``'s
``OpenAI`` and ``AzureOpenAI`` and ``google-genai`` accept its replies and its errors, so the
shapes the mesh's dialects are tested against are the real services' shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mesh_core.testing import FaultServer, faults
from mesh_core.testing._embedding_wire import fake_vector

openai = pytest.importorskip("openai")
genai = pytest.importorskip("google.genai")
from google.genai import errors as genai_errors, types as genai_types  # noqa: E402

KEY = "sk-fidelity"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(api_key=KEY) as s:
        yield s


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_openai_sdk_embeddings_in_each_encoding(server: FaultServer, encoding: str | None) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    kw = {} if encoding is None else {"encoding_format": encoding}
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], **kw)
    assert [d.index for d in result.data] == [0, 1]
    if encoding != "base64":  # the SDK decodes base64 itself only when it chose it
        assert close(result.data[1].embedding, fake_vector("b", "text-embedding-3-small", 1536))
    assert result.usage.prompt_tokens == 2 and result.model == "text-embedding-3-small"
    one = client.embeddings.create(model="m", input="hello", dimensions=4, **kw)
    if encoding != "base64":
        assert close(one.data[0].embedding, fake_vector("hello", "m", 4))


def test_openai_sdk_errors_and_azure(server: FaultServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    server.enqueue("m", faults.rate_limited(retry_after=1))
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="m", input=["a"])
    with pytest.raises(openai.BadRequestError, match="empty string"):
        client.embeddings.create(model="m", input=[""])
    azure = openai.AzureOpenAI(
        azure_endpoint=server.url_for("azure-openai"),
        api_key=KEY,
        api_version="2024-10-21",
        max_retries=0,
    )
    result = azure.embeddings.create(model="my-deployment", input=["x", "y"])
    assert close(result.data[0].embedding, fake_vector("x", "my-deployment", 8))
    assert server.requests[-1].dialect == "azure-openai-embeddings"
    assert server.requests[-1].headers["api-key"] == KEY


def test_google_genai_embed_content_one_and_many(server: FaultServer) -> None:
    options = genai_types.HttpOptions(base_url=server.url_for("gemini"))
    client = genai.Client(api_key=KEY, http_options=options)
    many = client.models.embed_content(model="text-embedding-004", contents=["a", "b", "c"])
    assert many.embeddings is not None and len(many.embeddings) == 3
    assert close(many.embeddings[2].values or [], fake_vector("c", "text-embedding-004", 768))
    config = genai_types.EmbedContentConfig(output_dimensionality=16)
    short = client.models.embed_content(model="text-embedding-004", contents="a", config=config)
    assert short.embeddings is not None
    assert close(short.embeddings[0].values or [], fake_vector("a", "text-embedding-004", 16))
    server.set("text-embedding-004", faults.server_error(503))
    with pytest.raises(genai_errors.ServerError):
        client.models.embed_content(model="text-embedding-004", contents=["a"])
