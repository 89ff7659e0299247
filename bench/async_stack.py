"""Async HTTP stacks side by side (issue 21): the raw floor, the candidates, the mesh, peers.

Every client runs on the same fast local server (bench/fastserver.py, its own process), in
one run, for a few seconds per cell, interleaved over rounds (the medians are reported):

* requests per second at concurrency 1, 16, 64 and 256 (``c`` workers, each looping);
* CPU per request (this process's CPU time over the requests done, at c=64);
* p99 latency at c=64 and c=256;
* streaming: event-stream chunks per second at c=16 (22 events a stream);
* cold start: in a fresh interpreter, importing the client and its first request.

The clients: the raw floor (bench/floor.py), the async transport candidates used bare
(httpcore's pool as is and tuned; aiohttp; an ``asyncio.Protocol`` client on httptools,
sketched in bench/h1proto.py), the mesh's own transport (``HTTPProvider._aexchange``) and
``Mesh.acomplete``, and the peers of the issue's table (bare ``httpx.AsyncClient``,
``MeshChatModel.ainvoke``, the openai SDK's ``AsyncOpenAI``, ``ChatOpenAI.ainvoke``;
LiteLLM when installed). ``Mesh.acomplete (httpcore, before)`` is the mesh with the async
path of before issue 21 (bench/httpcore_provider.py), run beside the current one.

    python bench/async_stack.py [--seconds 1.0] [--rounds 3] [--only floor,aiohttp,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
warnings.filterwarnings("ignore")

from common import MESSAGES, PAYLOAD, FastServer, machine, pct, table  # noqa: E402

LEVELS = (1, 16, 64, 256)
BEFORE = "89dd8a6"
"""The last commit before issue 21: its async path is httpx's (httpcore and h11)."""
BODY = json.dumps(PAYLOAD, separators=(",", ":")).encode()
STREAM_BODY = json.dumps({**PAYLOAD, "stream": True}, separators=(",", ":")).encode()
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}

Call = Callable[[int], Awaitable[Any]]


@dataclass
class Client:
    name: str
    call: Call
    stream: Callable[[int], Awaitable[int]] | None = None
    close: Callable[[], Awaitable[None]] | None = None


@dataclass
class Cell:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


async def drive(call: Call, c: int, seconds: float) -> tuple[int, float, float, list[float]]:
    """``c`` workers calling until ``seconds`` have passed: requests, wall, CPU, latencies."""
    lat: list[float] = []
    end = time.perf_counter() + seconds

    async def worker(i: int) -> int:
        n = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return n
            await call(i)
            lat.append(time.perf_counter() - t0)
            n += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    done = sum(await asyncio.gather(*(worker(i) for i in range(c))))
    return done, time.perf_counter() - t0, time.process_time() - cpu0, lat


# --- the clients ------------------------------------------------------------------------
async def floor(url: str) -> Client:
    from floor import FloorClient

    client = FloorClient(url + "/chat/completions")

    async def close() -> None:
        client.close()

    return Client(
        "raw asyncio client (the floor)",
        lambda i: client.post(i, BODY),
        lambda i: client.stream(i, STREAM_BODY),
        close,
    )


async def h1proto(url: str) -> Client:
    from h1proto import H1Client

    client = H1Client(url + "/chat/completions")

    async def close() -> None:
        client.close()

    return Client(
        "candidate: asyncio.Protocol + httptools",
        lambda i: client.post(BODY),
        lambda i: client.stream(STREAM_BODY),
        close,
    )


async def aiohttp_bare(url: str) -> Client:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=0),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )
    target = url + "/chat/completions"

    async def call(i: int) -> bytes:
        async with session.post(target, data=BODY, headers=HEADERS) as resp:
            return await resp.read()

    async def stream(i: int) -> int:
        n = 0
        async with session.post(target, data=STREAM_BODY, headers=HEADERS) as resp:
            async for chunk in resp.content.iter_any():
                n += chunk.count(b"data: ")
        return n

    return Client("candidate: aiohttp ClientSession", call, stream, session.close)


