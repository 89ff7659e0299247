"""``type: langchain`` providers in a configuration file: a chat model class and its
keyword arguments, built when the Mesh is, answering over real HTTP; and the errors a
wrong class or wrong arguments give (naming the provider section)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_core import Mesh, load_config
from mesh_core._errors import ConfigurationError
from mesh_core._shared import forget_shared_meshes
from mesh_core.providers import ForeignProvider, provider_type, provider_types
from mesh_core.testing import FaultServer, faults
from modelmesh_langchain import MeshChatModel

KEY = "sk-yaml-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s
    forget_shared_meshes()


def config(server: FaultServer, **provider: Any) -> dict[str, Any]:
    section = {
        "type": "langchain",
        "class": "langchain_openai:ChatOpenAI",
        "kwargs": {"model": "a", "base_url": server.base_url, "max_retries": 0},
        **provider,
    }
    return {
        "providers": {"lc": section, "native": {"base_url": server.base_url}},
        "models": {"lc.a": {"provider": "lc"}, "native.b": {"provider": "native"}},
        "pools": {
            "chat": {
                "capability": "chat-completion",
                "strategy": "priority-selection",
                "model_priority": ["lc.a", "native.b"],
                "retry": {"max_attempts": 1},
            }
        },
    }


def test_a_yaml_file_names_a_langchain_class(
    server: FaultServer, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FOREIGN_TEST_KEY", KEY)
    data = config(server)
    data["providers"]["lc"]["kwargs"]["api_key"] = "${FOREIGN_TEST_KEY}"
    path = tmp_path / "modelmesh.yaml"
    path.write_text(yaml.safe_dump(data))
    llm = MeshChatModel(pool="chat", config=str(path))
    assert isinstance(llm.mesh.providers["lc"], ForeignProvider)
    msg = llm.invoke("hello")
    assert msg.response_metadata["model_name"] == "lc.a"
    assert msg.content == "Hello from a. You said: hello"
    assert server.requests_for("a")[-1].authorization == f"Bearer {KEY}"
    server.set("a", faults.server_error(503))
    assert llm.invoke("hello").response_metadata["model_name"] == "native.b"


def test_the_provider_api_key_is_passed_to_the_class(server: FaultServer) -> None:
    mesh = Mesh.from_config(config(server, api_key=KEY))
    try:
        assert mesh.complete("chat", [{"role": "user", "content": "hi"}]).model == "lc.a"
        assert server.requests_for("a")[-1].authorization == f"Bearer {KEY}"
    finally:
        mesh.close()


def test_secrets_in_kwargs_are_hidden(server: FaultServer) -> None:
    data = config(server)
    data["providers"]["lc"]["kwargs"]["api_key"] = KEY
    data["providers"]["lc"]["kwargs"]["default_headers"] = {"x-extra": "1"}
    loaded = load_config(data)
    shown = repr(loaded) + str(loaded.providers["lc"]) + json.dumps(loaded.model_dump(mode="json"))
    assert KEY not in shown
    assert "langchain_openai:ChatOpenAI" in shown


def _problem(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ConfigurationError) as info:
        Mesh.from_config(data).close()
    assert len(info.value.errors) == 1, info.value.errors
    return info.value.errors[0]


@pytest.mark.parametrize(
    ("class_path", "where", "says"),
    [
        ("langchain_openai.ChatOpenAI", "providers.lc.class", "package.module:ClassName"),
        ("no_such_package:Chat", "providers.lc.class", "cannot import module 'no_such_package'"),
        ("langchain_openai:NoSuchChat", "providers.lc.class", "has no attribute 'NoSuchChat'"),
        ("langchain_openai:OpenAIEmbeddings", "providers.lc.class", "not a LangChain chat model"),
        ("json:dumps", "providers.lc.class", "not a class"),
    ],
)
def test_a_bad_class_names_the_section(
    server: FaultServer, class_path: str, where: str, says: str
) -> None:
    path, problem = _problem(config(server, **{"class": class_path}))
    assert path == where and says in problem


def test_bad_kwargs_name_the_section_and_hide_secrets(server: FaultServer) -> None:
    data = config(server)
    data["providers"]["lc"]["kwargs"].update(temperature="very hot", api_key=KEY)
    path, problem = _problem(data)
    assert path == "providers.lc.kwargs"
    assert "ChatOpenAI" in problem and "temperature" in problem
    assert KEY not in problem


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"class": None}, "needs class"),
        ({"base_url": "http://127.0.0.1:1/v1"}, "base_url: not for provider type 'langchain'"),
        ({"headers": {"x": "1"}}, "headers: not for provider type"),
    ],
)
def test_settings_that_would_be_ignored_are_errors(
    server: FaultServer, change: dict[str, Any], says: str
) -> None:
    data = config(server)
    data["providers"]["lc"].update(change)
    if change.get("class", "") is None:
        del data["providers"]["lc"]["class"]
    path, problem = _problem(data)
    assert path == "providers.lc" and says in problem


def test_class_and_kwargs_are_only_for_foreign_types(server: FaultServer) -> None:
    data = config(server)
    data["providers"]["native"]["class"] = "langchain_openai:ChatOpenAI"
    path, problem = _problem(data)
    assert (
        path == "providers.native" and "only for provider types langchain and llamaindex" in problem
    )


def test_both_foreign_types_are_registered_without_a_base_url() -> None:
    assert {"langchain", "llamaindex"} <= set(provider_types())
    for name in ("langchain", "llamaindex"):
        kind = provider_type(name)
        assert kind.foreign and kind.default_base_url is None
