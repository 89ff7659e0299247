"""The light path: ``pip install .`` (the core dependencies only) runs the demo.

The README offers it to people who only want to try the mesh. The demo, the fault
server, ``explain`` and the command line must therefore import nothing that the core
dependencies (pydantic, httpx, PyYAML, croniter) do not bring: checked here by running
them in a fresh process and mapping every module it loaded to its distribution.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PROBE = r"""
import importlib.abc, io, json, os, sys
from importlib import metadata

ALLOWED = set(json.loads(os.environ["LIGHT_ALLOWED"]))
OWNERS = metadata.packages_distributions()


class NotInstalled(importlib.abc.MetaPathFinder):
    # What a core-only install lacks: every distribution outside the core's closure.
    def find_spec(self, name, path=None, target=None):
        dists = OWNERS.get(name.partition(".")[0])
        if dists and not ALLOWED & {d.lower().replace("_", "-") for d in dists}:
            raise ModuleNotFoundError(f"No module named {name!r} (not in a core install)")
        return None


sys.meta_path.insert(0, NotInstalled())
from mesh_core._cli import main
assert main(["demo", "--requests", "12", "--pace", "0"], out=io.StringIO()) == 0
assert main(["validate", "examples/modelmesh.yaml"], out=io.StringIO()) == 0
from mesh_core import Mesh
from mesh_core.testing import FaultServer
with FaultServer() as s:
    cfg = {"providers": {"a": {"base_url": s.base_url}}, "models": {"a.m": {"provider": "a"}},
           "pools": {"p": {"capability": "chat-completion", "strategy": "latency-first"}}}
    with Mesh.from_config(cfg) as mesh:
        mesh.complete("p", "hi")
        list(mesh.stream("p", "hi"))
        str(mesh.explain("p"))
print("ok")
"""


def _closure(requirements: list[str]) -> set[str]:
    """Distributions those requirements pull in, without extras (as pip resolves them)."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):  # an optional one, absent
            todo.extend(metadata.requires(req.name) or [])
    return seen


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_demo_and_the_command_line_need_only_the_core_dependencies():
    """Run them with every other installed distribution made unimportable, as in a
    core-only install (optional integrations such as OpenTelemetry are then absent)."""
    root = Path(__file__).resolve().parents[1]
    core = _closure(metadata.requires("modelmesh-lite") or [])
    assert {"pydantic", "httpx", "pyyaml", "croniter"} <= core
    blocked = {
        _norm(d.metadata["Name"]) for d in metadata.distributions() if d.metadata["Name"]
    } - core
    assert {"langchain-core", "llama-index-core"} <= blocked  # the check has teeth
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={**os.environ, "LIGHT_ALLOWED": json.dumps(sorted(core | {"modelmesh-lite"}))},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