def _httpcore_client(url: str, shards: int, name: str) -> Client:
    import httpcore

    pools = [
        httpcore.AsyncConnectionPool(
            max_connections=256 // shards, max_keepalive_connections=256 // shards
        )
        for _ in range(shards)
    ]
    load = [0] * shards
    target = (url + "/chat/completions").encode()
    headers = [
        (b"host", url.split("/")[2].encode()),
        *((k.encode(), v.encode()) for k, v in HEADERS.items()),
    ]

    async def call(i: int) -> bytes:
        k = load.index(min(load))
        load[k] += 1
        try:
            resp = await pools[k].request(b"POST", target, headers=headers, content=BODY)
            return resp.content
        finally:
            load[k] -= 1

    async def stream(i: int) -> int:
        k = load.index(min(load))
        load[k] += 1
        n = 0
        try:
            async with pools[k].stream(b"POST", target, headers=headers, content=STREAM_BODY) as r:
                async for chunk in r.aiter_stream():
                    n += chunk.count(b"data: ")
            return n
        finally:
            load[k] -= 1

    async def close() -> None:
        for p in pools:
            await p.aclose()

    return Client(name, call, stream, close)


async def httpcore_one(url: str) -> Client:
    return _httpcore_client(url, 1, "candidate: httpcore pool (1 x 256)")


async def httpcore_sharded(url: str) -> Client:
    return _httpcore_client(url, 8, "candidate: httpcore tuned (8 pools x 32)")


def _mesh_config(url: str) -> dict[str, Any]:
    return {
        "providers": {
            "bench": {
                "base_url": url,
                "max_connections": 256,
                "timeouts": {"connect": "10s", "first_token": "30s", "total": "30s"},
            }
        },
        "models": {"bench.ok": {"provider": "bench"}},
        "pools": {"p": {"capability": "chat-completion"}},
    }


def _provider_client(provider: Any, name: str) -> Client:
    from mesh_core._types import CompletionRequest
    from mesh_core.providers import Timeouts

    timeouts = Timeouts(connect=10, first_token=30, total=30)
    request = CompletionRequest(model="p", messages=list(MESSAGES))
    url = provider._url("ok", False)

    async def call(i: int) -> Any:
        return await provider._aexchange(url, BODY, timeouts)

    async def stream(i: int) -> int:
        n = 0
        s = await provider.astream("ok", request, timeouts)
        async for _ in s:
            n += 1
        return n

    return Client(name, call, stream, provider.aclose)


async def transport_now(url: str) -> Client:
    from mesh_core.providers import OpenAICompatibleProvider

    provider = OpenAICompatibleProvider("bench", base_url=url, max_connections=256)
    return _provider_client(provider, "mesh transport `_aexchange` (now)")


def _mesh_client(mesh: Any, name: str) -> Client:
    async def stream(i: int) -> int:
        n = 0
        async for _ in mesh.astream("p", MESSAGES):
            n += 1
        return n

    return Client(name, lambda i: mesh.acomplete("p", MESSAGES), stream, mesh.aclose)


async def mesh_now(url: str) -> Client:
    from mesh_core import Mesh

    return _mesh_client(Mesh.from_config(_mesh_config(url)), "`Mesh.acomplete` (now)")


async def httpx_bare(url: str) -> Client:
    import httpx

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    client = httpx.AsyncClient(base_url=url, limits=limits, timeout=30)

    async def call(i: int) -> Any:
        return (await client.post("/chat/completions", content=BODY, headers=HEADERS)).json()

    async def stream(i: int) -> int:
        n = 0
        async with client.stream(
            "POST", "/chat/completions", content=STREAM_BODY, headers=HEADERS
        ) as r:
            async for chunk in r.aiter_raw():
                n += chunk.count(b"data: ")
        return n

    return Client("bare `httpx.AsyncClient`", call, stream, client.aclose)


async def lc_mesh(url: str) -> Client:
    from modelmesh_langchain import MeshChatModel

    # Not closed: models built from one configuration share their mesh, kept by the process.
    model = MeshChatModel(pool="p", config=_mesh_config(url))
    return Client("`MeshChatModel.ainvoke`", lambda i: model.ainvoke("ping"))


async def openai_sdk(url: str) -> Client:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)

    async def call(i: int) -> Any:
        return await client.chat.completions.create(model="ok", messages=MESSAGES)

    return Client("openai SDK `AsyncOpenAI`", call, None, client.close)


async def lc_openai(url: str) -> Client:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(base_url=url, api_key="bench", model="ok", max_retries=0)
    return Client("`ChatOpenAI.ainvoke`", lambda i: model.ainvoke("ping"))


async def litellm_router(url: str) -> Client:
    from litellm import Router

    router = Router(
        model_list=[
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/ok", "api_base": url, "api_key": "x"},
            }
        ]
    )
    return Client(
        "LiteLLM `Router.acompletion`", lambda i: router.acompletion(model="m", messages=MESSAGES)
    )


