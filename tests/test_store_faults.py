"""The state store serves the answer: a store that fails, stalls, is locked or disappears
never costs a caller an answer, never blocks an event loop, and is re-synced when back."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from mesh_core import Mesh
from mesh_core._clock import ManualClock
from mesh_core._config import load_config
from mesh_core.stores import PersistedState, StateStore, StateStoreError, UsageCounters
from mesh_core.stores._redis import RedisStore
from mesh_core.stores._sqlite import SqliteStore
from mesh_core.testing import faults
from tests.conftest import MODES, _close_loop_pools, complete, config_for

ROOT = Path(__file__).resolve().parents[1]


def chat_config(servers, storage, **pool):
    cfg = config_for(servers, pool=pool, n=2)
    cfg["storage"] = storage
    return cfg


def wait_for(predicate, timeout: float = 40.0) -> None:
    """Poll ``predicate`` until true (a generous bound: CI machines are loaded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def in_flight(mesh: Mesh) -> list[int]:
    return [m["in_flight"] for m in mesh.stats()["models"].values()]


def store_health(mesh: Mesh) -> dict:
    return mesh.stats()["store"]


def redis_section(url: str, **extra) -> dict:
    return {
        "backend": "redis",
        "url": url,
        "key_prefix": f"t{uuid.uuid4().hex[:8]}:",
        "timeout": "500ms",
        **extra,
    }


def shared_requests(url: str, prefix: str, mesh: Mesh, model_id: str) -> int:
    """The request counter a shared Redis store holds for ``model_id`` this period."""
    st = mesh.model(model_id).state
    store = RedisStore(url, key_prefix=prefix)
    try:
        return store.get_usage(model_id, st.quota_period_start, st.budget_period_start).requests
    finally:
        store.close()


# --- a JSON file that cannot be written -------------------------------------------------


@MODES
def test_an_unwritable_json_store_costs_no_answer_and_is_resynced(servers, tmp_path, mode, caplog):
    path = tmp_path / "state.json"
    mesh = Mesh.from_config(chat_config(servers, {"backend": "json", "path": str(path)}))
    assert complete(mesh, mode, "chat", "hi").model == "p1.m1"
    wait_for(path.exists)  # async callers' changes are written behind them
    path.unlink()
    path.mkdir()  # the state file is now a directory: every save fails with an OSError
    with caplog.at_level(logging.INFO, logger="modelmesh"):
        for i in range(5):
            assert complete(mesh, mode, "chat", f"q{i}").model == "p1.m1"
        wait_for(lambda: not store_health(mesh)["healthy"])
        health = store_health(mesh)
        assert health["errors"] >= 1 and "IsADirectoryError" in health["last_error"]
        assert in_flight(mesh) == [0, 0]
        # logged once, however many saves failed
        assert caplog.text.count("state store (json) failed") == 1
        from prometheus_client import REGISTRY

        errors = REGISTRY.get_sample_value(
            "modelmesh_store_errors_total", {"backend": "json", "operation": "save"}
        )
        assert errors is not None and errors >= 1

        path.rmdir()  # the store is back: the worker retries with backoff and saves it all
        wait_for(lambda: store_health(mesh)["healthy"])
        assert "state store (json) is back" in caplog.text
    saved = json.loads(path.read_text())
    assert saved["models"]["p1.m1"]["total_requests"] == 6
    started = time.monotonic()
    mesh.close()
    assert time.monotonic() - started < 5


def test_a_json_store_failing_on_close_does_not_raise(servers, tmp_path, caplog):
    path = tmp_path / "state.json"
    mesh = Mesh.from_config(chat_config(servers, {"backend": "json", "path": str(path)}))
    mesh.complete("chat", "hi")
    path.unlink()
    path.mkdir()
    with caplog.at_level(logging.WARNING, logger="modelmesh"):
        mesh.close()
    assert "could not save the final state" in caplog.text


def test_a_trial_whose_save_fails_still_brings_the_model_back(servers, tmp_path):
    path = tmp_path / "state.json"
    clock = ManualClock()
    cfg = chat_config(
        servers,
        {"backend": "json", "path": str(path)},
        strategy="priority-selection",
        deactivation={"retry_limit": 1},
        recovery={"cooldown": "60s"},
        retry={"max_attempts": 1},
    )
    mesh = Mesh.from_config(cfg, clock=clock)
    servers[0].enqueue("m1", faults.server_error())
    assert mesh.complete("chat", "hi").model == "p2.m2"
    assert mesh.snapshot("p1.m1").status == "standby"
    clock.advance(61)
    path.unlink()
    path.mkdir()
    assert mesh.complete("chat", "trial").model == "p1.m1"  # the trial, saved nowhere
    snap = mesh.snapshot("p1.m1")
    assert snap.status == "active" and not snap.probation
    assert in_flight(mesh) == [0, 0]
    assert mesh.complete("chat", "again").model == "p1.m1"
    mesh.close()


class _BrokenStore(StateStore):
    """A store of the user's own that, once the mesh runs, raises something unexpected."""

    shared = True
    name = "broken"
    broken = False

    def _maybe_raise(self, exc: Exception) -> None:
        if self.broken:
            raise exc

    def load(self) -> PersistedState | None:
        return None

    def save(self, state):
        self._maybe_raise(KeyError("boom"))

    def add_usage(self, *args):
        self._maybe_raise(RuntimeError("boom"))
        return UsageCounters()

    def get_usage(self, *args):
        self._maybe_raise(ZeroDivisionError("boom"))
        return UsageCounters()

    def publish_status(self, *args):
        self._maybe_raise(RuntimeError("boom"))
        return 0

    def statuses_since(self, seq):
        return []


@MODES
def test_any_exception_from_a_store_leaves_no_model_in_flight(servers, mode):
    cfg = chat_config(servers, {"backend": "memory"}, deactivation={"request_limit": 100})
    store = _BrokenStore()
    mesh = Mesh(load_config(cfg), store=store)
    store.broken = True
    for i in range(3):
        assert complete(mesh, mode, "chat", f"q{i}").model == "p1.m1"
    mesh.deactivate("p2.m2")
    assert in_flight(mesh) == [0, 0]
    assert mesh.snapshot("p1.m1").quota_used == 3  # counted locally
    wait_for(lambda: not store_health(mesh)["healthy"])
    mesh.close()


# --- SQLite held by another process -------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE meta SET value = value WHERE key = 'seq'")
    print("locked", flush=True)
    sys.stdin.readline()
    db.execute("COMMIT")
    """
)


@MODES
def test_sqlite_locked_by_another_process_costs_no_answer(servers, tmp_path, mode):
    path = tmp_path / "state.db"
    cfg = chat_config(servers, {"backend": "sqlite", "path": str(path), "timeout": "300ms"})
    mesh = Mesh.from_config(cfg)
    assert complete(mesh, mode, "chat", "hi").model == "p1.m1"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        started = time.monotonic()
        for i in range(5):
            assert complete(mesh, mode, "chat", f"q{i}").model == "p1.m1"
        # the first request may wait out the busy timeout once; the others do not wait
        assert time.monotonic() - started < 10
        wait_for(lambda: not store_health(mesh)["healthy"])
        assert in_flight(mesh) == [0, 0]
    finally:
        holder.communicate(b"\n", timeout=30)
    wait_for(lambda: store_health(mesh)["healthy"])
    started = time.monotonic()
    mesh.close()
    assert time.monotonic() - started < 10
    store = SqliteStore(path)
    saved = store.load()
    assert saved is not None and saved.models["p1.m1"]["total_requests"] == 6
    assert store.get_usage("p1.m1", *_periods(mesh, "p1.m1")).requests == 6  # none lost
    store.close()


def _periods(mesh: Mesh, model_id: str) -> tuple[float, float]:
    st = mesh.model(model_id).state
    return st.quota_period_start, st.budget_period_start


def test_a_locked_sqlite_at_start_is_a_clear_error_or_degraded(servers, tmp_path):
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        section = {"backend": "sqlite", "path": str(path), "timeout": "200ms"}
        with pytest.raises(StateStoreError, match="database is locked"):
            Mesh.from_config(chat_config(servers, section))
        mesh = Mesh.from_config(chat_config(servers, dict(section, on_unavailable="degrade")))
        assert mesh.complete("chat", "hi").model == "p1.m1"
        assert not store_health(mesh)["healthy"]
    finally:
        holder.communicate(b"\n", timeout=30)
    wait_for(lambda: store_health(mesh)["healthy"])
    mesh.close()
    store = SqliteStore(path)
    assert store.get_usage("p1.m1", *_periods(mesh, "p1.m1")).requests == 1
    store.close()


# --- Redis paused, killed, unreachable --------------------------------------------------


def test_paused_redis_costs_no_answer_and_never_blocks_the_loop(servers, redis_server):
    section = redis_section(redis_server.url)
    # a request limit makes every request read the shared counters first
    mesh = Mesh.from_config(chat_config(servers, section, deactivation={"request_limit": 1000}))
    assert mesh.complete("chat", "hi").model == "p1.m1"

    async def burst():
        loop = asyncio.get_running_loop()
        await mesh.acomplete("chat", "warm")  # this loop's connection pools (issue: cold start)
        redis_server.pause()
        lag, done = 0.0, False

        async def monitor():
            nonlocal lag
            while not done:
                t = loop.time()
                await asyncio.sleep(0.01)
                lag = max(lag, loop.time() - t - 0.01)

        watcher = asyncio.create_task(monitor())
        try:
            answers = await asyncio.gather(*(mesh.acomplete("chat", f"q{i}") for i in range(20)))
        finally:
            done = True
            await watcher
            await _close_loop_pools(mesh)
        return answers, lag

    try:
        answers, lag = asyncio.run(burst())
        assert [a.model for a in answers] == ["p1.m1"] * 20
        print(f"largest event-loop lag with Redis paused: {lag * 1000:.0f} ms")
        assert lag < 1.0  # measured at ~10 ms; the bound is generous on purpose
        assert not store_health(mesh)["healthy"]
        assert in_flight(mesh) == [0, 0]
        started = time.monotonic()
        assert mesh.complete("chat", "sync too").model == "p1.m1"
        assert time.monotonic() - started < 5
    finally:
        redis_server.resume()
    wait_for(lambda: store_health(mesh)["healthy"])
    # counted while Redis was away, then added to the shared counters: nothing lost
    wait_for(lambda: shared_requests(redis_server.url, section["key_prefix"], mesh, "p1.m1") == 23)
    started = time.monotonic()
    mesh.close()
    assert time.monotonic() - started < 5


def test_close_with_redis_paused_is_bounded(servers, redis_server, caplog):
    mesh = Mesh.from_config(chat_config(servers, redis_section(redis_server.url)))
    mesh.complete("chat", "hi")
    redis_server.pause()
    try:
        mesh.deactivate("p2.m2")  # a status to publish, which cannot be
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="modelmesh"):
            mesh.close()
        assert time.monotonic() - started < 8
    finally:
        redis_server.resume()


@MODES
def test_killed_redis_costs_no_answer_and_reconnects(servers, redis_server, mode):
    section = redis_section(redis_server.url)
    mesh = Mesh.from_config(chat_config(servers, section))
    assert complete(mesh, mode, "chat", "hi").model == "p1.m1"
    redis_server.kill()
    for i in range(4):
        assert complete(mesh, mode, "chat", f"q{i}").model == "p1.m1"
    wait_for(lambda: not store_health(mesh)["healthy"])
    assert in_flight(mesh) == [0, 0]
    redis_server.start()  # same port, empty: what the mesh counted meanwhile is added back
    wait_for(lambda: store_health(mesh)["healthy"])
    wait_for(lambda: shared_requests(redis_server.url, section["key_prefix"], mesh, "p1.m1") >= 4)
    mesh.close()


def test_shared_limits_fall_back_to_local_counting(servers, redis_server):
    section = redis_section(redis_server.url)
    mesh = Mesh.from_config(chat_config(servers, section, deactivation={"request_limit": 3}))
    assert mesh.complete("chat", "hi").model == "p1.m1"
    redis_server.pause()
    try:
        served = [mesh.complete("chat", f"q{i}").model for i in range(4)]
    finally:
        redis_server.resume()
    assert served == ["p1.m1", "p1.m1", "p2.m2", "p2.m2"]
    assert mesh.snapshot("p1.m1").deactivation_reason == "request_limit"
    mesh.close()


def test_unreachable_redis_at_start_is_a_clear_error_or_degraded(servers, redis_server):
    redis_server.kill()
    section = redis_section(redis_server.url)
    with pytest.raises(StateStoreError, match="cannot reach Redis"):
        Mesh.from_config(chat_config(servers, section))
    mesh = Mesh.from_config(chat_config(servers, dict(section, on_unavailable="degrade")))
    assert [mesh.complete("chat", f"q{i}").model for i in range(3)] == ["p1.m1"] * 3
    assert not store_health(mesh)["healthy"]
    redis_server.start()
    wait_for(lambda: store_health(mesh)["healthy"])
    wait_for(lambda: shared_requests(redis_server.url, section["key_prefix"], mesh, "p1.m1") == 3)
    mesh.close()


# --- JSON store hygiene --------------------------------------------------------------------


def test_a_json_file_serves_one_mesh_at_a_time(servers, tmp_path):
    cfg = chat_config(servers, {"backend": "json", "path": str(tmp_path / "state.json")})
    first = Mesh.from_config(cfg)
    with pytest.raises(StateStoreError, match=rf"in use by another mesh \(pid {os.getpid()}\)"):
        Mesh.from_config(cfg)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from mesh_core import Mesh; "
            "Mesh.from_config(json.load(open(sys.argv[1])))",
            str(cfg_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode != 0
    assert f"in use by another mesh (pid {os.getpid()})" in other.stderr
    assert "sqlite or redis" in other.stderr
    first.close()
    Mesh.from_config(cfg).close()  # free again once the first mesh is closed


def test_leftover_temporary_files_are_removed_at_start(servers, tmp_path):
    leftover = tmp_path / ".state.json.4242.1.tmp"
    leftover.write_text('{"partial')
    cfg = chat_config(servers, {"backend": "json", "path": str(tmp_path / "state.json")})
    Mesh.from_config(cfg).close()
    assert not leftover.exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_resent_addition_counts_once(redis_url):
    """A paused Redis may apply an addition whose reply timed out: the re-send is a no-op."""
    store = RedisStore(redis_url, key_prefix=f"t{uuid.uuid4().hex[:8]}:")
    first = store.add_usage("m", 0.0, 0.0, 1, 10, 0.5, token="t1")
    again = store.add_usage("m", 0.0, 0.0, 1, 10, 0.5, token="t1")
    assert first == again == UsageCounters(1, 10, 0.5)
    assert store.add_usage("m", 0.0, 0.0, 1, 10, 0.5, token="t2") == UsageCounters(2, 20, 1.0)
    assert store.add_usage("m", 0.0, 0.0, 1, 10, 0.5) == UsageCounters(3, 30, 1.5)
    store.close()


def test_a_full_disk_costs_no_answer(tmp_path):
    """Saves fail with an OSError (the file may not grow, as on a full disk): answers come."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.full_disk_worker", str(tmp_path / "state.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answered"] == ["p1.m1"] * 6
    assert not result["store"]["healthy"] and "File too large" in result["store"]["last_error"]
    assert not list(tmp_path.glob(".*.tmp"))  # the failed writes left no temporary file
