"""Shared helpers for the benchmark scripts: the fast server, statistics, tables."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FastServer:
    """bench/fastserver.py in its own process (its own core, its own GIL)."""

    def __enter__(self) -> FastServer:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fastserver.py"), str(self.port)], stdout=subprocess.PIPE
        )
        assert self.proc.stdout.readline().strip() == b"ready"
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()


def mesh_config(base_url: str, models: Sequence[str], **pool: object) -> dict:
    """One provider on the fast server; ``models`` are the provider-side names."""
    return {
        "providers": {
            "bench": {
                "base_url": base_url,
                "timeouts": {"connect": "2s", "first_token": "1s", "total": "1s"},
            }
        },
        "models": {f"bench.{m}": {"provider": "bench"} for m in models},
        "pools": {"p": {"capability": "chat-completion", **pool}},
    }


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}"
    )


PAYLOAD = {"model": "ok", "messages": [{"role": "user", "content": "ping"}]}
MESSAGES = PAYLOAD["messages"]