CLIENTS: dict[str, Callable[[str], Awaitable[Client]]] = {
    "floor": floor,
    "h1proto": h1proto,
    "aiohttp": aiohttp_bare,
    "httpcore": httpcore_one,
    "httpcore8": httpcore_sharded,
    "transport": transport_now,
    "mesh": mesh_now,
    "httpx": httpx_bare,
    "lc_mesh": lc_mesh,
    "openai": openai_sdk,
    "lc_openai": lc_openai,
    "litellm": litellm_router,
}


def available(key: str) -> bool:
    needs = {"litellm": "litellm", "lc_openai": "langchain_openai", "openai": "openai"}
    if key not in needs:
        return True
    import importlib.util

    return importlib.util.find_spec(needs[key]) is not None


# --- cold start ---------------------------------------------------------------------------
COLD = {
    "floor": (
        "import asyncio; import floor",
        "c = floor.FloorClient(URL + '/chat/completions'); await c.post(0, BODY); c.close()",
    ),
    "h1proto": (
        "import h1proto",
        "c = h1proto.H1Client(URL + '/chat/completions'); await c.post(BODY); c.close()",
    ),
    "aiohttp": (
        "import aiohttp",
        "async with aiohttp.ClientSession() as s:\n"
        "        async with s.post(URL + '/chat/completions', data=BODY) as r: await r.read()",
    ),
    "httpx": (
        "import httpx",
        "async with httpx.AsyncClient() as c:\n"
        "        await c.post(URL + '/chat/completions', content=BODY)",
    ),
    "mesh": (
        "from mesh_core import Mesh",
        "m = Mesh.from_config(CFG); await m.acomplete('p', 'ping'); await m.aclose()",
    ),
}

