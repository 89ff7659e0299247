"""Each dialect's overhead over a bare httpx call to the same fake server.

For every built-in provider type, two calls are interleaved against the fault server (in its
own process, speaking every protocol on one port): a bare ``httpx.Client.post`` of the very
body the dialect would send, to the same URL with the same headers, its reply read with
``.json()``; and the provider's own ``complete`` (the transport plus the dialect: building the
body from a ``CompletionRequest``, parsing and validating the reply into the mesh's types).
Prints a markdown table of medians in microseconds. The server is the threaded fault server
(slower than bench/fastserver.py, which speaks only OpenAI), so the absolute figures are
higher than overhead.py's; the difference between the two columns is what the provider adds.

    python bench/dialects.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import httpx
from common import free_port, machine, median, table

from mesh_core._config import load_config
from mesh_core._types import CompletionRequest
from mesh_core.providers import create_provider
from mesh_core.providers._base import Timeouts

TYPES = ("openai-compatible", "azure-openai", "anthropic", "gemini")
MESSAGES = [{"role": "user", "content": "ping"}]


def _server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh_core.testing", "--port", str(port)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and b"listening" in proc.stdout.readline()
    return proc, f"http://127.0.0.1:{port}"


def _provider(kind: str, root: str) -> Any:
    base = f"{root}/v1" if kind == "openai-compatible" else root
    config = load_config(
        {
            "providers": {"p": {"type": kind, "base_url": base, "api_key": "bench-key"}},
            "models": {"p.ok": {"provider": "p"}},
            "pools": {"x": {"capability": "chat-completion"}},
        }
    )
    return create_provider("p", config.providers["p"])


def measure(kind: str, root: str, n: int) -> tuple[float, float]:
    provider = _provider(kind, root)
    request = CompletionRequest(model="x", messages=list(MESSAGES))
    timeouts = Timeouts(connect=2.0, first_token=5.0, total=5.0)
    url = str(provider._url("ok", False))
    headers = dict(provider._headers)
    body = json.dumps(provider.dialect.build_payload(request, "ok", stream=False)).encode()
    bare, ours = [], []
    clock = time.perf_counter
    with httpx.Client() as client:
        for _ in range(100):  # warm both connection pools
            client.post(url, content=body, headers=headers).json()
            provider.complete("ok", request, timeouts)
        for _ in range(n):
            t0 = clock()
            client.post(url, content=body, headers=headers).json()
            t1 = clock()
            provider.complete("ok", request, timeouts)
            t2 = clock()
            bare.append(t1 - t0)
            ours.append(t2 - t1)
    provider.close()
    return median(bare) * 1e6, median(ours) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    proc, root = _server()
    try:
        rows = []
        for kind in TYPES:
            bare, ours = measure(kind, root, args.requests)
            rows.append(
                [kind, f"{bare:.0f}", f"{ours:.0f}", f"{ours - bare:+.0f}", f"{ours / bare:.2f}"]
            )
    finally:
        proc.terminate()
        proc.wait()
    print(f"Provider vs bare httpx, per dialect ({args.requests} interleaved calls; {machine()})\n")
    headers = ["type", "bare httpx median µs", "provider median µs", "added µs", "ratio"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
