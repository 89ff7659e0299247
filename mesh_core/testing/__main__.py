"""Run the fault-injecting server: ``python -m mesh_core.testing --port 8900``."""

from __future__ import annotations

import argparse
import signal
import threading

from .server import FaultServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mesh_core.testing",
        description="An OpenAI-compatible server on 127.0.0.1 that fails on command.",
    )
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--api-key", default=None, help="require this bearer key (401 otherwise)")
    args = parser.parse_args(argv)
    server = FaultServer(port=args.port, api_key=args.api_key).start()
    print(f"fault server listening at {server.base_url}", flush=True)
    print(
        "control: POST /_control/behaviour {model, behaviour, once}; POST /_control/reset; "
        "GET /_control/requests",
        flush=True,
    )
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