COLD_SCRIPT = """
import sys, time, json, asyncio
sys.path.insert(0, {bench!r})
URL = {url!r}; BODY = {body!r}; CFG = {cfg!r}
t0 = time.perf_counter()
{imp}
t1 = time.perf_counter()
async def first():
    {first}
asyncio.run(first())
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def cold_start(url: str, keys: list[str], rounds: int) -> list[list[object]]:
    rows = []
    bench = os.path.dirname(os.path.abspath(__file__))
    for key in keys:
        if key not in COLD:
            continue
        imp, first = COLD[key]
        script = COLD_SCRIPT.format(
            bench=bench, url=url, body=BODY, cfg=_mesh_config(url), imp=imp, first=first
        )
        samples = []
        for _ in range(rounds):
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"cold start of {key}: {out.stderr}")
            samples.append(json.loads(out.stdout))
        imp_ms = statistics.median(s[0] for s in samples) * 1e3
        first_ms = statistics.median(s[1] for s in samples) * 1e3
        rows.append([key, f"{imp_ms:.0f}", f"{first_ms:.1f}", f"{imp_ms + first_ms:.0f}"])
    return rows


# --- the run ------------------------------------------------------------------------------
async def measure(url: str, keys: list[str], seconds: float, rounds: int) -> dict[str, Any]:
    cells: dict[str, dict[int, Cell]] = {}
    streams: dict[str, list[float]] = {}
    names: dict[str, str] = {}
    for r in range(rounds):
        for key in keys:
            client = await CLIENTS[key](url)
            names[key] = client.name
            await drive(client.call, 16, 0.3)  # warm the pool up
            for c in LEVELS:
                done, wall, cpu, lat = await drive(client.call, c, seconds)
                cell = cells.setdefault(key, {}).setdefault(c, Cell())
                cell.rps.append(done / wall)
                cell.cpu_us.append(cpu / max(done, 1) * 1e6)
                cell.p99_ms.append(pct(lat, 0.99) * 1e3)
            if client.stream is not None:
                done, wall, _, _ = await drive(client.stream, 16, seconds)
                chunks_per_stream = await client.stream(0)
                streams.setdefault(key, []).append(done * chunks_per_stream / wall)
            if client.close is not None:
                await client.close()
            print(f"round {r + 1}: {key} done", file=sys.stderr, flush=True)
    return {"cells": cells, "streams": streams, "names": names}


def report(result: dict[str, Any], cold: list[list[object]], seconds: float, rounds: int) -> None:
    cells, streams, names = result["cells"], result["streams"], result["names"]
    med = statistics.median
    floor_rps = {c: med(cells["floor"][c].rps) for c in LEVELS} if "floor" in cells else None
    rows = []
    for key, by_c in cells.items():
        row: list[object] = [names[key]]
        row += [f"{med(by_c[c].rps):,.0f}" for c in LEVELS]
        if floor_rps:
            row.append(f"{med(by_c[64].rps) / floor_rps[64]:.0%}")
        rows.append(row)
    print(f"Async requests per second ({machine()}; {seconds:g} s per cell, median of {rounds})\n")
    heads = ["client", *(f"c={c}" for c in LEVELS)] + (["c=64 / floor"] if floor_rps else [])
    print(table(heads, rows))
    rows = [
        [
            names[key],
            f"{med(by_c[64].cpu_us):.0f}",
            f"{med(by_c[64].p99_ms):.1f}",
            f"{med(by_c[256].p99_ms):.1f}",
            f"{med(streams[key]):,.0f}" if key in streams else "",
        ]
        for key, by_c in cells.items()
    ]
    print("\nCPU per request and p99 latency; streaming\n")
    heads = [
        "client",
        "CPU µs/req (c=64)",
        "p99 ms (c=64)",
        "p99 ms (c=256)",
        "stream chunks/s (c=16)",
    ]
    print(table(heads, rows))
    if cold:
        print("\nCold start: a fresh interpreter imports the client and makes its first request\n")
        print(table(["client", "import ms", "first request ms", "total ms"], cold))


def before_tree(rev: str) -> str:
    """The mesh as it was at ``rev`` (``git archive``), for the "before" rows."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tree = tempfile.mkdtemp(prefix="mesh-before-")
    archive = subprocess.run(
        ["git", "archive", rev, "mesh_core"], cwd=root, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
    return tree


def run_before(tree: str, url: str, seconds: float) -> dict[str, Any]:
    """One round of the mesh's own rows in a child interpreter importing the old tree."""
    env = {**os.environ, "PYTHONPATH": tree}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", url, "--seconds", str(seconds)]
    out = subprocess.run([*cmd, "--only", "transport,mesh"], env=env, capture_output=True)
    if out.returncode:
        raise RuntimeError(out.stderr.decode())
    return json.loads(out.stdout)


def merge(result: dict[str, Any], child: dict[str, Any]) -> None:
    for key, by_c in child["cells"].items():
        mine = result["cells"].setdefault(f"{key}_before", {})
        for c, cell in by_c.items():
            got = mine.setdefault(int(c), Cell())
            for name in ("rps", "cpu_us", "p99_ms"):
                getattr(got, name).extend(cell[name])
        name = child["names"][key].replace("(now)", f"(before: {child['rev']})")
        result["names"][f"{key}_before"] = name
        if key in child["streams"]:
            result["streams"].setdefault(f"{key}_before", []).extend(child["streams"][key])


async def rounds(url: str, keys: list[str], args: Any, tree: str | None) -> dict[str, Any]:
    """``args.rounds`` rounds, the old tree's rows (a child process) interleaved."""
    result: dict[str, Any] = {"cells": {}, "streams": {}, "names": {}}
    for _ in range(args.rounds):
        part = await measure(url, keys, args.seconds, 1)
        for key, by_c in part["cells"].items():
            for c, cell in by_c.items():
                got = result["cells"].setdefault(key, {}).setdefault(c, Cell())
                got.rps += cell.rps
                got.cpu_us += cell.cpu_us
                got.p99_ms += cell.p99_ms
        for key, samples in part["streams"].items():
            result["streams"].setdefault(key, []).extend(samples)
        result["names"].update(part["names"])
        if tree is not None:
            merge(result, run_before(tree, url, args.seconds))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="")
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument(
        "--before",
        default=BEFORE,
        help="git revision whose mesh gives the 'before' rows ('' for none)",
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    keys = [k for k in (args.only.split(",") if args.only else CLIENTS) if available(k)]
    if args.child:  # one round of ``keys`` against a running server, as JSON
        result = asyncio.run(measure(args.child, keys, args.seconds, 1))
        result["cells"] = {
            k: {c: vars(cell) for c, cell in by_c.items()} for k, by_c in result["cells"].items()
        }
        result["rev"] = os.environ.get("MESH_BEFORE_REV", "before")
        print(json.dumps(result))
        return
    tree = before_tree(args.before) if args.before else None
    os.environ["MESH_BEFORE_REV"] = args.before
    with FastServer() as server:
        # One event loop for every round: some peers (ChatOpenAI) keep their client per
        # process, and it cannot cross loops.
        result = asyncio.run(rounds(server.base_url, keys, args, tree))
        cold = [] if args.no_cold else cold_start(server.base_url, keys, max(3, args.rounds))
        if tree is not None and not args.no_cold:
            os.environ["PYTHONPATH"] = tree
            cold += [
                [f"mesh (before: {args.before})", *cold_start(server.base_url, ["mesh"], 3)[0][1:]]
            ]
            del os.environ["PYTHONPATH"]
    if tree is not None:
        shutil.rmtree(tree, ignore_errors=True)
    report(result, cold, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
