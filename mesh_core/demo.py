"""The demo: a pool of three models on local fault-injecting servers, failing and recovering.

Run it with ``python -m mesh_core.demo`` (no API key, no network beyond 127.0.0.1).
It prints, as it happens, which model answered each request, every failover,
deactivation and recovery, and ends with the state of each model.

The mesh runs on a manual clock that moves half a second per request, so the
story (cooldowns, trials, recoveries) is the same on every machine; ``pace`` only
spaces the output for the eye.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .clock import ManualClock
from .errors import ModelMeshError, StreamInterruptedError
from .events import Event, EventType
from .mesh import Mesh
from .testing import FaultServer, faults

__all__ = ["main", "run_demo"]

PROVIDERS = ("alpha", "beta", "gamma")
MODELS = {"alpha": "fast", "beta": "smart", "gamma": "backup"}


def _config(servers: dict[str, FaultServer], cooldown: float) -> dict:
    return {
        "providers": {
            name: {
                "base_url": s.base_url,
                "timeouts": {"connect": "1s", "first_token": "1s", "stall": "1s", "total": "3s"},
            }
            for name, s in servers.items()
        },
        "models": {f"{p}.{m}": {"provider": p} for p, m in MODELS.items()},
        "pools": {
            "reasoning": {
                "capability": "chat-completion",
                "strategy": "priority-selection",
                "model_priority": [f"{p}.{m}" for p, m in MODELS.items()],
                "deactivation": {"retry_limit": 2},
                "recovery": {"cooldown": cooldown},
                "retry": {"max_attempts": 1},
            }
        },
    }


def _script(servers: dict[str, FaultServer]) -> dict[int, tuple[str, Callable[[], None]]]:
    """What goes wrong before which request."""
    alpha, beta = servers["alpha"], servers["beta"]
    return {
        4: ("alpha starts answering 503", lambda: alpha.set("fast", faults.server_error(503))),
        8: ("beta's monthly quota runs out", lambda: beta.set("smart", faults.quota_exhausted())),
        9: ("alpha is healthy again", lambda: alpha.set("fast", faults.ok())),
        14: ("alpha starts cutting streams mid-answer", lambda: alpha.set("fast", faults.cut(3))),
        16: (
            "alpha's connections reset (beta's quota is still spent)",
            lambda: alpha.set("fast", faults.reset()),
        ),
        19: ("beta's quota is renewed", lambda: beta.set("smart", faults.ok())),
    }


STEP = 0.5
"""Simulated seconds between two requests."""


def run_demo(
    requests: int = 22, pace: float = 0.3, cooldown: float = 2.0, out: TextIO = sys.stdout
) -> Mesh:
    """Run the demo and return its mesh (closed) for inspection."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    servers = {name: FaultServer().start() for name in PROVIDERS}
    try:
        clock = ManualClock(time.time())
        mesh = Mesh.from_config(_config(servers, cooldown), clock=clock)
        mesh.on(EventType.MODEL_DEACTIVATED, lambda e: say(_standby_line(e, clock.time())))
        mesh.on(
            EventType.MODEL_REACTIVATED,
            lambda e: say(
                f"      ↺ {e.model_id} back from standby"
                + (" (on trial: one request decides)" if e.metadata.get("trial") else "")
            ),
        )
        say(
            "ModelMesh Lite demo: pool 'reasoning' = alpha.fast > beta.smart > gamma.backup "
            "(priority-selection)"
        )
        urls = ", ".join(s.base_url for s in servers.values())
        say(f"three local OpenAI-compatible servers: {urls}")
        say("")
        script = _script(servers)
        for i in range(1, requests + 1):
            clock.advance(STEP)
            if i in script:
                what, act = script[i]
                act()
                say(f"  ⚡ {what}")
            _one_request(mesh, i, stream=(i % 5 == 0), say=say)
            time.sleep(pace)
        say("")
        say(_state_table(mesh))
        mesh.close()
        return mesh
    finally:
        for s in servers.values():
            s.stop()


def _one_request(mesh: Mesh, i: int, *, stream: bool, say: Callable[[str], None]) -> None:
    prompt = f"question {i}"
    t0 = time.perf_counter()
    try:
        if stream:
            chunks = list(mesh.stream("reasoning", prompt))
            last = chunks[-1]
            model, attempts = last.model, last.attempts or []
            kind = "stream"
        else:
            resp = mesh.complete("reasoning", prompt)
            model, attempts, kind = resp.model, resp.attempts, "complete"
    except StreamInterruptedError as exc:
        say(f"#{i:02d} {'stream':8} ✗ {exc.model_id} broke mid-answer: {exc.partial_text!r}")
        return
    except ModelMeshError as exc:
        say(f"#{i:02d} ✗ {type(exc).__name__}: {exc}")
        return
    ms = (time.perf_counter() - t0) * 1000
    failed = [f"{a.model_id}: {a.outcome}" for a in attempts if a.outcome != "success"]
    note = f"  (failed over from {', '.join(failed)})" if failed else ""
    say(f"#{i:02d} {kind:8} → {model:13} {ms:6.1f} ms{note}")


def _standby_line(e: Event, now: float) -> str:
    recover_at = e.metadata.get("recover_at")
    when = f", back in {max(0.0, recover_at - now):.1f}s" if recover_at else ""
    return f"      ⏸ {e.model_id} → standby ({e.metadata.get('reason')}{when})"


def _state_table(mesh: Mesh) -> str:
    rows = [
        "model           status    reason            requests  failures  tokens",
        "--------------  --------  ----------------  --------  --------  ------",
    ]
    for mid in mesh.models:
        s = mesh.snapshot(mid)
        st = mesh.model(mid).state
        rows.append(
            f"{mid:14}  {s.status:8}  {s.deactivation_reason or '-':16}  "
            f"{st.total_requests:8}  {st.total_failures:8}  {st.total_tokens:6}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mesh_core.demo", description=__doc__)
    parser.add_argument("--requests", type=int, default=28)
    parser.add_argument("--pace", type=float, default=0.3, help="seconds between requests")
    args = parser.parse_args(argv)
    run_demo(args.requests, args.pace)


if __name__ == "__main__":
    main()
