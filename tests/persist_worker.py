"""A worker process for the shared-state tests: sends requests, reports what it got.

Usage: python -m tests.persist_worker CONFIG_JSON REQUESTS
Prints one JSON line: {"served": {model: n}, "errors": [message, ...]}.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from mesh_core import Mesh
from mesh_core._errors import ModelMeshError


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    n = int(sys.argv[2])
    served: Counter[str] = Counter()
    errors: list[str] = []
    with Mesh.from_config(config) as mesh:
        for i in range(n):
            try:
                served[mesh.complete("chat", f"request {i}").model] += 1
            except ModelMeshError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"served": served, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
