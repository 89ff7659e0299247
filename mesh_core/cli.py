"""The ``modelmesh`` command: validate a configuration, show state, run the demo, serve faults.

modelmesh validate mesh.yaml
modelmesh status --config mesh.yaml
modelmesh demo [--real]
modelmesh serve-faults --port 8900
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from .errors import ConfigurationError, ModelMeshError

__all__ = ["main"]


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    from .assembly import capability_tree, pool_members
    from .config import load_config

    try:
        config = load_config(args.config)
    except ConfigurationError as exc:
        print(f"{args.config}: {len(exc.errors)} problem(s)", file=out)
        for path, problem in exc.errors:
            print(f"  {path or '<root>'}: {problem}", file=out)
        return 1
    tree = capability_tree(config)
    print(
        f"{args.config}: OK ({len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.pools)} pools, storage: {config.storage.backend})",
        file=out,
    )
    for pid, pool in config.pools.items():
        members = pool_members(pid, pool, config, tree)
        print(f"  pool {pid} ({pool.strategy}): {', '.join(members) or 'NO MODELS'}", file=out)
    return 0


def _status(args: argparse.Namespace, out: TextIO) -> int:
    from .config import load_config
    from .mesh import Mesh
    from .stores import create_store

    source = args.config or os.environ.get("MODELMESH_CONFIG") or "modelmesh.yaml"
    config = load_config(source)
    # Read-only: a JSON state file stays with the mesh that holds it.
    mesh = Mesh(config, store=create_store(config.storage, read_only=True))
    now = mesh.clock.time()
    rows = [
        (
            "pool",
            "model",
            "status",
            "reason",
            "recovers in",
            "requests",
            "failures",
            "tokens",
            "cost $",
        )
    ]
    for pid, pool in mesh.pools.items():
        pool.refresh(now)
        for model in pool.models:
            st = model.state
            recovers = "-"
            if st.status == "standby":
                recovers = "manual" if st.recover_at is None else _ago(st.recover_at - now)
            rows.append(
                (
                    pid,
                    model.id,
                    st.status,
                    st.deactivation_reason or "-",
                    recovers,
                    str(st.total_requests),
                    str(st.total_failures),
                    str(st.total_tokens),
                    f"{st.total_cost:.4f}",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)
    print(
        f"\nstate: {mesh.config.storage.backend}"
        + (f" ({mesh.config.storage.path})" if mesh.config.storage.path else ""),
        file=out,
    )
    return 0


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    if args.real:
        from .local_model import run_real_demo

        run_real_demo(requests=args.requests, out=out)
    else:
        from .demo import run_demo

        run_demo(args.requests, args.pace, out=out)
    return 0


def _serve_faults(args: argparse.Namespace, out: TextIO) -> int:
    from .testing.server import FaultServer

    server = FaultServer(port=args.port, api_key=args.api_key).start()
    print(f"fault server listening at {server.base_url} (Ctrl-C to stop)", file=out, flush=True)
    print(
        "control: POST /_control/behaviour {model, behaviour, once}, POST /_control/reset, "
        "GET /_control/requests",
        file=out,
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmesh", description="ModelMesh Lite command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a configuration file; every error with its key path")
    p.add_argument("config")
    p.set_defaults(run=_validate)

    p = sub.add_parser(
        "status",
        help="pools and models with status, reasons and recovery times, from the persisted state",
    )
    p.add_argument("--config", help="default: $MODELMESH_CONFIG or ./modelmesh.yaml")
    p.set_defaults(run=_status)

    p = sub.add_parser("demo", help="failover and recovery, live, with no API key")
    p.add_argument(
        "--real", action="store_true", help="run on two real local models (needs the 'local' extra)"
    )
    p.add_argument("--requests", type=int, default=28)
    p.add_argument("--pace", type=float, default=0.3, help="seconds between requests")
    p.set_defaults(run=_demo)

    p = sub.add_parser("serve-faults", help="start the fault-injecting OpenAI-compatible server")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--api-key", default=None, help="require this bearer key")
    p.set_defaults(run=_serve_faults)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        return args.run(args, out)
    except ModelMeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
