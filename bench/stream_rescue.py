"""Stream rescue: sixteen streaming faults of the primary, one table (issue 18).

Each scenario streams one answer from a pool ``p`` (``priority-selection`` over
``[primary, fallback]``, each model on its own fault server), with the library's defaults
unless ``--config-overrides`` says otherwise, through three consumers (``--api``):
``Mesh.stream`` called with its defaults, ``Mesh.stream(restart=True)`` (a consumer that
opts in to start-overs and drops what it got before a ``restarted`` chunk), and
``MeshChatModel.stream`` (LangChain joins every chunk it is given). Every scenario has its
own mesh and its own model name, so all of them run at once: the whole table takes about as
long as its slowest scenario (the flapping primary, 60 s: up 5 s, down 5 s, one request
every 0.5 s; the silent server, bounded by the default 30 s ``first_token`` timeout).

Checking the answer: both servers answer the same prompt with the same deterministic text,
``Hello from mNN. You said: 6 7 8 ... 60`` (60 stream chunks, the last 55 numbered), and a
fallback given an assistant prefill answers with what follows the prefix, as a model does.
So whatever mix of models delivered it, the text is checked character for character.

Verdicts:
  rescued      the stream ended with a finish reason and the text is exactly the answer
               (``Mesh.stream``: the consumer honours ``restarted`` and drops what it got
               before that chunk; ``MeshChatModel``: the text is the join of every chunk)
  clean error  a mesh error was raised, and what was delivered before it is a prefix of
               the answer (the consumer knows the answer is incomplete)
  corrupted    the stream ended "complete" with other text, or the text delivered before
               an error is not a prefix of the answer, or an error that is no mesh error
  hung         neither an end nor an error after 90 s (scaled)

Columns: TTFT (first content chunk), time (to the last chunk, or to the error), the
requests each server received for that scenario (ground truth, from the servers' records),
and the model the stream reports as having answered (the last chunk's ``model``;
LangChain: ``response_metadata["model_name"]``), checked against the server that actually
finished the stream.

    python bench/stream_rescue.py               # defaults, ~65 s
    python bench/stream_rescue.py --quick       # fault waits and timeouts x0.1, ~10 s

``--quick`` (or ``--scale``) scales the faults' long waits, the flap, the targets and the
default ``first_token`` / ``stall`` timeouts, not the library's own floors (hedging's and
adaptive deadlines' minimums): it is a smoke test; the figures are those of a full run.
    python bench/stream_rescue.py --config-overrides '{"pools":{"p":{"stream_recovery":"raise"}}}'

``--config-overrides`` is merged into the configuration (dicts merged key by key); under
``providers`` and ``models``, the key ``"*"`` applies to every provider / model, e.g.
``{"providers": {"*": {"timeouts": {"first_token": "5s"}}}}``. ``--only 8,14`` runs some.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import machine, table

from mesh_core import ConfigurationError, Mesh, ModelMeshError
from mesh_core.testing import FaultServer, faults
from mesh_core.testing.faults import Behaviour

PROMPT = " ".join(str(i) for i in range(6, 61))
"""The answer is ``Hello from mNN. You said: 6 7 ... 60``: 5 + 55 = 60 stream chunks."""
MESSAGES = [{"role": "user", "content": PROMPT}]
HUNG_AFTER = 90.0
FLAP_FOR = 60.0
FLAP_HALF_PERIOD = 5.0
FLAP_EVERY = 0.5
DEFAULT_TIMEOUTS = {"first_token": 30.0, "stall": 30.0}
"""What ``--quick`` scales (the library's defaults, README "Timeouts")."""


def answer(name: str) -> str:
    return f"Hello from {name}. You said: {PROMPT}"


# --- scenarios ---------------------------------------------------------------------------
@dataclass
class Scenario:
    label: str
    primary: Behaviour
    """What the primary does with every request (after ``primary_once``)."""
    primary_once: tuple[Behaviour, ...] = ()
    fallback: Behaviour = field(default_factory=faults.ok)
    expect: str = "rescued"
    target: float | None = None
    """Seconds (unscaled) the whole answer may take."""
    one_attempt: bool = False
    """Exactly one request in all (a refusal is not tried elsewhere)."""
    flap: bool = False


def scenarios(s: float) -> list[Scenario]:
    """The sixteen, with their long waits multiplied by ``s``."""
    return [
        Scenario("429 Retry-After: 1, then 200", faults.ok(), (faults.rate_limited(1),)),
        Scenario("429 persistent", faults.rate_limited()),
        Scenario("500, then 200", faults.ok(), (faults.server_error(500),)),
        Scenario("503 persistent", faults.server_error(503)),
        Scenario("connection reset before headers", faults.reset()),
        Scenario("silent server", faults.silent()),
        Scenario(f"first token after {20 * s:g} s", faults.slow_first_token(20 * s), target=15 * s),
        Scenario("cut after 40 of 60 tokens", faults.cut(40)),
        Scenario(f"stall {30 * s:g} s after 20 tokens", faults.stall(20, 30 * s), target=45 * s),
        Scenario("one malformed SSE event (after 30)", faults.malformed_event(30)),
        Scenario("no [DONE]", faults.no_done()),
        Scenario("context length 400", faults.context_length_exceeded()),
        Scenario(
            "content filter 400", faults.content_policy(), expect="clean error", one_attempt=True
        ),
        Scenario(
            "cut at 40, fallback rejects prefill",
            faults.cut(40),
            fallback=Behaviour(reject_prefill=True),
        ),
        Scenario(f"primary flaps for {FLAP_FOR * s:g} s (503 / reset)", faults.ok(), flap=True),
        Scenario("which model answered (primary 503)", faults.server_error(503)),
    ]


# --- configuration ---------------------------------------------------------------------------
def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        expand = key in ("providers", "models") and isinstance(value, dict) and "*" in value
        if expand and out.get(key) and "*" not in out[key]:  # "*": every provider / model
            value = dict(value)
            star = value.pop("*")
            for name in out.get(key, {}):
                value[name] = merge(star, value.get(name, {}))
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config(
    primary: FaultServer, fallback: FaultServer, name: str, scale: float, overrides: dict
) -> dict[str, Any]:
    providers: dict[str, Any] = {
        "primary": {"base_url": primary.base_url},
        "fallback": {"base_url": fallback.base_url},
    }
    if scale != 1:
        for p in providers.values():
            p["timeouts"] = {k: v * scale for k, v in DEFAULT_TIMEOUTS.items()}
    base = {
        "providers": providers,
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
    return merge(base, overrides)


def config_problem(exc: ConfigurationError) -> str:
    """The first problem of a rejected configuration, short: ``pools.p.hedging: unknown key``."""
    errors = getattr(exc, "errors", None) or [("", str(exc))]
    path, problem = errors[0]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {problem.split(' (valid keys')[0]}{more}"[:120]


# --- one stream ----------------------------------------------------------------------------
@dataclass
class Piece:
    text: str
    restarted: bool = False
    continued_from: str | None = None


@dataclass
class Run:
    """One streamed answer, filled in as it arrives (a hung one is read half-way)."""

    start: float = field(default_factory=time.perf_counter)
    pieces: list[Piece] = field(default_factory=list)
    first: float | None = None
    end: float | None = None
    finish: str | None = None
    model: str | None = None
    error: BaseException | None = None
    frozen: bool = False
    """Declared hung: what arrives later (once the servers stop) is not counted."""

    def got(self, piece: Piece) -> None:
        if self.frozen:
            return
        if piece.text and self.first is None:
            self.first = time.perf_counter() - self.start
        self.pieces.append(piece)

    def ended(self, finish: str, model: str | None) -> None:
        if not self.frozen:
            self.finish, self.model = finish, model

    def done(self) -> None:
        if not self.frozen:
            self.end = time.perf_counter() - self.start

    def freeze(self) -> None:
        if self.end is None:
            self.end = time.perf_counter() - self.start
            self.frozen = True

    def text(self, honour_restart: bool) -> str:
        out = ""
        for p in self.pieces:
            if p.restarted and honour_restart:
                out = ""
            out += p.text
        return out

    @property
    def restarted(self) -> bool:
        return any(p.restarted for p in self.pieces)

    @property
    def continued(self) -> bool:
        return any(p.continued_from for p in self.pieces)


def via_mesh(mesh: Mesh, run: Run, **kw: Any) -> None:
    try:
        with mesh.stream("p", MESSAGES, **kw) as chunks:
            for c in chunks:
                if c.finish_reason is not None:
                    run.ended(c.finish_reason, c.model)
                run.got(Piece(c.content, c.restarted, c.continued_from))
    except BaseException as exc:  # the verdict reads it
        if not run.frozen:
            run.error = exc
    run.done()


def via_langchain(mesh: Mesh, run: Run) -> None:
    from modelmesh_langchain import MeshChatModel

    try:
        llm = MeshChatModel(pool="p", config=mesh)
        for c in llm.stream(PROMPT):
            meta = c.response_metadata or {}
            flags = meta.get("mesh") or {}
            if meta.get("finish_reason") is not None:
                run.ended(meta["finish_reason"], meta.get("model_name"))
            text = c.content if isinstance(c.content, str) else str(c.content)
            # LangChain joins every chunk: a ``restarted`` flag cannot be honoured there.
            run.got(Piece(text, bool(flags.get("restarted")), flags.get("continued_from")))
    except BaseException as exc:
        if not run.frozen:
            run.error = exc
    run.done()


def via_mesh_restart(mesh: Mesh, run: Run) -> None:
    via_mesh(mesh, run, restart=True)


APIS: dict[str, tuple[Callable[[Mesh, Run], None], bool, str]] = {
    "Mesh.stream": (via_mesh, True, "m"),
    "Mesh.stream(restart=True)": (via_mesh_restart, True, "r"),
    "MeshChatModel.stream": (via_langchain, False, "l"),
}
"""API -> (driver, whether its consumer honours ``restarted``, model-name prefix).
``Mesh.stream`` is called with its defaults; the consumer drops what it received before a
chunk flagged ``restarted`` (what the flag asks for)."""


def verdict(run: Run, name: str, honour_restart: bool, hung: bool) -> tuple[str, str]:
    """(verdict, note)."""
    want = answer(name)
    got = run.text(honour_restart)
    if hung:
        return "hung", f"{len(got)} chars after {run_time(run):.0f} s"
    if run.error is None:
        if run.finish is not None and got == want:
            return "rescued", ""
        return "corrupted", f"ended {run.finish!r} with {describe_mismatch(got, want)}"
    err = run.error
    kind = type(err).__name__
    if not isinstance(err, ModelMeshError):
        return "corrupted", f"not a mesh error: {kind}: {str(err)[:80]}"
    if not want.startswith(got):
        return "corrupted", f"{kind} after {describe_mismatch(got, want)}"
    return "clean error", f"{kind} after {len(got)} chars"


def describe_mismatch(got: str, want: str) -> str:
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"{len(got)} chars, differing at {i}: {got[max(0, i - 10) : i + 25]!r}"


def run_time(run: Run) -> float:
    return run.end if run.end is not None else time.perf_counter() - run.start


# --- a scenario --------------------------------------------------------------------------------
@dataclass
class Result:
    scenario: Scenario
    api: str
    name: str
    runs: list[Run] = field(default_factory=list)
    hung: bool = False
    config_error: str | None = None
    primary_requests: int = 0
    fallback_requests: int = 0
    finished_by: list[str] = field(default_factory=list)
    """Per run, the server that finished the stream (from its records)."""


def flapper(server: FaultServer, name: str, stop: threading.Event, half: float) -> None:
    """Up for ``half`` s, then down (503, or a reset, in turn) for ``half`` s, until ``stop``."""
    down = [faults.server_error(503), faults.reset()]
    i = 0
    while not stop.is_set():
        server.set(name, faults.ok())
        if stop.wait(half):
            break
        server.set(name, down[i % 2])
        i += 1
        stop.wait(half)
    server.set(name, faults.ok())


def scenario_worker(
    sc: Scenario, res: Result, mesh: Mesh, driver: Callable, primary: FaultServer, s: float
) -> None:
    if not sc.flap:
        run = Run()
        res.runs.append(run)
        driver(mesh, run)
        return
    stop = threading.Event()
    flap = threading.Thread(
        target=flapper, args=(primary, res.name, stop, FLAP_HALF_PERIOD * s), daemon=True
    )
    t0 = time.perf_counter()
    flap.start()
    try:
        while time.perf_counter() - t0 < FLAP_FOR * s:
            run = Run()
            res.runs.append(run)
            driver(mesh, run)
            time.sleep(max(0.0, FLAP_EVERY * s - run_time(run)))
    finally:
        stop.set()


def finished_by(primary: FaultServer, fallback: FaultServer, name: str) -> list[str]:
    """Which server completed each stream, in time order."""
    done = [
        (r.time, who)
        for who, server in (("primary", primary), ("fallback", fallback))
        for r in server.requests_for(name)
        if r.behaviour in ("ok", "no-done")
    ]
    return [who for _, who in sorted(done)]


def count(res: Result, primary: FaultServer, fallback: FaultServer) -> None:
    res.primary_requests = len(primary.requests_for(res.name))
    res.fallback_requests = len(fallback.requests_for(res.name))
    res.finished_by = finished_by(primary, fallback, res.name)


def run_all(
    chosen: list[tuple[int, Scenario]], apis: list[str], s: float, overrides: dict
) -> list[Result]:
    primary, fallback = FaultServer().start(), FaultServer().start()
    results: list[Result] = []
    jobs: list[tuple[Result, threading.Thread, float, Mesh]] = []
    try:
        for api in apis:
            driver, _, prefix = APIS[api]
            for i, sc in chosen:
                name = f"{prefix}{i:02d}"
                res = Result(sc, api, name)
                results.append(res)
                for b in sc.primary_once:
                    primary.enqueue(name, b)
                primary.set(name, sc.primary)
                fallback.set(name, sc.fallback)
                try:
                    mesh = Mesh.from_config(config(primary, fallback, name, s, overrides))
                except ConfigurationError as exc:
                    res.config_error = config_problem(exc)
                    continue
                deadline = HUNG_AFTER * s + (FLAP_FOR * s if sc.flap else 0.0)
                t = threading.Thread(
                    target=scenario_worker,
                    args=(sc, res, mesh, driver, primary, s),
                    daemon=True,
                    name=name,
                )
                jobs.append((res, t, deadline, mesh))
        t0 = time.perf_counter()
        for _, t, _, _ in jobs:
            t.start()
        for res, t, deadline, _ in jobs:
            t.join(max(0.0, deadline - (time.perf_counter() - t0)))
            res.hung = t.is_alive()
            if res.hung:
                for run in list(res.runs):
                    run.freeze()
                count(res, primary, fallback)
        for res in results:  # before the servers stop (a hung stream would then fail over)
            if res.config_error is None and not res.hung:
                count(res, primary, fallback)
    finally:
        primary.stop()
        fallback.stop()
        for _, t, _, mesh in jobs:
            t.join(5)
            mesh.close(timeout=5)
    return results


# --- the table -----------------------------------------------------------------------------------
RANK = {"rescued": 0, "clean error": 1, "corrupted": 2, "hung": 3}


def short(model: str | None) -> str:
    return "-" if model is None else model.split(".", 1)[0]


def row(i: int, res: Result) -> tuple[list[object], str, bool]:
    """(table row, verdict, whether the scenario met its target)."""
    sc = res.scenario
    if res.config_error is not None:
        return [i, sc.label, "not run", "", "", "", "", "", res.config_error], "n/a", False
    _, honour, _ = APIS[res.api]
    verdicts = []
    for k, run in enumerate(res.runs):
        last = k == len(res.runs) - 1
        verdicts.append(verdict(run, res.name, honour, res.hung and last))
    if not verdicts:
        verdicts = [("hung", "no request")] if res.hung else [("corrupted", "no run")]
    worst = max((v for v, _ in verdicts), key=RANK.__getitem__)
    notes = []
    ok_target = worst == sc.expect
    if sc.flap:
        counts = Counter(v for v, _ in verdicts)
        times = sorted(run_time(r) for r in res.runs)
        ttft = sorted(r.first for r in res.runs if r.first is not None)
        models = Counter(short(r.model) for r in res.runs if r.error is None)
        answered = ", ".join(f"{m} {n}" for m, n in models.most_common())
        notes.append(
            f"{len(res.runs)} requests: "
            + ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda x: RANK[x[0]]))
            + f"; median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s"
        )
        bad = [note for v, note in verdicts if v != "rescued" and note]
        if bad:
            notes.append(f"e.g. {bad[0]}")
        ttft_s = f"{ttft[len(ttft) // 2]:.2f} (median)" if ttft else "-"
        time_s = f"{times[-1]:.2f} (max)"
        prim = f"{res.primary_requests} in {len(res.runs)}"
    else:
        run = res.runs[0] if res.runs else Run()
        note = verdicts[0][1]
        if note:
            notes.append(note)
        ttft_s = f"{run.first:.2f}" if run.first is not None else "-"
        time_s = f"{run_time(run):.2f}"
        prim = str(res.primary_requests)
        answered = short(run.model) if run.error is None else "-"
        if run.continued:
            answered += " (continued)"
        if run.restarted:
            answered += " (restarted)" if honour else " (restart flag not honoured)"
        if run.error is None and res.finished_by and short(run.model) != res.finished_by[-1]:
            notes.append(f"MISREPORTED: reported {run.model}, finished by {res.finished_by[-1]}")
            ok_target = False
        if sc.target is not None and run_time(run) > sc.target:
            notes.append(f"over the {sc.target:g} s target")
            ok_target = False
        if sc.one_attempt and res.primary_requests + res.fallback_requests != 1:
            notes.append(f"{res.primary_requests + res.fallback_requests} requests, not 1")
            ok_target = False
    if worst != sc.expect:
        notes.append(f"expected {sc.expect}")
    return (
        [
            i,
            sc.label,
            f"**{worst}**" if worst != sc.expect else worst,
            ttft_s,
            time_s,
            prim,
            res.fallback_requests,
            answered,
            "; ".join(notes),
        ],
        worst,
        ok_target,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="scale the long waits (and timeouts) by 0.1"
    )
    ap.add_argument("--scale", type=float, default=None, help="scale factor for long waits")
    ap.add_argument(
        "--config-overrides", default="{}", help="JSON dict merged into the config (or @file)"
    )
    ap.add_argument(
        "--api",
        default="all",
        help="comma-separated: mesh (Mesh.stream, defaults), restart (Mesh.stream(restart=True)), "
        "langchain (MeshChatModel.stream); default all",
    )
    ap.add_argument("--only", default="", help="comma-separated scenario numbers")
    args = ap.parse_args()
    s = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    raw = args.config_overrides
    if raw.startswith("@"):
        with open(raw[1:]) as f:
            raw = f.read()
    overrides = json.loads(raw)
    wanted = {"mesh", "restart", "langchain"} if args.api == "all" else set(args.api.split(","))
    names = {
        "mesh": "Mesh.stream",
        "restart": "Mesh.stream(restart=True)",
        "langchain": "MeshChatModel.stream",
    }
    apis = [names[k] for k in ("mesh", "restart", "langchain") if k in wanted]
    if "MeshChatModel.stream" in apis:
        try:
            import modelmesh_langchain  # noqa: F401
        except ImportError:
            print("(MeshChatModel rows skipped: langchain-core is not installed)\n")
            apis.remove("MeshChatModel.stream")
    all_sc = list(enumerate(scenarios(s), 1))
    if args.only:
        keep = {int(x) for x in args.only.split(",")}
        all_sc = [(i, sc) for i, sc in all_sc if i in keep]

    t0 = time.perf_counter()
    results = run_all(all_sc, apis, s, overrides)
    wall = time.perf_counter() - t0

    print(f"Stream rescue ({machine()})")
    print(f"command: python bench/stream_rescue.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"config overrides: {json.dumps(overrides) if overrides else 'none (library defaults)'}")
    if s != 1:
        print(
            f"scale {s:g}: fault waits, the flap, the targets and the hung limit x{s:g}, and so "
            f"are the default timeouts (first_token and stall {30 * s:g} s instead of 30 s), "
            "unless overridden"
        )
    print(f"all scenarios concurrently: {wall:.1f} s wall time\n")
    headers = [
        "#",
        "scenario",
        "verdict",
        "TTFT s",
        "time s",
        "primary reqs",
        "fallback reqs",
        "answered by",
        "notes",
    ]
    for api in apis:
        rows, tally, met = [], Counter(), 0
        mine = [(i, r) for (i, _), r in zip(all_sc * len(apis), results) if r.api == api]
        for i, res in mine:
            r, v, ok = row(i, res)
            rows.append(r)
            tally[v] += 1
            met += ok
        print(f"### {api}\n")
        print(table(headers, rows))
        print(
            f"\n{api}: "
            + ", ".join(f"{tally[v]} {v}" for v in RANK if tally[v])
            + (f", {tally['n/a']} not run" if tally["n/a"] else "")
            + f"; {met} of {len(mine)} scenarios meet the issue's target\n"
        )


if __name__ == "__main__":
    main()
