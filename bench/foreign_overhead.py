"""What a foreign model costs as a pool member: ``ChatOpenAI`` called directly against the
same ``ChatOpenAI`` behind ``MeshChatModel.from_models``, side by side (interleaved) on the
fast local server, for ``invoke``, ``ainvoke`` (one event loop), ``stream`` and ``astream``;
and, with the primary answering 503 on every call, ``from_models`` against
``ChatOpenAI.with_fallbacks``. ``langchain-openai`` is in the ``dev`` extra.

    python bench/foreign_overhead.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

warnings.filterwarnings("ignore")

from common import FastServer, machine, median, pct, table  # noqa: E402

PROMPT = "ping"


def _us(samples: list[float], q: float | None = None) -> float:
    return (median(samples) if q is None else pct(samples, q)) * 1e6


def row(label: str, direct: list[float], meshed: list[float]) -> list[object]:
    added = _us(meshed) - _us(direct)
    return [
        label,
        len(direct),
        f"{_us(direct):.0f}",
        f"{_us(direct, 0.9):.0f}",
        f"{_us(meshed):.0f}",
        f"{_us(meshed, 0.9):.0f}",
        f"{added:+.0f}",
        f"{_us(meshed) / _us(direct):.2f}",
    ]


def interleaved(a: Callable[[], Any], b: Callable[[], Any], n: int) -> tuple[list[float], ...]:
    out: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for fn, samples in ((a, out[0]), (b, out[1])):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return out


async def ainterleaved(
    a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]], n: int
) -> tuple[list[float], ...]:
    out: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for fn, samples in ((a, out[0]), (b, out[1])):
            t0 = time.perf_counter()
            await fn()
            samples.append(time.perf_counter() - t0)
    return out


async def drain(stream: Any) -> None:
    async for _ in stream:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    n = parser.parse_args().requests

    from langchain_openai import ChatOpenAI

    from modelmesh_langchain import MeshChatModel

    rows = []
    with FastServer() as server:

        def chat(model: str) -> ChatOpenAI:
            return ChatOpenAI(base_url=server.base_url, api_key="bench", model=model, max_retries=0)

        direct = chat("ok")
        meshed = MeshChatModel.from_models({"bench.ok": chat("ok")})
        for _ in range(50):  # warm both: connections, imports, caches
            direct.invoke(PROMPT)
            meshed.invoke(PROMPT)
            list(direct.stream(PROMPT))
            list(meshed.stream(PROMPT))

        rows.append(
            row(
                "invoke",
                *interleaved(lambda: direct.invoke(PROMPT), lambda: meshed.invoke(PROMPT), n),
            )
        )
        # where the time goes: the mesh alone over the foreign model (no LangChain layer
        # around it), and MeshChatModel over a native provider of the same server
        mesh = meshed.mesh
        messages = [{"role": "user", "content": PROMPT}]
        native = MeshChatModel.from_models(
            {"bench.ok": chat("ok")},
            config={
                "providers": {"native": {"base_url": server.base_url}},
                "models": {"native.ok": {"provider": "native"}},
                "pools": {"default": {"model_priority": ["native.ok", "bench.ok"]}},
            },
        )
        for _ in range(50):
            mesh.complete("default", messages)
            native.invoke(PROMPT)
        rows.append(
            row(
                "invoke vs Mesh.complete (no LangChain layer around the mesh)",
                *interleaved(
                    lambda: direct.invoke(PROMPT), lambda: mesh.complete("default", messages), n
                ),
            )
        )
        rows.append(
            row(
                "invoke vs MeshChatModel over a native provider (for scale)",
                *interleaved(lambda: direct.invoke(PROMPT), lambda: native.invoke(PROMPT), n),
            )
        )
        rows.append(
            row(
                "stream (20 tokens)",
                *interleaved(
                    lambda: list(direct.stream(PROMPT)), lambda: list(meshed.stream(PROMPT)), n
                ),
            )
        )

        async def in_one_loop() -> list[list[object]]:
            for _ in range(50):
                await direct.ainvoke(PROMPT)
                await meshed.ainvoke(PROMPT)
            out = [
                row(
                    "ainvoke (one event loop)",
                    *await ainterleaved(
                        lambda: direct.ainvoke(PROMPT), lambda: meshed.ainvoke(PROMPT), n
                    ),
                )
            ]
            out.append(
                row(
                    "astream (20 tokens, one event loop)",
                    *await ainterleaved(
                        lambda: drain(direct.astream(PROMPT)),
                        lambda: drain(meshed.astream(PROMPT)),
                        n,
                    ),
                )
            )
            return out

        rows += asyncio.run(in_one_loop())

        fallbacks = chat("fail").with_fallbacks([chat("ok")])
        failing = MeshChatModel.from_models(
            {"primary.fail": chat("fail"), "backup.ok": chat("ok")},
            config={"pools": {"default": {"retry": {"max_attempts": 1}}}},
        )
        for _ in range(10):
            failing.invoke(PROMPT)
            fallbacks.invoke(PROMPT)
        rows.append(
            row(
                "503 primary: with_fallbacks vs from_models",
                *interleaved(lambda: fallbacks.invoke(PROMPT), lambda: failing.invoke(PROMPT), n),
            )
        )
    print(f"A ChatOpenAI called directly, and as a from_models pool member ({machine()})\n")
    print(
        table(
            [
                "call",
                "calls",
                "direct median µs",
                "direct p90 µs",
                "meshed median µs",
                "meshed p90 µs",
                "added µs (median)",
                "ratio",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
