"""A mesh whose JSON state can no longer grow, as on a full disk (for test_store_faults).

Usage: python -m tests.full_disk_worker STATE_PATH
Caps this process's file size (RLIMIT_FSIZE) just above the first saved state, so every
later save fails with an OSError (EFBIG), then sends requests. Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import signal
import sys

from mesh_core import Mesh
from mesh_core.testing import FaultServer
from tests.conftest import config_for


def main() -> None:
    path = sys.argv[1]
    servers = [FaultServer().start() for _ in range(2)]
    cfg = config_for(servers, n=2)
    cfg["storage"] = {"backend": "json", "path": path}
    mesh = Mesh.from_config(cfg)
    first = mesh.complete("chat", "hi").model
    with open(path, "rb") as f:
        size = len(f.read())
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails, not kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 16, size + 16))
    answered = [first] + [mesh.complete("chat", f"q{i}", max_tokens=5).model for i in range(5)]
    stats = mesh.stats()
    mesh.close()
    for s in servers:
        s.stop()
    print(json.dumps({"answered": answered, "store": stats["store"]}), flush=True)


if __name__ == "__main__":
    main()
