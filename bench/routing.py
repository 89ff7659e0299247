"""Routing alone: the mesh's cost per request with an in-memory provider (no I/O).

What the mesh does around a call (validate the request, choose a model, record the
outcome, evaluate deactivation, build the response) without the HTTP exchange, so the
figure is the routing layer's own. Two measures:

* wall time, back to back (``Mesh.complete`` / ``acomplete``), median and p90;
* with ``--instructions``, CPU instructions per request counted by valgrind's
  callgrind (a deterministic figure, unlike wall time on a shared machine). Needs
  ``valgrind`` on the PATH.

    python bench/routing.py [--requests 20000] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time

from common import MESSAGES, machine, median, mesh_config, pct, table

from mesh_core import Mesh
from mesh_core._config import load_config
from mesh_core.providers._base import ProviderReply
from mesh_core.providers._wire import parse_completion

SIZES = (1, 10, 100, 1000)
VALGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
_BODY = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"ok0","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
)


class InMemoryProvider:
    """Answers every call at once with the same parsed reply."""

    provider_id = "bench"

    def __init__(self) -> None:
        self.reply = ProviderReply(parse_completion(_BODY), None)

    def complete(self, *args: object) -> ProviderReply:
        return self.reply

    async def acomplete(self, *args: object) -> ProviderReply:
        return self.reply

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def build(size: int) -> Mesh:
    config = load_config(mesh_config("http://127.0.0.1:9/v1", [f"ok{i}" for i in range(size)]))
    return Mesh(config, providers={"bench": InMemoryProvider()})


def sync_samples(size: int, n: int) -> list[float]:
    mesh, clock, out = build(size), time.perf_counter, []
    for _ in range(500):
        mesh.complete("p", MESSAGES)
    for _ in range(n):
        t0 = clock()
        mesh.complete("p", MESSAGES)
        out.append(clock() - t0)
    mesh.close()
    return out


async def async_samples(size: int, n: int) -> list[float]:
    mesh, clock, out = build(size), time.perf_counter, []
    for _ in range(500):
        await mesh.acomplete("p", MESSAGES)
    for _ in range(n):
        t0 = clock()
        await mesh.acomplete("p", MESSAGES)
        out.append(clock() - t0)
    await mesh.aclose()
    return out


def child(size: int, n: int) -> None:
    """Run ``n`` requests after a warm-up: the unit callgrind counts."""
    mesh = build(size)
    for _ in range(500):
        mesh.complete("p", MESSAGES)
    for _ in range(n):
        mesh.complete("p", MESSAGES)


def instructions(size: int, n: int = 2000) -> int:
    """Instructions per request: (run with n requests - run with none) / n."""

    def count(k: int) -> int:
        out = subprocess.run(
            [*VALGRIND, sys.executable, __file__, "--child", str(size), str(k)],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        return int(re.search(r"Collected : (\d+)", out).group(1))

    return (count(n) - count(0)) // n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind on the PATH")
    rows = []
    for size in SIZES:
        s = sync_samples(size, args.requests)
        a = asyncio.run(async_samples(size, args.requests))
        row = [size, f"{median(s) * 1e6:.1f}", f"{pct(s, 0.9) * 1e6:.1f}"]
        row += [f"{median(a) * 1e6:.1f}", f"{pct(a, 0.9) * 1e6:.1f}"]
        if args.instructions:
            row.append(f"{instructions(size):,}")
        rows.append(row)
    headers = ["pool size", "sync median µs", "sync p90 µs", "async median µs", "async p90 µs"]
    if args.instructions:
        headers.append("instructions / request (sync)")
    print(f"Routing alone, in-memory provider ({args.requests} requests each; {machine()})\n")
    print(table(headers, rows))


if __name__ == "__main__":
    main()
