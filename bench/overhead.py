"""Per-request overhead: Mesh.complete / acomplete against a bare httpx call to the same server.

Calls are interleaved (bare, mesh, bare, mesh, ...) so that drift on a shared machine
hits both sides alike. Prints a markdown table: medians and p90s in microseconds, the
overhead the mesh adds and the ratio to the bare call.

    python bench/overhead.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from common import MESSAGES, PAYLOAD, FastServer, machine, median, mesh_config, pct, table

from mesh_core import Mesh

SIZES = (1, 10, 100, 1000)


def sync_round(server: FastServer, size: int, n: int) -> tuple[list[float], list[float]]:
    models = [f"ok{i}" for i in range(size)]
    bare, meshed = [], []
    with (
        Mesh.from_config(mesh_config(server.base_url, models)) as mesh,
        httpx.Client(base_url=server.base_url) as client,
    ):
        for _ in range(200):  # warm both connection pools
            client.post("/chat/completions", json=PAYLOAD).json()
            mesh.complete("p", MESSAGES)
        for _ in range(n):
            t0 = time.perf_counter()
            client.post("/chat/completions", json=PAYLOAD).json()
            t1 = time.perf_counter()
            mesh.complete("p", MESSAGES)
            t2 = time.perf_counter()
            bare.append(t1 - t0)
            meshed.append(t2 - t1)
    return bare, meshed


async def async_round(server: FastServer, size: int, n: int) -> tuple[list[float], list[float]]:
    models = [f"ok{i}" for i in range(size)]
    bare, meshed = [], []
    mesh = Mesh.from_config(mesh_config(server.base_url, models))
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for _ in range(200):
            (await client.post("/chat/completions", json=PAYLOAD)).json()
            await mesh.acomplete("p", MESSAGES)
        for _ in range(n):
            t0 = time.perf_counter()
            (await client.post("/chat/completions", json=PAYLOAD)).json()
            t1 = time.perf_counter()
            await mesh.acomplete("p", MESSAGES)
            t2 = time.perf_counter()
            bare.append(t1 - t0)
            meshed.append(t2 - t1)
    await mesh.aclose()
    return bare, meshed


def row(kind: str, size: int, bare: list[float], meshed: list[float]) -> list[object]:
    b, m = median(bare) * 1e6, median(meshed) * 1e6
    return [
        kind,
        size,
        f"{b:.0f}",
        f"{pct(bare, 0.9) * 1e6:.0f}",
        f"{m:.0f}",
        f"{pct(meshed, 0.9) * 1e6:.0f}",
        f"{m - b:+.0f}",
        f"{m / b:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    with FastServer() as server:
        for size in SIZES:
            rows.append(row("sync", size, *sync_round(server, size, args.requests)))
        for size in SIZES:
            rows.append(row("async", size, *asyncio.run(async_round(server, size, args.requests))))
    print(f"Per-request overhead ({args.requests} interleaved requests each; {machine()})\n")
    print(
        table(
            [
                "path",
                "pool size",
                "bare median µs",
                "bare p90 µs",
                "mesh median µs",
                "mesh p90 µs",
                "added µs (median)",
                "ratio",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
