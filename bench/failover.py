"""Failover latency: from a request's start to its answer when the first model fails.

Each sample builds a fresh mesh (construction is not timed) and warms it with one
request pinned to the healthy model (httpx builds its client, with an SSL context, on
first use), so every timed request meets the failing model first, on warm
connections. Faults: 503, connection reset, a silent server (bounded by the first
model's timeout, 1 s here), and 429 with ``Retry-After: 30`` (longer than
``retry.max_delay``, so the mesh fails over at once instead of waiting).

    python bench/failover.py
"""

from __future__ import annotations

import time

from common import MESSAGES, FastServer, machine, median, mesh_config, pct, table

from mesh_core import Mesh

FAULTS = {
    "503": "fail",
    "connection reset": "reset",
    "silent (1 s timeout)": "silent",
    "429 Retry-After: 30": "limit",
}


def sample(server: FastServer, bad: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        cfg = mesh_config(
            server.base_url, [bad, "ok"], strategy="priority-selection", retry={"max_attempts": 1}
        )
        with Mesh.from_config(cfg) as mesh:
            mesh.complete("p", MESSAGES, model="bench.ok")
            t0 = time.perf_counter()
            resp = mesh.complete("p", MESSAGES)
            out.append(time.perf_counter() - t0)
            assert resp.model == ("bench.ok0" if bad == "ok0" else "bench.ok"), resp.attempts
    return out


def main() -> None:
    rows = []
    with FastServer() as server:
        healthy = sample(server, "ok0", 200)
        rows.append(
            [
                "none (first model healthy)",
                f"{median(healthy) * 1e3:.2f}",
                f"{pct(healthy, 0.9) * 1e3:.2f}",
            ]
        )
        for label, bad in FAULTS.items():
            n = 5 if bad == "silent" else 200
            s = sample(server, bad, n)
            rows.append([label, f"{median(s) * 1e3:.2f}", f"{pct(s, 0.9) * 1e3:.2f}"])
    print(f"Failover latency, fresh mesh per request ({machine()})\n")
    print(table(["first model's fault", "median ms", "p90 ms"], rows))
    print("\n(with `retry.max_attempts: 1`; the default of 2 retries a 503 once after ~50-100 ms)")


if __name__ == "__main__":
    main()
