"""Without an optional package, the error names the extra that brings it.

Each case runs in a fresh interpreter whose ``sys.meta_path`` refuses the package, as
if it were not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {root!r} or name.startswith({root!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""


def run_without(root: str, code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(root=root) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        ("langchain_core", "modelmesh_langchain", "langchain"),
        ("llama_index", "modelmesh_llamaindex", "llamaindex"),
    ],
)
def test_an_adapter_without_its_framework_names_the_extra(blocked, module, extra):
    done = run_without(
        blocked,
        f"""
        try:
            import {module}
        except ImportError as exc:
            print("ImportError:", exc)
        import mesh_core
        mesh_core.Mesh  # the core works without the framework
        print("core ok")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert f'pip install "modelmesh-lite[{extra}]"' in done.stdout
    assert "core ok" in done.stdout


@pytest.mark.parametrize(
    ("blocked", "setting", "extra"),
    [("opentelemetry", "tracing", "otel"), ("prometheus_client", "metrics", "prometheus")],
)
def test_observability_on_without_its_package_names_the_extra(blocked, setting, extra):
    done = run_without(
        blocked,
        f"""
        from mesh_core import Mesh
        config = {{
            "providers": {{"p": {{"base_url": "http://127.0.0.1:9/v1"}}}},
            "models": {{"p.m": {{"provider": "p"}}}},
            "pools": {{"chat": {{"capability": "chat-completion"}}}},
            "observability": {{"{setting}": "on"}},
        }}
        try:
            Mesh.from_config(config)
        except ImportError as exc:
            print("ImportError:", exc)
        config["observability"] = {{"{setting}": "auto"}}
        Mesh.from_config(config).close()  # auto: quietly without
        print("auto ok")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert f'pip install "modelmesh-lite[{extra}]"' in done.stdout
    assert "auto ok" in done.stdout
