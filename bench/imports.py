"""Import time of the packages, each in a fresh interpreter (median of 7), beside the
frameworks' own.

    python bench/imports.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from common import machine, table

TARGETS = [
    ("mesh_core", "import mesh_core"),
    ("mesh_core + Mesh", "from mesh_core import Mesh"),
    ("modelmesh_langchain", "import modelmesh_langchain"),
    ("langchain_core.language_models", "import langchain_core.language_models"),
    ("modelmesh_llamaindex", "import modelmesh_llamaindex"),
    ("llama_index.core", "import llama_index.core"),
]
CODE = (
    "import time, sys; t = time.perf_counter(); {stmt}; d = time.perf_counter() - t; "
    "heavy = any(m.startswith(('langchain', 'llama_index')) for m in sys.modules); "
    "print(d, heavy)"
)


def measure(stmt: str) -> tuple[float, bool]:
    times, heavy = [], False
    for _ in range(7):
        out = subprocess.run(
            [sys.executable, "-c", CODE.format(stmt=stmt)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        times.append(float(out[0]))
        heavy = out[1] == "True"
    return statistics.median(times), heavy


def main() -> None:
    rows = []
    for _name, stmt in TARGETS:
        seconds, heavy = measure(stmt)
        rows.append([f"`{stmt}`", f"{seconds * 1000:.0f}", "yes" if heavy else "no"])
    print(f"Import time, fresh interpreter, median of 7 ({machine()})\n")
    print(table(["statement", "ms", "imports LangChain or LlamaIndex"], rows))


if __name__ == "__main__":
    main()
