"""Cold start: the first call of a fresh process, a call per new event loop, and the
sockets left behind by many event loops; the mesh beside bare httpx, the openai SDK and
LangChain's ``ChatOpenAI`` on the same fast local server.

* *First call*: each subject in a fresh interpreter (its imports done before the clock
  starts, as the targets say), timing the construction of the client (``httpx.Client()``,
  ``Mesh.from_config``, ``OpenAI()``, ``ChatOpenAI()``) and its first answer; the subjects
  alternate run by run so that drift on a shared machine hits them alike.
* *``asyncio.run`` per call*: one process, each call in its own ``asyncio.run`` (scripts,
  per-thread loops and LlamaIndex's sync APIs do this), interleaved; the bare httpx call
  creates an ``httpx.AsyncClient`` and posts once, as a script would (and, as a floor, with
  one TLS context shared by all its clients). The mesh is created once and reused across the
  loops (its pools for each loop are its own business).
* *fds after many loops*: each subject in a fresh interpreter runs 30 ``asyncio.run`` of 10
  concurrent calls; open file descriptors above the baseline are counted after the loops
  and after closing the client (and a garbage collection), and ResourceWarnings are counted.

The openai SDK and ``langchain-openai`` are benchmark-only dependencies (see BENCHMARKS.md);
without them their rows are skipped.

    python bench/cold_start.py [--runs 15] [--calls 100]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from common import MESSAGES, PAYLOAD, FastServer, machine, median, mesh_config, pct, table

FIRST_CALL = ("httpx", "mesh", "httpx-async", "mesh-async", "openai", "chatopenai")
FD_SUBJECTS = ("httpx", "mesh", "meshchatmodel", "openai", "chatopenai")
LOOPS, CONCURRENCY = 30, 10


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _subjects(names: tuple[str, ...]) -> list[str]:
    needs = {
        "openai": "openai",
        "chatopenai": "langchain_openai",
        "meshchatmodel": "langchain_core",
    }
    return [n for n in names if n not in needs or _has(needs[n])]


# --- children: one measurement in a fresh interpreter ----------------------------------
def _first_call(kind: str, url: str) -> float:
    """Seconds from constructing ``kind``'s client to its first answer (imports excluded)."""
    if kind == "httpx":
        import httpx

        t0 = time.perf_counter()
        with httpx.Client() as client:
            client.post(f"{url}/chat/completions", json=PAYLOAD).json()
        return time.perf_counter() - t0
    if kind == "httpx-async":
        import httpx

        async def first() -> None:
            async with httpx.AsyncClient() as client:
                (await client.post(f"{url}/chat/completions", json=PAYLOAD)).json()

        t0 = time.perf_counter()
        asyncio.run(first())
        return time.perf_counter() - t0
    if kind in ("mesh", "mesh-async"):
        from mesh_core import Mesh

        t0 = time.perf_counter()
        mesh = Mesh.from_config(mesh_config(url, ["ok"]))
        if kind == "mesh":
            mesh.complete("p", MESSAGES)
        else:
            asyncio.run(mesh.acomplete("p", MESSAGES))
        elapsed = time.perf_counter() - t0
        mesh.close()
        return elapsed
    if kind == "openai":
        from openai import OpenAI

        t0 = time.perf_counter()
        with OpenAI(base_url=url, api_key="bench", max_retries=0) as sdk:
            sdk.chat.completions.create(model="ok", messages=MESSAGES)  # type: ignore[arg-type]
        return time.perf_counter() - t0
    if kind == "chatopenai":
        from langchain_openai import ChatOpenAI

        t0 = time.perf_counter()
        ChatOpenAI(base_url=url, api_key="bench", model="ok", max_retries=0).invoke("ping")
        return time.perf_counter() - t0
    raise ValueError(kind)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _many_loops(kind: str, url: str) -> dict[str, int]:
    """Fds above the baseline after LOOPS asyncio.run's of CONCURRENCY calls, then after
    closing the client; and the ResourceWarnings seen."""
    close: Callable[[], None] = lambda: None  # noqa: E731
    if kind == "httpx":
        import httpx

        async def one_loop() -> None:
            async with httpx.AsyncClient() as client:
                await asyncio.gather(
                    *(client.post(f"{url}/chat/completions", json=PAYLOAD) for _ in range(10))
                )

    elif kind == "mesh":
        from mesh_core import Mesh

        mesh = Mesh.from_config(mesh_config(url, ["ok"]))
        close = mesh.close

        async def one_loop() -> None:
            await asyncio.gather(*(mesh.acomplete("p", MESSAGES) for _ in range(CONCURRENCY)))

    elif kind == "meshchatmodel":
        from modelmesh_langchain import MeshChatModel

        chat = MeshChatModel(pool="p", config=mesh_config(url, ["ok"]))
        close = chat.mesh.close

        async def one_loop() -> None:
            await chat.abatch(["ping"] * CONCURRENCY)

    elif kind == "openai":
        from openai import AsyncOpenAI

        async def one_loop() -> None:
            async with AsyncOpenAI(base_url=url, api_key="bench", max_retries=0) as sdk:
                await asyncio.gather(
                    *(
                        sdk.chat.completions.create(model="ok", messages=MESSAGES)  # type: ignore[arg-type]
                        for _ in range(CONCURRENCY)
                    )
                )

    elif kind == "chatopenai":
        from langchain_openai import ChatOpenAI

        llm = ChatOpenAI(base_url=url, api_key="bench", model="ok", max_retries=0)

        async def one_loop() -> None:
            await llm.abatch(["ping"] * CONCURRENCY)

    else:
        raise ValueError(kind)
    gc.collect()
    baseline = _open_fds()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        failed = 0
        for _ in range(LOOPS):
            try:
                asyncio.run(one_loop())
            except Exception:
                failed += 1
        gc.collect()
        after_loops = _open_fds() - baseline
        close()
        gc.collect()
        after_close = _open_fds() - baseline
    resource = sum(issubclass(w.category, ResourceWarning) for w in seen)
    return {
        "after_loops": after_loops,
        "after_close": after_close,
        "warnings": resource,
        "failed": failed,
    }


