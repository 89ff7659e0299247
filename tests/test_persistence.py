"""Persisted and shared state: restarts, period boundaries, corruption, crashes, processes."""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mesh_core import Mesh
from mesh_core._clock import ManualClock
from mesh_core._config import StorageConfig
from mesh_core._errors import AllProvidersExhaustedError
from mesh_core.stores import StateStoreError, create_store
from mesh_core.stores._jsonfile import JsonFileStore
from mesh_core.stores._sqlite import SqliteStore
from mesh_core.testing import faults
from tests.conftest import config_for

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()
BACKENDS = ["json", "sqlite", "redis"]


@pytest.fixture
def storage(request, tmp_path):
    """A ``storage`` section for the backend named by the test's ``backend`` parameter."""

    def make(backend: str, **extra):
        if backend == "redis":
            url = request.getfixturevalue("redis_url")
            return {
                "backend": "redis",
                "url": url,
                "key_prefix": f"t{uuid.uuid4().hex[:8]}:",
                **extra,
            }
        suffix = "json" if backend == "json" else "db"
        return {"backend": backend, "path": str(tmp_path / f"state.{suffix}"), **extra}

    return make


def mesh_with(servers, storage_section, clock=None, **pool):
    cfg = config_for(servers, pool=pool, n=2)
    cfg["pools"]["rr"] = {"capability": "chat-completion", "strategy": "round-robin"}
    cfg["storage"] = storage_section
    cfg["providers"]["p1"]["api_key"] = "sk-persist-SECRET"
    return Mesh.from_config(cfg, clock=clock)


