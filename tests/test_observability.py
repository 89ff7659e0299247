"""Logging, statistics, secret hygiene and safe configuration."""

from __future__ import annotations

import json
import logging

import pytest

from mesh_core import Mesh
from mesh_core._errors import ConfigurationError, ModelMeshError
from mesh_core.testing import faults
from tests.conftest import config_for
from tests.helpers import FREE_FORM

KEY = "sk-live-TOPSECRET-0123456789"


def test_no_log_line_at_info_or_above_on_the_happy_path(servers, caplog):
    with caplog.at_level(logging.DEBUG, logger="modelmesh"):
        mesh = Mesh.from_config(config_for(servers))
        for _ in range(3):
            mesh.complete("chat", "hi")
        list(mesh.stream("chat", "hi"))
        mesh.close()
    records = [r for r in caplog.records if r.name == "modelmesh"]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert any("request.success" in r.getMessage() for r in records)


def test_trouble_is_logged_with_structured_fields(servers, caplog):
    mesh = Mesh.from_config(config_for(servers, pool={"deactivation": {"retry_limit": 1}}))
    servers[0].set("m1", faults.server_error(503))
    with caplog.at_level(logging.INFO, logger="modelmesh"):
        mesh.complete("chat", "hi")
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "p1.m1 moved to standby (error_threshold" in warning.getMessage()
    assert warning.modelmesh["event"] == "model.deactivated"
    assert warning.modelmesh["reason"] == "error_threshold"
    mesh.close()


def test_stats_aggregate_per_model_provider_and_pool(servers):
    mesh = Mesh.from_config(
        config_for(servers, n=2, models={"p1.m1": {"pricing": {"per_request": 0.5}}})
    )
    for _ in range(3):
        mesh.complete("chat", "hi")
    servers[0].set("m1", faults.server_error(503))
    mesh.complete("chat", "hi")
    stats = mesh.stats()
    m1 = stats["models"]["p1.m1"]
    assert (m1["requests"], m1["failures"], m1["cost"]) == (5, 2, 1.5)
    assert stats["providers"]["p1"]["requests"] == 5 and stats["providers"]["p2"]["requests"] == 1
    assert stats["pools"]["chat"]["requests"] == 4 and stats["pools"]["chat"]["cost"] == 1.5
    json.dumps(stats)
    mesh.close()


def test_the_api_key_appears_in_no_output(servers, tmp_path, caplog):
    from langchain_core.messages import HumanMessage
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    from modelmesh_langchain import MeshChatModel
    from modelmesh_llamaindex import MeshLLM

    servers[0].api_key = KEY
    cfg = config_for(servers)
    cfg["providers"]["p1"]["api_key"] = "${MESH_KEY}"
    cfg["providers"]["p2"]["api_key"] = "${MESH_KEY}"
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp_path / "state.db")}
    seen: list[str] = []

    class Collect(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "Collect"

        def handle(self, event, **kwargs) -> None:
            seen.append(repr(event))

    handler = Collect()
    get_dispatcher().add_event_handler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            mesh = Mesh.from_config(cfg, env={"MESH_KEY": KEY})
            mesh.on(None, lambda e: seen.append(repr(e)))
            lc = MeshChatModel(pool="chat", config=mesh)
            msg = lc.invoke([HumanMessage("hi")])
            seen += [repr(msg), repr(lc), repr(lc._get_ls_params()), repr(lc.mesh.config)]
            li = MeshLLM(pool="chat", config=mesh)
            seen.append(repr(li.chat([ChatMessage(role="user", content="hi")])))
            seen.append(repr(li))
            # the provider now refuses the key and echoes it back in its error message
            servers[0].api_key = "sk-other"
            servers[1].set("m2", faults.error(401, f"Incorrect API key provided: {KEY}"))
            with pytest.raises(ModelMeshError) as ei:
                mesh.complete("chat", "hi")
            seen += [
                str(ei.value),
                repr(ei.value),
                repr(ei.value.__dict__),
                repr(getattr(ei.value, "last_error", None)),
                repr(mesh.stats()),
                repr(mesh.providers),
            ]
            mesh.close()
    finally:
        get_dispatcher().event_handlers.remove(handler)
    seen += _literal_secret_outputs(servers)
    seen += [r.getMessage() + repr(getattr(r, "modelmesh", "")) for r in caplog.records]
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert "TOPSECRET" not in "\n".join(seen)
    assert b"TOPSECRET" not in stored
    assert servers[0].requests[0].authorization == f"Bearer {KEY}"  # it was sent, though


def _literal_secret_outputs(servers) -> list[str]:
    """What shows of secrets written literally into a dict config (no ``${VAR}``): the
    adapters' reprs and serializations, the config's repr, and configuration errors."""
    from langchain_core.load import dumpd

    from mesh_core._config import load_config
    from mesh_core._shared import forget_shared_meshes
    from modelmesh_langchain import MeshChatModel
    from modelmesh_llamaindex import MeshLLM

    cfg = config_for(servers)
    cfg["providers"]["p1"] |= {
        "api_key": KEY,
        "proxy": f"http://user:{KEY}@127.0.0.1:9",
        "headers": {"X-Custom": KEY, "Authorization": f"Bearer {KEY}"},
    }
    cfg["providers"]["p2"]["base_url"] = servers[1].base_url.replace("://", f"://u:{KEY}@")
    cfg["pools"]["chat"]["strategy"] = FREE_FORM  # a custom strategy that takes any option
    cfg["pools"]["chat"]["strategy_options"] = {"upstream": {"token": KEY}}
    cfg["storage"] = {"backend": "memory", "url": f"redis://:{KEY}@127.0.0.1:6390/0"}
    seen: list[str] = []
    try:
        lc = MeshChatModel(pool="chat", config=cfg, model_kwargs={"api_key": KEY})
        li = MeshLLM(pool="chat", config=cfg, additional_kwargs={"extra_headers": {"X": KEY}})
        seen += [repr(lc), str(lc), repr(lc._identifying_params), repr(dumpd(lc))]
        seen += [repr(li), str(li), repr(li.to_dict()), repr(li.metadata)]
        seen += [repr(lc.mesh.config), str(lc.mesh.config)]
    finally:
        forget_shared_meshes()
    for bad in (
        {"storage": f"redis://:{KEY}@cache:6379/0"},
        {"storage": {"url": [f"redis://:{KEY}@cache:6379/0"]}},
        {"providers": {"p": {"headers": {"X-Custom": [KEY]}}}},
        {"providers": {"openai": KEY}},
        {"providers": {"p": {"base_url": f"ftp://u:{KEY}@host/v1"}}},
        {"providers": {"p": {"timeouts": {"total": f"https://u:{KEY}@host"}}}},
    ):
        with pytest.raises(ConfigurationError) as ei:
            load_config(bad)
        seen += [str(ei.value), repr(ei.value.errors), repr(ei.value.details)]
    return seen


def test_a_config_file_cannot_execute_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "mesh.yaml"
    path.write_text(f'providers: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigurationError, match="invalid YAML"):
        Mesh.from_config(str(path))
    assert not marker.exists()


def test_tls_verification_is_on_unless_turned_off(servers):
    cfg = config_for(servers)
    cfg["providers"]["p2"]["verify_tls"] = False
    mesh = Mesh.from_config(cfg)
    assert mesh.providers["p1"]._verify is True and mesh.providers["p2"]._verify is False
    mesh.close()
