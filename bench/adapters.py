"""The adapters beside what users would use instead, on the same fast local server.

``MeshChatModel.invoke`` against ``ChatOpenAI.invoke``; and with the primary answering
503 on every call: the mesh against ``ChatOpenAI(...).with_fallbacks([...])`` and
LiteLLM's ``Router`` with a fallback. Needs ``langchain-openai`` and ``litellm``, which
are benchmark-only dependencies (see BENCHMARKS.md), never the project's.

    python bench/adapters.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch it from the web
os.environ.setdefault("LITELLM_TELEMETRY", "False")
warnings.filterwarnings("ignore")

from common import FastServer, machine, median, mesh_config, pct, table  # noqa: E402

PROMPT = "ping"


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(label: str, samples: list[float]) -> list[object]:
    return [label, len(samples), f"{median(samples) * 1e3:.2f}", f"{pct(samples, 0.9) * 1e3:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    n = args.requests

    from langchain_openai import ChatOpenAI
    from litellm import Router

    from modelmesh_langchain import MeshChatModel

    rows = []
    with FastServer() as server:
        url = server.base_url

        def openai(model: str, retries: int = 2) -> ChatOpenAI:
            return ChatOpenAI(base_url=url, api_key="bench", model=model, max_retries=retries)

        healthy_mesh = MeshChatModel(pool="p", config=mesh_config(url, ["ok"]))
        healthy_openai = openai("ok")
        for _ in range(50):
            healthy_mesh.invoke(PROMPT)
            healthy_openai.invoke(PROMPT)
        a, b = [], []
        for _ in range(n):  # interleaved
            a += timed(lambda: healthy_openai.invoke(PROMPT), 1)
            b += timed(lambda: healthy_mesh.invoke(PROMPT), 1)
        rows.append(fmt("healthy: ChatOpenAI.invoke", a))
        rows.append(fmt("healthy: MeshChatModel.invoke", b))

        failing_mesh = MeshChatModel(
            pool="p", config=mesh_config(url, ["fail", "ok"], strategy="priority-selection")
        )
        rows.append(
            fmt("503 primary: MeshChatModel.invoke", timed(lambda: failing_mesh.invoke(PROMPT), n))
        )
        fallback_default = openai("fail").with_fallbacks([openai("ok")])
        rows.append(
            fmt(
                "503 primary: ChatOpenAI.with_fallbacks (max_retries=2, default)",
                timed(lambda: fallback_default.invoke(PROMPT), max(5, n // 30)),
            )
        )
        fallback_noretry = openai("fail", 0).with_fallbacks([openai("ok", 0)])
        rows.append(
            fmt(
                "503 primary: ChatOpenAI.with_fallbacks (max_retries=0)",
                timed(lambda: fallback_noretry.invoke(PROMPT), n),
            )
        )
        router = Router(
            model_list=[
                {
                    "model_name": "primary",
                    "litellm_params": {"model": "openai/fail", "api_base": url, "api_key": "x"},
                },
                {
                    "model_name": "backup",
                    "litellm_params": {"model": "openai/ok", "api_base": url, "api_key": "x"},
                },
            ],
            fallbacks=[{"primary": ["backup"]}],
        )
        messages = [{"role": "user", "content": PROMPT}]
        rows.append(
            fmt(
                "503 primary: LiteLLM Router.completion (defaults)",
                timed(
                    lambda: router.completion(model="primary", messages=messages), max(5, n // 10)
                ),
            )
        )
    print(f"Adapters and alternatives, latency per call ({machine()})\n")
    print(table(["case", "calls", "median ms", "p90 ms"], rows))


if __name__ == "__main__":
    main()
