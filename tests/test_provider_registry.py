"""Provider types by name (mesh_core.providers._registry), their configuration (the
``providers`` section: type, per-type base_url, api_version, auth, deployments) and
injected provider instances (``Mesh(config, providers=...)``); the Azure dialect's URL,
key header and content filter, sans I/O."""

from __future__ import annotations

import json

import pytest

import mesh_core
from mesh_core import ConfigurationError, Mesh, load_config
from mesh_core._errors import ErrorKind, ProviderError
from mesh_core._types import CompletionRequest
from mesh_core.providers import (
    AzureOpenAIDialect,
    HTTPProvider,
    OpenAICompatibleProvider,
    OpenAIDialect,
    create_provider,
    provider_types,
    register_provider_type,
)
from mesh_core.testing import FaultServer

REQ = CompletionRequest(model="pool", messages=[{"role": "user", "content": "hi"}])


def cfg(**providers):
    return {
        "providers": providers,
        "models": {f"{p}.m": {"provider": p, "name": "m"} for p in providers},
        "pools": {"chat": {"capability": "chat-completion"}},
    }


def test_register_provider_type_is_exported_from_both_packages():
    assert mesh_core.register_provider_type is register_provider_type
    assert {"openai-compatible", "anthropic", "azure-openai"} <= set(provider_types())


def test_each_type_has_its_default_base_url_and_azure_needs_one():
    config = load_config(
        cfg(
            o={},
            a={"type": "anthropic"},
            z={"type": "azure", "base_url": "https://r.openai.azure.com"},
        )
    )
    urls = {pid: p.base_url for pid, p in config.providers.items()}
    assert urls == {
        "o": "https://api.openai.com/v1",
        "a": "https://api.anthropic.com",
        "z": "https://r.openai.azure.com",
    }
    with pytest.raises(ConfigurationError) as info:
        load_config(cfg(z={"type": "azure-openai"}))
    assert ("providers.z.base_url", info.value.errors[0][1]) == info.value.errors[0]
    assert "'azure-openai' has no default base_url" in info.value.errors[0][1]


def test_an_unknown_type_names_the_provider_and_the_value():
    with pytest.raises(ConfigurationError) as info:
        load_config(cfg(mine={"type": "acme-v9"}))
    path, problem = info.value.errors[0]
    assert path == "providers.mine.type"
    assert "'acme-v9'" in problem and "anthropic" in problem and "register_provider_type" in problem


def test_a_bad_auth_value_is_refused():
    with pytest.raises(ConfigurationError) as info:
        load_config(cfg(z={"type": "azure-openai", "base_url": "https://r.test", "auth": "cookie"}))
    assert info.value.errors[0][0] == "providers.z.auth"


class _EchoDialect(OpenAIDialect):
    """An OpenAI dialect at another path with another key header: a "new protocol"."""

    name = "acme"

    def endpoint(self, model_name, *, stream):
        return "/chat/completions", {"tenant": "t1"}

    def auth_headers(self, api_key):
        return {"x-acme-key": api_key} if api_key else {}


def test_a_registered_type_is_configured_and_called_over_http():
    made = []

    def factory(provider_id, config):
        made.append((provider_id, config.base_url))
        return HTTPProvider.from_config(provider_id, config, _EchoDialect())

    with FaultServer() as server:
        register_provider_type("acme-test", factory, default_base_url=server.base_url, replace=True)
        with pytest.raises(ValueError, match="already registered"):
            register_provider_type("acme-test", factory)
        with pytest.raises(ValueError, match="lower-case"):
            register_provider_type("Bad Name", factory)
        with Mesh.from_config(cfg(ac={"type": "acme-test", "api_key": "k-acme-1"})) as mesh:
            resp = mesh.complete("chat", [{"role": "user", "content": "hello"}])
        assert resp.model == "ac.m" and "Hello from m" in resp.content
        assert made == [("ac", server.base_url)]
        rec = server.requests[-1]
        assert rec.headers["x-acme-key"] == "k-acme-1" and "authorization" not in rec.headers


def test_an_injected_provider_instance_replaces_the_configured_one():
    with FaultServer() as server:
        mine = OpenAICompatibleProvider("x", base_url=server.base_url)
        config = cfg(x={"base_url": "http://127.0.0.1:9/v1"})  # nothing listens there
        with Mesh(load_config(config), providers={"x": mine}) as mesh:
            assert mesh.providers["x"] is mine
            assert mesh.complete("chat", [{"role": "user", "content": "hi"}]).model == "x.m"
        assert server.count("m") == 1


def test_create_provider_builds_each_builtin_type():
    config = load_config(
        cfg(
            o={},
            a={"type": "anthropic", "api_version": "2023-06-01"},
            z={"type": "azure-openai", "base_url": "https://r.openai.azure.com", "auth": "bearer"},
        )
    )
    built = {pid: create_provider(pid, p) for pid, p in config.providers.items()}
    assert isinstance(built["o"], OpenAICompatibleProvider)
    assert built["a"].dialect.name == "anthropic" and built["z"].dialect.name == "azure-openai"
    assert "anthropic" in repr(built["a"])
    for provider in built.values():
        provider.close()


# --- the Azure dialect, sans I/O ---------------------------------------------------------------
def test_azure_endpoint_query_and_key_header():
    d = AzureOpenAIDialect("2025-01-01-preview", deployments={"gpt-4o": "prod 4o"})
    assert d.endpoint("gpt-4o", stream=False) == (
        "/openai/deployments/prod%204o/chat/completions",
        {"api-version": "2025-01-01-preview"},
    )
    assert d.endpoint("other", stream=True)[0] == "/openai/deployments/other/chat/completions"
    assert d.auth_headers("k") == {"api-key": "k"}
    assert AzureOpenAIDialect(auth="bearer").auth_headers("t") == {"authorization": "Bearer t"}
    assert AzureOpenAIDialect().api_version == "2024-10-21"


def _completion(finish: str, content):
    return json.dumps(
        {
            "choices": [
                {"message": {"role": "assistant", "content": content}, "finish_reason": finish}
            ]
        }
    ).encode()


def test_azure_content_filter_withholding_the_answer_is_a_content_policy_error():
    d = AzureOpenAIDialect()
    with pytest.raises(ProviderError) as info:
        d.parse_reply(_completion("content_filter", None), REQ)
    assert info.value.kind is ErrorKind.CONTENT_POLICY
    partial = d.parse_reply(_completion("content_filter", "Once upon"), REQ)
    assert partial.finish_reason == "content_filter" and partial.content == "Once upon"
    # the OpenAI dialect keeps today's behaviour: an empty answer, not an error
    assert OpenAIDialect().parse_reply(_completion("content_filter", None), REQ).content == ""
    stream = d.stream_parser(REQ)
    event = {"choices": [{"delta": {}, "finish_reason": "content_filter"}]}
    with pytest.raises(ProviderError) as info:
        list(stream.feed(json.dumps(event)))
    assert info.value.kind is ErrorKind.CONTENT_POLICY


def test_azure_filtered_prompt_is_a_content_policy_error():
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy.",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation"},
        }
    }
    err = AzureOpenAIDialect().classify_error(400, {}, json.dumps(body).encode())
    assert err.kind is ErrorKind.CONTENT_POLICY
