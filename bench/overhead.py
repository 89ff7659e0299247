"""Per-request overhead: Mesh.complete / acomplete against a bare httpx call to the same server.

Three calls are interleaved (bare httpx client, the mesh's own provider called directly,
the whole mesh) so that drift on a shared machine hits them alike. Prints a markdown
table: medians and p90s in microseconds, what the mesh adds to the bare call and the
ratio, and what routing alone costs (the mesh against its own provider's call: the
selection, bookkeeping and events around the HTTP exchange).

    python bench/overhead.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from common import MESSAGES, PAYLOAD, FastServer, machine, median, mesh_config, pct, table

from mesh_core import Mesh
from mesh_core._types import CompletionRequest
from mesh_core.providers._base import Timeouts

SIZES = (1, 10, 100, 1000)


def _direct(mesh: Mesh) -> tuple[object, tuple]:
    """The mesh's provider and the arguments of a call straight to it (no routing)."""
    model = mesh.model("bench.ok0")
    request = CompletionRequest(model="p", messages=list(MESSAGES))
    timeouts = Timeouts(connect=2.0, first_token=1.0, total=1.0)  # as in mesh_config
    return mesh.providers["bench"], (model.name, request, timeouts)


def sync_round(server: FastServer, size: int, n: int) -> tuple[list[float], ...]:
    models = [f"ok{i}" for i in range(size)]
    bare, direct, meshed = [], [], []
    clock = time.perf_counter
    with (
        Mesh.from_config(mesh_config(server.base_url, models)) as mesh,
        httpx.Client(base_url=server.base_url) as client,
    ):
        provider, args = _direct(mesh)
        for _ in range(200):  # warm every connection pool
            client.post("/chat/completions", json=PAYLOAD).json()
            provider.complete(*args)
            mesh.complete("p", MESSAGES)
        for _ in range(n):
            t0 = clock()
            client.post("/chat/completions", json=PAYLOAD).json()
            t1 = clock()
            provider.complete(*args)
            t2 = clock()
            mesh.complete("p", MESSAGES)
            t3 = clock()
            bare.append(t1 - t0)
            direct.append(t2 - t1)
            meshed.append(t3 - t2)
    return bare, direct, meshed


async def async_round(server: FastServer, size: int, n: int) -> tuple[list[float], ...]:
    models = [f"ok{i}" for i in range(size)]
    bare, direct, meshed = [], [], []
    clock = time.perf_counter
    mesh = Mesh.from_config(mesh_config(server.base_url, models))
    provider, args = _direct(mesh)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for _ in range(200):
            (await client.post("/chat/completions", json=PAYLOAD)).json()
            await provider.acomplete(*args)
            await mesh.acomplete("p", MESSAGES)
        for _ in range(n):
            t0 = clock()
            (await client.post("/chat/completions", json=PAYLOAD)).json()
            t1 = clock()
            await provider.acomplete(*args)
            t2 = clock()
            await mesh.acomplete("p", MESSAGES)
            t3 = clock()
            bare.append(t1 - t0)
            direct.append(t2 - t1)
            meshed.append(t3 - t2)
    await mesh.aclose()
    return bare, direct, meshed


def row(kind: str, size: int, bare: list[float], direct: list[float], meshed: list[float]) -> list:
    b, d, m = median(bare) * 1e6, median(direct) * 1e6, median(meshed) * 1e6
    return [
        kind,
        size,
        f"{b:.0f}",
        f"{pct(bare, 0.9) * 1e6:.0f}",
        f"{m:.0f}",
        f"{pct(meshed, 0.9) * 1e6:.0f}",
        f"{m - b:+.0f}",
        f"{m / b:.2f}",
        f"{d:.0f}",
        f"{m - d:+.0f}",
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
                "provider alone median µs",
                "routing µs (mesh - provider)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