def _child(argv: list[str]) -> None:
    what, kind, url = argv
    if what == "first":
        print(json.dumps(_first_call(kind, url)))
    else:
        print(json.dumps(_many_loops(kind, url)))


def _spawn(what: str, kind: str, url: str) -> Any:
    # Imports before the clock: the child imports its subject's modules first.
    preload = {
        "httpx": "import httpx",
        "httpx-async": "import httpx",
        "mesh": "import httpx; from mesh_core import Mesh",
        "mesh-async": "import httpx; from mesh_core import Mesh",
        "meshchatmodel": "import modelmesh_langchain",
        "openai": "import openai",
        "chatopenai": "import langchain_openai",
    }[kind]
    code = (
        f"import sys; sys.path.insert(0, {str(os.path.dirname(__file__))!r}); {preload}; "
        f"import cold_start; cold_start._child({[what, kind, url]!r})"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- asyncio.run per call, in this process ----------------------------------------------
def _per_loop(url: str, calls: int, failures: dict[str, str]) -> dict[str, list[float]]:
    """Seconds per ``asyncio.run`` of one call, per subject; a subject's first failure goes
    to ``failures``."""
    import httpx

    from mesh_core import Mesh

    mesh = Mesh.from_config(mesh_config(url, ["ok"]))

    async def bare() -> None:
        async with httpx.AsyncClient() as client:
            (await client.post(f"{url}/chat/completions", json=PAYLOAD)).json()

    shared = httpx.create_ssl_context()

    async def lean() -> None:  # what is left once the TLS context is not rebuilt per client
        async with httpx.AsyncClient(verify=shared) as client:
            (await client.post(f"{url}/chat/completions", json=PAYLOAD)).json()

    subjects: dict[str, Callable[[], Any]] = {
        "bare httpx: AsyncClient() + post": bare,
        "bare httpx, one shared TLS context: AsyncClient(verify=ctx) + post": lean,
        "mesh.acomplete": lambda: mesh.acomplete("p", MESSAGES),
    }
    if _has("openai"):
        from openai import AsyncOpenAI

        async def sdk() -> None:
            async with AsyncOpenAI(base_url=url, api_key="bench", max_retries=0) as client:
                await client.chat.completions.create(model="ok", messages=MESSAGES)  # type: ignore[arg-type]

        subjects["openai SDK: AsyncOpenAI() + create"] = sdk
    if _has("langchain_openai"):
        from langchain_openai import ChatOpenAI

        llm = ChatOpenAI(base_url=url, api_key="bench", model="ok", max_retries=0)
        subjects["ChatOpenAI.ainvoke (one instance)"] = lambda: llm.ainvoke("ping")
    if _has("langchain_core"):
        from modelmesh_langchain import MeshChatModel

        chat = MeshChatModel(pool="p", config=mesh_config(url, ["ok"]))
        subjects["MeshChatModel.ainvoke (one instance)"] = lambda: chat.ainvoke("ping")
    times: dict[str, list[float]] = {name: [] for name in subjects}
    failed = dict.fromkeys(subjects, 0)
    for i in range(calls + 5):
        for name, make in subjects.items():
            t0 = time.perf_counter()
            try:
                asyncio.run(make())
            except Exception as exc:  # reported, not timed: a subject that cannot do this
                failed[name] += 1
                failures[name] = f"{failed[name]} of {calls + 5}: {type(exc).__name__}: {exc}"
                continue
            if i >= 5:  # the first few warm the imports and this process's caches
                times[name].append(time.perf_counter() - t0)

    async def one_loop() -> list[float]:
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await mesh.acomplete("p", MESSAGES)
            out.append(time.perf_counter() - t0)
        return out

    times["mesh.acomplete, all calls in one loop (reference)"] = asyncio.run(one_loop())
    mesh.close()
    return times


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    with FastServer() as server:
        url = server.base_url
        first: dict[str, list[float]] = {k: [] for k in _subjects(FIRST_CALL)}
        for _ in range(args.runs):
            for kind in first:
                first[kind].append(_spawn("first", kind, url))
        failures: dict[str, str] = {}
        loops = _per_loop(url, args.calls, failures)
        fds = {kind: _spawn("fds", kind, url) for kind in _subjects(FD_SUBJECTS)}

    names = {
        "httpx": "bare httpx: `httpx.Client()` + first post",
        "mesh": "`Mesh.from_config` + first `mesh.complete`",
        "httpx-async": "bare httpx: `asyncio.run`, `httpx.AsyncClient()` + first post",
        "mesh-async": "`Mesh.from_config` + `asyncio.run(mesh.acomplete(...))`",
        "openai": "openai SDK: `OpenAI()` + first `create`",
        "chatopenai": "`ChatOpenAI()` + first `invoke`",
    }
    # Each subject beside the bare httpx call of its kind: the async ones import anyio on
    # their first call (httpx does so lazily), the sync ones do not.
    reference = {"httpx-async": "httpx-async", "mesh-async": "httpx-async"}
    rows = []
    for k, v in first.items():
        bare = median(first[reference.get(k, "httpx")])
        rows.append(
            [
                names[k],
                f"{median(v) * 1e3:.1f}",
                f"{pct(v, 0.9) * 1e3:.1f}",
                f"{(median(v) - bare) * 1e3:+.1f}",
            ]
        )
    print(f"First call in a fresh process, imports excluded ({args.runs} runs; {machine()})\n")
    print(table(["subject", "median ms", "p90 ms", "vs bare httpx of its kind (median)"], rows))

    base = median(loops["bare httpx: AsyncClient() + post"])
    rows = [
        [
            name,
            f"{median(v) * 1e3:.2f}" if v else "-",
            f"{pct(v, 0.9) * 1e3:.2f}" if v else "-",
            f"{median(v) / base:.2f}" if v else "-",
            failures.get(name, "0"),
        ]
        for name, v in loops.items()
    ]
    print(f"\n`asyncio.run` per call, interleaved ({args.calls} calls each; {machine()})\n")
    print(table(["subject", "median ms", "p90 ms", "ratio to bare httpx", "failed calls"], rows))

    labels = {
        "httpx": "bare httpx: `async with httpx.AsyncClient()` per loop",
        "mesh": "one `Mesh`, `acomplete` x10 per loop",
        "meshchatmodel": "one `MeshChatModel`, `abatch` of 10 per loop",
        "openai": "openai SDK: `async with AsyncOpenAI()` per loop",
        "chatopenai": "one `ChatOpenAI`, `abatch` of 10 per loop",
    }
    rows = [
        [labels[k], v["after_loops"], v["after_close"], v["warnings"], v["failed"]]
        for k, v in fds.items()
    ]
    print(
        f"\nOpen fds above the baseline after {LOOPS} `asyncio.run` of {CONCURRENCY} concurrent "
        f"calls ({machine()})\n"
    )
    print(
        table(
            [
                "subject",
                "after the loops",
                "after close() and gc",
                "ResourceWarnings",
                "failed loops",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
