"""Throughput: requests per second at concurrency 1, 16, 64 and 256 (async), mesh
against bare httpx on the same fast server.

    python bench/throughput.py [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from common import MESSAGES, PAYLOAD, FastServer, machine, mesh_config, table

from mesh_core import Mesh

LEVELS = (1, 16, 64, 256)


async def run(n: int, concurrency: int, call) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


async def measure(server: FastServer, n: int) -> list[list[object]]:
    rows = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    cfg = mesh_config(server.base_url, [f"ok{i}" for i in range(10)])
    cfg["providers"]["bench"]["max_connections"] = 256
    cfg["providers"]["bench"]["timeouts"] = {"total": "30s", "connect": "10s"}
    mesh = Mesh.from_config(cfg)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:

        async def bare() -> None:
            (await client.post("/chat/completions", json=PAYLOAD)).json()

        async def meshed() -> None:
            await mesh.acomplete("p", MESSAGES)

        await run(500, 64, bare)  # warm both pools
        await run(500, 64, meshed)
        for c in LEVELS:
            b = await run(n, c, bare)
            m = await run(n, c, meshed)
            rows.append([c, f"{b:.0f}", f"{m:.0f}", f"{m / b:.0%}"])
    await mesh.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    with FastServer() as server:
        rows = asyncio.run(measure(server, args.requests))
    print(f"Async throughput, {args.requests} requests per cell, pool of 10 ({machine()})\n")
    print(table(["concurrency", "bare httpx req/s", "mesh req/s", "mesh / bare"], rows))


if __name__ == "__main__":
    main()
