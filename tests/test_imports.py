"""Import cost: the core never drags in a framework."""

import subprocess
import sys

CODE = """
import sys
import mesh_core
assert not [m for m in sys.modules if m.startswith(("httpx", "pydantic", "yaml"))], "eager"
from mesh_core import Mesh
Mesh.from_config({"providers": {"p": {}}, "models": {"p.m": {"provider": "p"}},
                  "pools": {"chat": {"capability": "chat-completion"}}})
heavy = [m for m in sys.modules if m.startswith(("langchain", "llama_index"))]
print(heavy)
"""


def test_mesh_core_imports_no_framework_and_loads_lazily():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
