"""Routing alone, before and after a change: source trees measured side by side.

Runs this directory's ``routing.py`` measures against each tree's ``mesh_core`` (the
tree first on ``PYTHONPATH``), alternating the trees round by round so that a busy
machine weighs on both alike, and prints one table per pool size: each round's median
request, the best round (on a shared machine a round can land on a busy core and run at
half speed; the best round is the code's own cost, as ``timeit`` takes the minimum).
With ``--instructions``, valgrind's instruction counts too (deterministic; pool of 10).

    git archive <commit> | tar -x -C /tmp/before      # the tree to compare with
    python bench/routing_compare.py --before /tmp/before [--after [LABEL=]PATH ...]
        [--rounds 5] [--requests 20000] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine, table

HERE = Path(__file__).resolve().parent
MEASURES = (("sync", "Mesh.complete"), ("async", "Mesh.acomplete"), ("router", "decisions alone"))


def run(tree: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, str(HERE / "routing.py"), *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def count(tree: Path, what: str, n: int = 2000) -> int:
    """Instructions per call, counted in a child with ``tree`` first on the path."""
    code = f"import routing, sys; print(routing.instructions(10, {n}, {what!r}))"
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{HERE}"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=HERE, env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="[LABEL=]PATH",
        help="a tree to compare with --before (repeatable; default: this repository)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--sizes", default="1,10,1000")
    parser.add_argument("--instructions", action="store_true")
    args = parser.parse_args()
    trees = {"before": args.before.resolve()}
    for spec in args.after or [str(HERE.parent)]:
        label, _, path = spec.rpartition("=")
        trees[label or ("after" if len(args.after) < 2 else path)] = Path(path).resolve()
    names = list(trees)
    sizes = [int(s) for s in args.sizes.split(",")]
    got: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for size in sizes:
            for name in names if r % 2 == 0 else reversed(names):
                out = run(trees[name], "--figures", str(size), str(args.requests))
                got.setdefault((name, size), []).append(json.loads(out))
    rows = []
    for size in sizes:
        for key, label in MEASURES:
            med = [min(f[key] for f in got[name, size]) for name in names]
            rows.append([size, label, *(f"{m:.1f}" for m in med)])
            rows[-1] += [f"{med[0] / m:.1f}x" for m in med[1:]]
    print(
        "Routing alone, in-memory provider, µs per request: each round's median, the best "
        "round ("
        + "; ".join(f"{name}: {path}" for name, path in trees.items())
        + f"; {args.rounds} alternating rounds of {args.requests} requests; {machine()})\n"
    )
    headers = ["pool size", "measure", *names, *(f"{n} speed-up" for n in names[1:])]
    print(table(headers, rows))
    if args.instructions:
        jobs = [(name, what) for name in names for what in ("complete", "router")]
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip(jobs, pool.map(lambda j: count(trees[j[0]], j[1]), jobs)))
        print("\nInstructions per request (callgrind, pool of 10)\n")
        rows = []
        for what, label in (("complete", "Mesh.complete"), ("router", "decisions alone")):
            base = counts[names[0], what]
            rows.append([label, *(f"{counts[n, what]:,}" for n in names)])
            rows[-1] += [f"{base / counts[n, what]:.1f}x" for n in names[1:]]
        print(table(["measure", *names, *(f"{n}: fewer by" for n in names[1:])], rows))


if __name__ == "__main__":
    main()
