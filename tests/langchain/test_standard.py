"""LangChain's standard chat-model test suites, run against MeshChatModel.

The integration suite talks to real fault-injecting servers on 127.0.0.1 whose
scripted answers (tool calls with arguments from the prompt, JSON for response
formats) stand in for a model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from mesh_core.testing import FaultServer
from modelmesh_langchain import MeshChatModel

_SERVERS: list[FaultServer] = []


def _config() -> dict[str, Any]:
    if not _SERVERS:
        _SERVERS.extend(FaultServer().start() for _ in range(2))
    return {
        "providers": {
            f"p{i + 1}": {"base_url": s.base_url, "timeouts": {"total": "20s"}}
            for i, s in enumerate(_SERVERS)
        },
        "models": {
            "p1.m1": {"provider": "p1", "features": {"vision": True}},
            "p2.m2": {"provider": "p2", "features": {"vision": True}},
        },
        "pools": {"chat": {"capability": "chat-completion"}},
    }


# Unit tests make no calls: a static configuration written to a file, so that
# initialization from $MODELMESH_CONFIG is exercised too.
_UNIT_CONFIG = {
    "providers": {"p1": {"base_url": "http://127.0.0.1:9/v1"}},
    "models": {"p1.m1": {"provider": "p1"}, "p1.m2": {"provider": "p1"}},
    "pools": {"chat": {"capability": "chat-completion"}},
}
_UNIT_CONFIG_PATH = Path(tempfile.mkdtemp(prefix="modelmesh-")) / "modelmesh.yaml"
_UNIT_CONFIG_PATH.write_text(yaml.safe_dump(_UNIT_CONFIG))

_OFFLINE = "tests never reach beyond 127.0.0.1"


def _downloads(what: str, where: str) -> pytest.MarkDecorator:
    """Not run: the standard test fetches a file from the public internet."""
    return pytest.mark.xfail(
        run=False,
        reason=f"downloads its {what} from the public internet ({where}); {_OFFLINE}. "
        "Offline equivalent: "
        "tests/langchain/test_chat_model.py::test_multimodal_blocks_reach_the_provider",
    )


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    while _SERVERS:
        _SERVERS.pop().stop()


class TestMeshChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[MeshChatModel]:
        return MeshChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"pool": "chat", "config": str(_UNIT_CONFIG_PATH)}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"MODELMESH_CONFIG": str(_UNIT_CONFIG_PATH)},
            {"pool": "chat", "model": "p1.m2"},
            {"pool": "chat", "model": "p1.m2"},
        )

    @pytest.mark.xfail(
        run=False,
        reason="langchain-core's load() revives only classes on its partner allowlist "
        "(langchain_core.load.mapping), which a third-party package cannot join. "
        "Covered by tests/langchain/test_chat_model.py::test_serialization_round_trip, "
        "which loads with allowed_objects=[MeshChatModel]",
    )
    def test_serdes(self, *args: Any, **kwargs: Any) -> None:
        super().test_serdes(*args, **kwargs)


class TestMeshChatModelIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[MeshChatModel]:
        return MeshChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"pool": "chat", "config": _config()}

    @property
    def model_override_value(self) -> str:
        return "p2.m2"

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_urls(self) -> bool:
        return True

    @property
    def supports_pdf_inputs(self) -> bool:
        return True

    @property
    def supports_audio_inputs(self) -> bool:
        return True

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @_downloads("test image", "wikimedia.org")
    def test_image_inputs(self, *args: Any, **kwargs: Any) -> None:
        super().test_image_inputs(*args, **kwargs)

    @_downloads("test PDF", "w3.org")
    def test_pdf_inputs(self, *args: Any, **kwargs: Any) -> None:
        super().test_pdf_inputs(*args, **kwargs)

    @_downloads("test audio", "wikimedia.org")
    def test_audio_inputs(self, *args: Any, **kwargs: Any) -> None:
        super().test_audio_inputs(*args, **kwargs)

    @_downloads("test image", "wikimedia.org")
    def test_image_tool_message(self, *args: Any, **kwargs: Any) -> None:
        super().test_image_tool_message(*args, **kwargs)

    @_downloads("test PDF", "w3.org")
    def test_pdf_tool_message(self, *args: Any, **kwargs: Any) -> None:
        super().test_pdf_tool_message(*args, **kwargs)

    @_downloads("test image", "githubusercontent.com")
    def test_anthropic_inputs(self, *args: Any, **kwargs: Any) -> None:
        super().test_anthropic_inputs(*args, **kwargs)

    @pytest.mark.xfail(
        run=False,
        reason="times a stream replayed from a VCR cassette recorded against a real provider; "
        "no such recording can be made offline (" + _OFFLINE + ")",
    )
    def test_stream_time(self, *args: Any, **kwargs: Any) -> None:
        super().test_stream_time(*args, **kwargs)
