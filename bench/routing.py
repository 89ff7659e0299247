"""Routing alone: the mesh's cost per request with an in-memory provider (no I/O).

What the mesh does around a call (validate the request, choose a model, record the
outcome, evaluate deactivation, build the response) without the HTTP exchange, so the
figure is the routing layer's own. Two measures:

* wall time, back to back (``Mesh.complete`` / ``acomplete``), median and p90, and
  the router's decisions alone (choose a model, record its success: what
  ``Router.choose`` and ``Router.succeeded`` cost, without the failover loop, the
  request and the response around them);
* with ``--instructions``, CPU instructions per request counted by valgrind's
  callgrind (a deterministic figure, unlike wall time on a shared machine). Needs
  ``valgrind`` on the PATH.

    python bench/routing.py [--requests 20000] [--instructions]

``bench/routing_compare.py`` runs the same measures on two source trees side by side
(before and after a change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from common import MESSAGES, machine, median, mesh_config, pct, table

from mesh_core import Mesh
from mesh_core._config import load_config
from mesh_core._types import CompletionRequest, Usage
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


def decisions(mesh: Mesh) -> Callable[[], object]:
    """One request's routing decisions alone: choose a model (marking it in flight) and
    record its success, through the router the failover loop calls."""
    router, pool = mesh._router, mesh.pools["p"]
    request = CompletionRequest(model="p", messages=list(MESSAGES))
    usage = Usage(5, 1, 6)

    def once() -> object:
        chooser = router.choose(pool, request, set(), None, 1)
        try:
            next(chooser)
        except StopIteration as stop:  # no effect to perform: the model is chosen
            model = stop.value
        return router.succeeded(pool, model, usage, 0.001, None)

    return once


def router_samples(size: int, n: int) -> list[float]:
    mesh, clock, out = build(size), time.perf_counter, []
    once = decisions(mesh)
    for _ in range(500):
        once()
    for _ in range(n):
        t0 = clock()
        once()
        out.append(clock() - t0)
    mesh.close()
    return out


def child(size: int, n: int, what: str = "complete") -> None:
    """Run ``n`` requests (or routing decisions) after a warm-up: the unit callgrind counts."""
    mesh = build(size)
    once = decisions(mesh) if what == "router" else lambda: mesh.complete("p", MESSAGES)
    for _ in range(500):
        once()
    for _ in range(n):
        once()


def instructions(size: int, n: int = 2000, what: str = "complete") -> int:
    """Instructions per request: (run with n requests - run with none) / n."""

    def count(k: int) -> int:
        out = subprocess.run(
            [*VALGRIND, sys.executable, __file__, "--child", str(size), str(k), "--what", what],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        return int(re.search(r"Collected : (\d+)", out).group(1))

    return (count(n) - count(0)) // n


def figures(size: int, n: int) -> dict[str, float]:
    """Medians (µs) of the three wall-time measures at one pool size."""
    return {
        "sync": median(sync_samples(size, n)) * 1e6,
        "async": median(asyncio.run(async_samples(size, n))) * 1e6,
        "router": median(router_samples(size, n)) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--what", default="complete", help=argparse.SUPPRESS)
    parser.add_argument("--figures", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.what)
        return
    if args.figures:  # for routing_compare.py: one size, as JSON
        print(json.dumps(figures(*args.figures)))
        return
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind on the PATH")
    rows = []
    for size in SIZES:
        s = sync_samples(size, args.requests)
        a = asyncio.run(async_samples(size, args.requests))
        r = router_samples(size, args.requests)
        row = [size, f"{median(s) * 1e6:.1f}", f"{pct(s, 0.9) * 1e6:.1f}"]
        row += [f"{median(a) * 1e6:.1f}", f"{pct(a, 0.9) * 1e6:.1f}", f"{median(r) * 1e6:.1f}"]
        if args.instructions:
            row += [f"{instructions(size):,}", f"{instructions(size, what='router'):,}"]
        rows.append(row)
    headers = ["pool size", "sync median µs", "sync p90 µs", "async median µs", "async p90 µs"]
    headers.append("decisions alone, median µs")
    if args.instructions:
        headers += ["instructions / request (sync)", "instructions / decisions"]
    print(f"Routing alone, in-memory provider ({args.requests} requests each; {machine()})\n")
    print(table(headers, rows))


if __name__ == "__main__":
    main()
