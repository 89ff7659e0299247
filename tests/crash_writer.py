"""Writes state to a store in a tight loop until killed (for the crash-safety tests).

Usage: python -m tests.crash_writer json|sqlite PATH
"""

from __future__ import annotations

import sys

from mesh_core._state import ModelState
from mesh_core.stores._base import PersistedState


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "json":
        from mesh_core.stores._jsonfile import JsonFileStore as Store
    else:
        from mesh_core.stores._sqlite import SqliteStore as Store
    store = Store(path)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        models = {}
        for m in range(50):
            st = ModelState(quota_used=i, tokens_used=i * 10, latency_history=[0.1] * 20)
            models[f"p.m{m}"] = st.to_dict()
        store.save(PersistedState(models=models, pools={"chat": {"total_requests": i}}))
        if kind == "sqlite":
            store.add_usage("p.m0", 0.0, 0.0, 1, 5, 0.01)
            store.publish_status("p.m0", {"status": "active", "i": i})


if __name__ == "__main__":
    main()
