"""Tail latency under a primary whose first token is sometimes very late (issue 18).

A pool ``p`` (``priority-selection`` over ``[primary, fallback]``, each on its own fault
server). The primary answers most requests in 0.2-0.6 s to the first token, but 10 % of
them (exactly, placed at random, seeded; ``--slow-share``) only after 5-20 s; the fallback
is healthy and a little slower (0.5 s to its first token). Both then stream 20 chunks,
20 ms apart. Every setting below streams the same requests through ``Mesh.stream``
(``--requests``, from ``--concurrency`` threads, after ``--warmup`` requests that are not
measured and never slow), all settings at once, so they are measured side by side:
p50 / p95 / p99 of the time to the first token and to the last, the extra requests the
setting cost (requests the two servers received, minus requests made), how often the
primary was put in standby (and why), and answers lost (an error, or a text that is not
the answer).

``--scale 0.1`` multiplies every delay (and the fixed timeout) by 0.1 so that a run is
quick; the library's own timeouts and floors are not scaled, so below about 0.5 the slow
first tokens come before hedging's 2 s and adaptive deadlines' 5 s minimums and those rows
show no effect: a small scale is a smoke test, the figures are those of ``--scale 1``.

A setting is one line of ``SETTINGS``: a label and a function of the scale returning a
configuration override (merged as by ``stream_rescue.py``: under ``providers`` the key
``"*"`` means every provider). More from the command line:
``--setting 'stall 5s={"providers": {"*": {"timeouts": {"stall": "5s"}}}}'``. A setting
the library does not know yet (a ConfigurationError) is reported as not available.

    python bench/tail_latency.py                  # ~100 s
    python bench/tail_latency.py --scale 0.25     # ~30 s
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import machine, pct, table
from stream_rescue import config_problem, merge

from mesh_core import ConfigurationError, EventType, Mesh
from mesh_core.testing import FaultServer, faults


def pool(**settings: Any) -> dict[str, Any]:
    return {"pools": {"p": settings}}


def providers(**settings: Any) -> dict[str, Any]:
    return {"providers": {"*": settings}}


OFF = merge(pool(hedging={"after": "off"}), providers(timeouts={"adaptive": False}))
"""Neither hedging nor adaptive deadlines (what the library did before issue 18). Where the
library does not know these switches yet, they are dropped: an absent feature is off."""

HEDGE = pool(hedging={"after": "auto"})
ADAPT = providers(timeouts={"adaptive": True})

SETTINGS: list[tuple[str, Callable[[float], dict[str, Any]]]] = [
    ("defaults", lambda s: {}),
    ("neither hedging nor adaptive", lambda s: OFF),
    ("hedging on (`hedging: {after: auto}`)", lambda s: merge(OFF, HEDGE)),
    ("adaptive on (`timeouts: {adaptive: true}`)", lambda s: merge(OFF, ADAPT)),
    ("hedging and adaptive on", lambda s: merge(HEDGE, ADAPT)),
    (
        "fixed (`timeouts: {first_token: 2s}`)",
        lambda s: merge(OFF, providers(timeouts={"first_token": 2 * s})),
    ),
]
"""Label, and the configuration override at a scale (the fixed timeout scales with the delays).
Each row but ``defaults`` and ``both on`` turns off what it does not measure."""


def without_off_switches(cfg: Any) -> Any:
    """``cfg`` without ``hedging: {after: off}`` and ``timeouts: {adaptive: false}``."""
    if not isinstance(cfg, dict):
        return cfg
    out = {}
    for k, v in cfg.items():
        if k == "hedging" and isinstance(v, dict) and v.get("after") == "off":
            continue
        if k == "adaptive" and v is False:
            continue
        v = without_off_switches(v)
        if v == {} and k in ("timeouts", "hedging"):
            continue
        out[k] = v
    return out


def build(cfg: dict[str, Any]) -> tuple[Mesh, str]:
    """The mesh, and a note when switches turning off unknown features had to be dropped."""
    try:
        return Mesh.from_config(cfg), ""
    except ConfigurationError:
        stripped = without_off_switches(cfg)
        if stripped == cfg:
            raise
        return Mesh.from_config(stripped), " (off switches unknown: dropped)"


PROMPT = " ".join(f"w{i}" for i in range(1, 16))
"""The answer, ``Hello from tN. You said: w1 ... w15``, streams as 20 chunks."""
MESSAGES = [{"role": "user", "content": PROMPT}]
SLOW_SHARE = 0.10
SLOW = (5.0, 20.0)
NORMAL = (0.2, 0.6)
FALLBACK_FIRST = 0.5
CHUNK_GAP = 0.02


def answer(name: str) -> str:
    return f"Hello from {name}. You said: {PROMPT}"


@dataclass
class Sample:
    first: float | None = None
    last: float | None = None
    ok: bool = False
    model: str | None = None
    error: str | None = None


@dataclass
class Setting:
    label: str
    name: str
    overrides: dict[str, Any]
    mesh: Mesh | None = None
    unavailable: str | None = None
    note: str = ""
    standby: list[str] = field(default_factory=list)
    """The reason of each time the primary was put in standby during the measured requests."""
    samples: list[Sample] = field(default_factory=list)
    slow_drawn: int = 0
    requests_before: int = 0
    requests_after: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    """Its warm-up is done."""
    go: threading.Event = field(default_factory=threading.Event)


def standby_counter(st: Setting) -> Callable[[Any], None]:
    def on_event(event: Any) -> None:
        if st.go.is_set() and str(event.model_id).startswith("primary."):
            st.standby.append(str((event.metadata or {}).get("reason", "?")))

    return on_event


def one(mesh: Mesh, name: str) -> Sample:
    sample, t0, text = Sample(), time.perf_counter(), []
    try:
        with mesh.stream("p", MESSAGES) as chunks:
            for c in chunks:
                if c.content:
                    if sample.first is None:
                        sample.first = time.perf_counter() - t0
                    text.append(c.content)
                if c.finish_reason is not None:
                    sample.model = c.model
        sample.last = time.perf_counter() - t0
        sample.ok = "".join(text) == answer(name)
        if not sample.ok:
            sample.error = "wrong text"
    except Exception as exc:  # counted, not fatal
        sample.error = f"{type(exc).__name__}: {str(exc)[:100]}"
    return sample


def run_setting(st: Setting, n: int, concurrency: int, warmup: int) -> None:
    assert st.mesh is not None
    for _ in range(warmup):
        one(st.mesh, st.name)
    st.ready.set()
    st.go.wait()
    lock, left = threading.Lock(), [n]

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            s = one(st.mesh, st.name)  # type: ignore[arg-type]
            with lock:
                st.samples.append(s)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def fmt(values: list[float], q: float) -> str:
    return f"{pct(values, q):.2f}" if values else "-"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every delay by this")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument(
        "--slow-share", type=float, default=SLOW_SHARE, help="share of slow first tokens (0.1)"
    )
    ap.add_argument("--setting", action="append", default=[], metavar="LABEL=JSON")
    args = ap.parse_args()
    s = args.scale
    settings = [(label, fn(s)) for label, fn in SETTINGS]
    for spec in args.setting:
        label, _, raw = spec.partition("=")
        settings.append((label, json.loads(raw)))

    primary, fallback = FaultServer().start(), FaultServer().start()
    rng = random.Random(args.seed)
    # The same draws for every setting (served in arrival order: the same mix, if not
    # exactly the same request).
    slow_at = set(rng.sample(range(args.requests), round(args.slow_share * args.requests)))
    draws = [rng.uniform(*(SLOW if k in slow_at else NORMAL)) for k in range(args.requests)]
    slow_drawn = len(slow_at)
    normal = [rng.uniform(*NORMAL) for _ in range(args.warmup)]
    runs: list[Setting] = []
    t_start = time.perf_counter()
    try:
        for k, (label, over) in enumerate(settings):
            name = f"t{k}"
            st = Setting(label, name, over, slow_drawn=slow_drawn)
            runs.append(st)
            for d in normal + draws:
                primary.enqueue(name, faults.slow_first_token(d * s, chunk_delay=CHUNK_GAP * s))
            primary.set(name, faults.slow_first_token(NORMAL[0] * s, chunk_delay=CHUNK_GAP * s))
            fallback.set(
                name, faults.slow_first_token(FALLBACK_FIRST * s, chunk_delay=CHUNK_GAP * s)
            )
            base = {
                "providers": {
                    "primary": {"base_url": primary.base_url},
                    "fallback": {"base_url": fallback.base_url},
                },
                "models": {
                    f"primary.{name}": {"provider": "primary"},
                    f"fallback.{name}": {"provider": "fallback"},
                },
                "pools": {
                    "p": {
                        "models": [f"primary.{name}", f"fallback.{name}"],
                        "strategy": "priority-selection",
                    }
                },
            }
            try:
                st.mesh, st.note = build(merge(base, over))
                st.mesh.on(EventType.MODEL_DEACTIVATED, standby_counter(st))
            except ConfigurationError as exc:
                st.unavailable = config_problem(exc)
        live = [st for st in runs if st.mesh is not None]
        threads = [
            threading.Thread(
                target=run_setting, args=(st, args.requests, args.concurrency, args.warmup)
            )
            for st in live
        ]
        for t in threads:
            t.start()
        for st in live:  # every warm-up done: count from here, start together
            st.ready.wait()
        for st in live:
            st.requests_before = len(primary.requests_for(st.name)) + len(
                fallback.requests_for(st.name)
            )
        for st in live:
            st.go.set()
        for t in threads:
            t.join()
        for st in live:
            st.requests_after = len(primary.requests_for(st.name)) + len(
                fallback.requests_for(st.name)
            )
    finally:
        for st in runs:
            if st.mesh is not None:
                st.mesh.close(timeout=5)
        primary.stop()
        fallback.stop()
    wall = time.perf_counter() - t_start

    rows = []
    for st in runs:
        if st.mesh is None:
            rows.append([st.label, "not available", *[""] * 8, st.unavailable])
            continue
        good = [x for x in st.samples if x.ok]
        firsts = [x.first for x in good if x.first is not None]
        lasts = [x.last for x in good if x.last is not None]
        extra = st.requests_after - st.requests_before - len(st.samples)
        lost = len(st.samples) - len(good)
        by_fallback = sum(1 for x in good if (x.model or "").startswith("fallback."))
        errors = sorted({x.error for x in st.samples if x.error})
        rows.append(
            [
                st.label + st.note,
                fmt(firsts, 0.50),
                fmt(firsts, 0.95),
                fmt(firsts, 0.99),
                fmt(lasts, 0.50),
                fmt(lasts, 0.95),
                fmt(lasts, 0.99),
                f"{extra} ({100 * extra / max(1, len(st.samples)):.0f} %)" if extra >= 0 else "-",
                by_fallback,
                ", ".join(f"{n}x {r}" for r, n in Counter(st.standby).items()) or "0",
                f"{lost}" + (f": {errors[0]}" if errors else ""),
            ]
        )
    print(
        f"Tail latency, slow first token on {100 * args.slow_share:g} % of the primary's "
        f"requests ({machine()})"
    )
    print(f"command: python bench/tail_latency.py {shlex.join(sys.argv[1:])}".rstrip())
    if s != 1:
        print(f"scale {s:g}: the library's own timeouts and floors are not scaled (a smoke test)")
    print(
        f"{args.requests} requests per setting ({slow_drawn} drawn slow: first token after "
        f"{SLOW[0] * s:g}-{SLOW[1] * s:g} s; the others {NORMAL[0] * s:g}-{NORMAL[1] * s:g} s; "
        f"fallback {FALLBACK_FIRST * s:g} s), {args.concurrency} at a time per setting, every "
        f"setting at once, after {args.warmup} warm-up requests each; {wall:.0f} s in all\n"
    )
    print(
        table(
            [
                "setting",
                "first token p50 s",
                "p95 s",
                "p99 s",
                "last token p50 s",
                "p95 s",
                "p99 s",
                "extra requests",
                "answered by fallback",
                "primary put in standby",
                "lost",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
