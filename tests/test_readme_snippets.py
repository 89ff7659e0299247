"""Every Python snippet of the README runs as written, offline, against the fault server.

The snippets use ``examples/modelmesh.yaml`` (through ``$MODELMESH_CONFIG`` or its path),
whose providers point at the local fault-injecting server, so a snippet that stops
matching the API fails here rather than in a reader's terminal. Each section of the
README runs in a namespace of its own (its snippets build on each other, in order), and
nothing may connect anywhere but 127.0.0.1: a snippet that downloads (an embedding model,
a tokenizer) fails.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import re
import socket
from pathlib import Path

import pytest
import yaml

from mesh_core._config import load_config
from mesh_core._shared import forget_shared_meshes
from mesh_core.testing import FaultServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "modelmesh.yaml"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def sections() -> dict[str, list[tuple[str, str]]]:
    """``{section title: [(language, code), ...]}`` in README order."""
    text = README.read_text(encoding="utf-8")
    out: dict[str, list[tuple[str, str]]] = {}
    title = "(top)"
    pos = 0
    for m in _FENCE.finditer(text):
        for heading in re.findall(r"^## (.+)$", text[pos : m.start()], re.M):
            title = heading.strip()
        pos = m.end()
        out.setdefault(title, []).append((m.group(1), m.group(2)))
    return out


PYTHON = {t: [c for lang, c in blocks if lang == "python"] for t, blocks in sections().items()}
PYTHON = {t: codes for t, codes in PYTHON.items() if codes}
YAML = [c for blocks in sections().values() for lang, c in blocks if lang == "yaml"]

_NEEDS = {"langchain_core": "langchain", "llama_index": "llamaindex"}


def _local(host: object) -> bool:
    if not isinstance(host, str):
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def offline(monkeypatch):
    """Refuse every connection and name lookup that is not for 127.0.0.1."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if isinstance(address, tuple) and not _local(address[0]):
            raise OSError(f"README snippets run offline: connection to {address!r} refused")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            raise OSError(f"README snippets run offline: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def example_env(monkeypatch, offline):
    """The fault server, and the environment the README tells readers to set up."""
    with FaultServer() as server:
        monkeypatch.setenv("MODELMESH_FAULTS_URL", server.base_url)
        monkeypatch.setenv("MODELMESH_CONFIG", str(EXAMPLE))
        monkeypatch.chdir(ROOT)  # the snippets name examples/modelmesh.yaml relatively
        # The adapters share one Mesh per configuration file: a mesh left by another
        # test would still point at that test's (stopped) server.
        forget_shared_meshes()
        try:
            yield server
        finally:
            forget_shared_meshes()


def test_the_readme_opens_with_its_two_commands_then_the_light_path():
    first, light = [code for lang, code in sections()["(top)"] if lang == "bash"][:2]
    assert first.splitlines()[:2] == [
        'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/modelmesh demo',
        ".venv/bin/python -m pytest -q",
    ]
    assert light.strip() == (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/modelmesh demo"
    )


def test_the_readme_has_the_snippets_this_test_runs():
    titles = set(PYTHON)
    assert any("LangChain" in t for t in titles)
    assert any("LlamaIndex" in t for t in titles)
    assert any("Quick start" in t for t in titles)
    assert any("explain" in code for codes in PYTHON.values() for code in codes)
    assert sum(len(codes) for codes in PYTHON.values()) >= 7


@pytest.mark.parametrize("title", sorted(PYTHON))
def test_python_snippets_run_as_written(title, example_env):
    code = "\n".join(PYTHON[title])
    for module, extra in _NEEDS.items():
        if f"from {module}" in code or f"import {module}" in code:
            pytest.importorskip(module, reason=f'needs the "{extra}" extra')
    namespace: dict[str, object] = {"__name__": f"readme: {title}"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, snippet in enumerate(PYTHON[title]):
            exec(compile(snippet, f"README.md [{title}] snippet {i + 1}", "exec"), namespace)
    if "FaultServer(" not in code:  # the snippets that use examples/modelmesh.yaml
        assert example_env.requests, "the snippets never reached the fault server"
    printed = out.getvalue()
    if "FunctionAgent" in code:
        assert "The tool returned: 42" in printed  # the agent called multiply(6, 7)
    if "mesh.explain(" in code:
        assert "would be served by groq.llama-3.1-70b-versatile" in printed
        # the report the README shows is the one the snippet prints
        shown = [c for lang, c in sections()[title] if lang == "text"]
        assert shown and shown[0].strip() in printed


def test_yaml_snippets_are_valid_configurations():
    env = {
        "OPENAI_API_KEY": "sk-x",
        "GROQ_API_KEY": "gsk-x",
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "AZURE_OPENAI_API_KEY": "az-x",
        "GEMINI_API_KEY": "gk-x",
    }
    assert YAML
    for snippet in YAML:
        data = yaml.safe_load(snippet)
        load_config(data, env=env)


def test_the_example_configuration_runs_as_is_against_the_fault_server(example_env):
    from mesh_core import Mesh

    with Mesh.from_config(str(EXAMPLE)) as mesh:
        resp = mesh.complete("reasoning", "hi")
    assert resp.model == "openai.gpt-4o-mini"
    assert resp.content.startswith("Hello from gpt-4o-mini")
    # as written, with no variable set, it points at `modelmesh serve-faults --port 8900`
    config = load_config(EXAMPLE, env={})
    assert {p.base_url for p in config.providers.values()} == {"http://127.0.0.1:8900/v1"}
    assert all(p.api_key is None for p in config.providers.values())  # no key needed
