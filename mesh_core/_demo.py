"""The demo: a pool of three models on local fault-injecting servers, failing and recovering.

Run it with ``python -m mesh_core._demo`` (no API key, no network beyond 127.0.0.1).
It prints, as it happens, which model answered each request, how long the request
took (failed attempts included; connections are opened before the story starts, so a
first connection is not mistaken for the cost of failing over) and what it failed over
from, then, under it, what that request caused: a model going to standby, one coming
back. It ends with the state of each model (``modelmesh demo --real`` tells the same
story on two real local models, :func:`mesh_core._local_model.run_real_demo`).

The mesh runs on a manual clock that moves half a second per request, so the
story (cooldowns, trials, recoveries) is the same on every machine; ``pace`` only
spaces the output for the eye.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ._clock import ManualClock
from ._errors import ModelMeshError, StreamInterruptedError
from ._events import Event, EventType
from ._mesh import Mesh
from ._types import CompletionChunk
from .testing import FaultServer, faults

__all__ = ["Story", "main", "run_demo", "state_table", "warm_up"]

PROVIDERS = ("alpha", "beta", "gamma")
MODELS = {"alpha": "fast", "beta": "smart", "gamma": "backup"}


def _config(servers: dict[str, FaultServer], cooldown: float) -> dict[str, Any]:
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
                # Streams continue by prefill and are hedged by default; a demo is too short
                # for ``after: auto`` to learn each model's time to first token, so it is set.
                "hedging": {"after": "1s"},
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
        10: (
            "alpha's next first token is late (3 s)",
            lambda: alpha.enqueue("fast", faults.slow_first_token(3)),
        ),
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
        story = Story(mesh, say)
        say(
            "ModelMesh Lite demo: pool 'reasoning' = alpha.fast > beta.smart > gamma.backup "
            "(priority-selection)"
        )
        urls = ", ".join(s.base_url for s in servers.values())
        say(f"three local OpenAI-compatible servers: {urls}")
        warm_up(mesh)
        say(
            "(one warm-up call per server first, outside the mesh: the times below are "
            "requests, failed attempts included, not connection set-up)"
        )
        say("")
        script = _script(servers)
        for i in range(1, requests + 1):
            clock.advance(STEP)
            if i in script:
                what, act = script[i]
                act()
                say(f"  ⚡ {what}")
            story.request(i, f"question {i}", stream=(i % 5 == 0))
            time.sleep(pace)
        say("")
        say(state_table(mesh))
        mesh.close()
        return mesh
    finally:
        for s in servers.values():
            s.stop()


def warm_up(mesh: Mesh) -> None:
    """One call to each model straight through its provider, outside the mesh, then a
    full garbage collection.

    The first call to a server opens its connection (a few milliseconds on 127.0.0.1,
    more to a real API); without this, the first request a backup serves would show that
    set-up as the cost of failing over. Going around the mesh leaves its state as it was:
    no counter, no latency history, no event. A server that is down is skipped. The
    collection is Python's, not the mesh's: the first full one after start-up walks
    everything imported (20 ms or so) and would otherwise land on whichever request
    happened to trigger it.
    """
    from ._errors import ProviderError
    from ._types import CompletionRequest
    from .providers import Timeouts

    limits = Timeouts(connect=2.0, first_token=10.0, stall=10.0, total=30.0)
    for mid, model in mesh.models.items():
        request = CompletionRequest(
            model=mid, messages=[{"role": "user", "content": "warm-up"}], max_tokens=1
        )
        with contextlib.suppress(ProviderError):
            mesh.providers[model.provider_id].complete(model.name, request, limits)
    gc.collect()


class Story:
    """Tells a demo as it happens: one line per request, then, indented under it, what
    that request caused (a model going to standby, one coming back).

    Events fire while a request runs, before its outcome is known: printed at once they
    would land above the request that caused them, so they wait for its line.
    """

    def __init__(self, mesh: Mesh, say: Callable[[str], None]) -> None:
        self.mesh = mesh
        self.say = say
        self._caused: list[str] = []
        mesh.on(EventType.MODEL_DEACTIVATED, lambda e: self._caused.append(_standby_line(e)))
        mesh.on(EventType.MODEL_REACTIVATED, lambda e: self._caused.append(_back_line(e)))

    def request(
        self,
        i: int,
        prompt: str,
        *,
        pool: str = "reasoning",
        stream: bool = False,
        show_answer: bool = False,
        **params: Any,
    ) -> None:
        """Send one request and tell what happened."""
        t0 = time.perf_counter()
        kind = "stream" if stream else "complete"
        try:
            broke = ""
            if stream:
                chunks = list(self.mesh.stream(pool, prompt, **params))
                last = chunks[-1]
                model, attempts = last.model, last.attempts or []
                content = "".join(c.content or "" for c in chunks)
                broke = _continuation(chunks)
            else:
                resp = self.mesh.complete(pool, prompt, **params)
                model, attempts, content = resp.model, resp.attempts, resp.content or ""
        except StreamInterruptedError as exc:
            self.say(f"#{i:02d} {kind:8} ✗ {exc.model_id} broke mid-answer: {exc.partial_text!r}")
        except ModelMeshError as exc:
            self.say(f"#{i:02d} {kind:8} ✗ {type(exc).__name__}: {exc}")
        else:
            ms = (time.perf_counter() - t0) * 1000
            failed = [
                f"{a.model_id}: {a.outcome}"
                for a in attempts
                if a.outcome not in ("success", "stream_interrupted", "slow", "cancelled")
            ]
            note = f"failed over from {', '.join(failed)}" if failed else ""
            slow = [a.model_id for a in attempts if a.outcome == "slow"]
            if slow:
                hedged = f"{slow[0]}'s first token was late: hedged, {model} answered first"
                note = "; ".join(filter(None, (hedged, note)))
            if broke:
                note = "; ".join(filter(None, (broke, note, f"{model} took the answer over")))
            note = f"  ({note})" if note else ""
            answer = ""
            if show_answer:
                answer = f"  {prompt} → {content.strip().replace(chr(10), ' ')[:60]}"
            self.say(f"#{i:02d} {kind:8} → {model:13} {ms:6.1f} ms{note}{answer}")
        caused, self._caused = self._caused, []
        for line in caused:
            self.say(line)


def _continuation(chunks: list[CompletionChunk]) -> str:
    """What a stream that broke mid-answer and went on elsewhere says about it: the model
    that broke and what it had sent (continued by prefill, or started over)."""
    for i, chunk in enumerate(chunks):
        if chunk.continued_from or chunk.restarted:
            partial = "".join(c.content or "" for c in chunks[:i])
            broke = f"{chunk.continued_from or 'a model'} broke mid-answer after {partial!r}"
            return broke + (" (started over)" if chunk.restarted else "")
    return ""


def _standby_line(e: Event) -> str:
    recover_at = e.metadata.get("recover_at")
    when = f", back in {max(0.0, recover_at - e.timestamp):.1f}s" if recover_at else ""
    return f"      ⏸ {e.model_id} → standby ({e.metadata.get('reason')}{when})"


def _back_line(e: Event) -> str:
    trial = " (on trial: one request decides)" if e.metadata.get("trial") else ""
    return f"      ↺ {e.model_id} back from standby{trial}"


def state_table(mesh: Mesh) -> str:
    """Each model's status, standby reason and counters, as the demos end."""
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
    parser = argparse.ArgumentParser(prog="python -m mesh_core._demo", description=__doc__)
    parser.add_argument("--requests", type=int, default=28)
    parser.add_argument("--pace", type=float, default=0.3, help="seconds between requests")
    args = parser.parse_args(argv)
    run_demo(args.requests, args.pace)


if __name__ == "__main__":
    main()