def comparable(mesh: Mesh) -> dict:
    def state(m):  # cooldown_remaining is relative to "now": checked against the clock below
        return {k: v for k, v in m.state.to_dict().items() if k != "cooldown_remaining"}

    return {
        "models": {mid: state(m) for mid, m in mesh.models.items()},
        "pools": {
            pid: (p.total_requests, p.rotation_events, p.strategy.export_state())
            for pid, p in mesh.pools.items()
        },
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_round_trip(servers, storage, backend):
    section = storage(backend)
    clock = ManualClock(T0)
    mesh = mesh_with(
        servers,
        section,
        clock,
        strategy="session-stickiness",
        deactivation={"request_limit": 50, "quota_window": "daily"},
    )
    for i in range(3):
        mesh.complete("chat", "hi", session_id=f"s{i}")
        mesh.complete("rr", "hi")
    servers[1].set("m2", faults.quota_exhausted())
    with pytest.raises(AllProvidersExhaustedError):
        mesh.complete("chat", "x", model="p2.m2")
    snap = mesh.snapshot("p2.m2")
    assert snap.status == "standby" and snap.deactivation_reason == "quota_exhausted"
    before = comparable(mesh)
    mesh.close()

    again = mesh_with(
        servers,
        section,
        ManualClock(T0 + 5),
        strategy="session-stickiness",
        deactivation={"request_limit": 50, "quota_window": "daily"},
    )
    after = comparable(again)
    assert after == before
    st = again.model("p2.m2").state
    assert st.recover_at == pytest.approx(T0 + 60) and st.quota_period_start is not None
    assert again.pool("chat").strategy.assignment("s1") == "p1.m1"
    assert again.snapshot("p2.m2").cooldown_remaining == pytest.approx(55)
    again.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_quota_counters_reset_at_the_boundary_across_a_restart(servers, storage, backend):
    section = storage(backend)
    pool = {
        "strategy": "priority-selection",
        "deactivation": {"request_limit": 3, "quota_window": "daily"},
    }
    mesh = mesh_with(servers, section, ManualClock(T0), **pool)
    for _ in range(3):
        assert mesh.complete("chat", "hi").model == "p1.m1"
    assert mesh.snapshot("p1.m1").deactivation_reason == "request_limit"
    mesh.close()

    same_day = mesh_with(servers, section, ManualClock(T0 + 3600), **pool)
    assert same_day.complete("chat", "hi").model == "p2.m2"  # still spent today
    same_day.close()

    midnight = datetime(2026, 3, 11, tzinfo=UTC).timestamp()
    next_day = mesh_with(servers, section, ManualClock(midnight + 1), **pool)
    assert next_day.complete("chat", "hi").model == "p1.m1"
    assert next_day.snapshot("p1.m1").quota_used == 1
    next_day.close()


@pytest.mark.parametrize("backend", ["json", "sqlite"])
def test_corrupt_state_is_a_clear_error_or_moved_aside(servers, storage, backend, caplog):
    section = storage(backend)
    path = Path(section["path"])
    mesh_with(servers, section).close()
    path.write_bytes(b"\x00garbage{{{" * 100)
    with pytest.raises(StateStoreError) as ei:
        mesh_with(servers, section)
    assert str(path) in str(ei.value)
    with caplog.at_level(logging.WARNING, logger="modelmesh"):
        mesh = mesh_with(servers, dict(section, on_corrupt="fresh"))
    assert mesh.complete("chat", "hi").model == "p1.m1"
    mesh.close()
    kept = list(path.parent.glob(f"{path.name}.corrupt-*"))
    assert kept and kept[0].read_bytes().startswith(b"\x00garbage")
    assert "fresh state" in caplog.text and str(kept[0].name) in caplog.text


@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_killed_writer_never_leaves_an_unloadable_store(tmp_path, kind):
    path = tmp_path / ("state.json" if kind == "json" else "state.db")
    rng = random.Random(7)
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_writer", kind, str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.01, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = JsonFileStore(path) if kind == "json" else SqliteStore(path)
        state = store.load()
        assert state is None or len(state.models) == 50
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_deactivation_in_one_mesh_reaches_another(servers, storage, backend):
    section = storage(backend, refresh_interval="50ms")
    a, b = mesh_with(servers, section), mesh_with(servers, section)
    assert b.complete("chat", "hi").model == "p1.m1"
    events = []
    b.on("model.deactivated", events.append)
    a.deactivate("p1.m1")
    time.sleep(0.1)
    assert b.complete("chat", "hi").model == "p2.m2"
    assert b.snapshot("p1.m1").deactivation_reason == "manual"
    assert events and events[0].metadata["remote"] is True
    a.recover("p1.m1")
    time.sleep(0.1)
    assert b.complete("chat", "hi", model="p1.m1").model == "p1.m1"
    a.close()
    b.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
@pytest.mark.parametrize("limit", ["request_limit", "budget_limit"])
def test_processes_sharing_a_store_respect_limits(servers, storage, tmp_path, backend, limit):
    section = storage(backend, refresh_interval="100ms")
    cfg = config_for(
        servers, n=2, models={"p1.m1": {"pricing": {"per_request": 0.01}}, "p2.m2": {}}
    )
    cfg["pools"]["chat"]["deactivation"] = (
        {"request_limit": 30} if limit == "request_limit" else {"budget_limit": 0.3}
    )
    cfg["storage"] = section
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    # request_limit binds every model of the pool (2 x 30): 54 requests fit; the budget
    # binds only the priced model
    each = 18 if limit == "request_limit" else 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.persist_worker", str(path), str(each)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(r["errors"] == [] for r in results), results
    on_limited = sum(r["served"].get("p1.m1", 0) for r in results)
    assert sum(sum(r["served"].values()) for r in results) == 3 * each
    # at most one request in flight per process can slip past the limit
    assert 30 <= on_limited <= 30 + 3
    assert servers[0].count("m1") == on_limited


@pytest.mark.parametrize("backend", ["json", "sqlite", "redis"])
def test_periodic_policy_saves_on_close_not_every_request(servers, storage, backend):
    section = storage(backend, sync_policy="periodic", sync_interval="1h")
    mesh = mesh_with(servers, section)
    mesh.complete("chat", "hi")
    saved = create_store(StorageConfig(**section), read_only=True).load()
    assert saved is None or saved.models["p1.m1"]["total_requests"] == 0  # not saved yet
    mesh.close()
    reloaded = mesh_with(servers, section)
    assert reloaded.model("p1.m1").state.total_requests == 1
    reloaded.close()


@pytest.mark.parametrize("backend", ["json", "sqlite"])
def test_no_secret_in_persisted_state(servers, storage, backend):
    section = storage(backend)
    mesh = mesh_with(servers, section)
    mesh.complete("chat", "hi")
    mesh.close()
    data = b"".join(p.read_bytes() for p in Path(section["path"]).parent.iterdir() if p.is_file())
    assert b"SECRET" not in data


def test_no_secret_in_redis(servers, storage, redis_url):
    import redis

    section = storage("redis")
    mesh = mesh_with(servers, section)
    mesh.complete("chat", "hi")
    mesh.deactivate("p1.m1")
    mesh.close()
    client = redis.Redis.from_url(redis_url)
    dump = b""
    for key in client.scan_iter(f"{section['key_prefix']}*"):
        kind = client.type(key)
        if kind == b"hash":
            dump += b"".join(k + v for k, v in client.hgetall(key).items())
        elif kind == b"string":
            dump += client.get(key) or b""
    assert dump and b"SECRET" not in dump
