"""Closing a mesh: in-flight requests finish or end cleanly, state is saved, nothing leaks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mesh_core import Mesh
from mesh_core._errors import MeshClosedError, ModelMeshError
from mesh_core.testing import faults
from tests.conftest import config_for


def test_close_lets_in_flight_requests_finish_then_refuses_new_ones(servers, tmp_path):
    cfg = config_for(servers)
    cfg["storage"] = {
        "backend": "json",
        "path": str(tmp_path / "s.json"),
        "sync_policy": "periodic",
        "sync_interval": "1h",
    }
    mesh = Mesh.from_config(cfg)
    servers[0].set("m1", faults.ok(delay=0.4))
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(mesh.complete("chat", "slow")))
    thread.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    mesh.close()
    assert time.perf_counter() - t0 >= 0.2  # it waited for the request
    thread.join()
    assert results[0].model == "p1.m1"
    assert (tmp_path / "s.json").exists()  # flushed on close
    with pytest.raises(MeshClosedError):
        mesh.complete("chat", "after")
    mesh.close()  # idempotent


def test_a_request_still_running_after_the_timeout_ends_with_a_documented_error(servers):
    mesh = Mesh.from_config(config_for(servers, n=1))
    servers[0].set("m1", faults.silent())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            mesh.complete("chat", "stuck")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)
    mesh.close(timeout=0.2)
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], ModelMeshError)


def test_cancelled_tasks_release_their_models_and_aclose_returns(servers):
    mesh = Mesh.from_config(config_for(servers))
    servers[0].set("m1", faults.ok(delay=2))

    async def run() -> None:
        task = asyncio.create_task(mesh.acomplete("chat", "slow"))
        stream_task = asyncio.create_task(_consume(mesh))
        await asyncio.sleep(0.2)
        task.cancel()
        stream_task.cancel()
        for t in (task, stream_task):
            with pytest.raises(asyncio.CancelledError):
                await t
        assert mesh.model("p1.m1").in_flight == 0
        await asyncio.wait_for(mesh.aclose(), timeout=2)

    asyncio.run(run())
    with pytest.raises(MeshClosedError):
        mesh.complete("chat", "x")


async def _consume(mesh: Mesh) -> None:
    async for _ in mesh.astream("chat", "slow stream"):
        pass


def test_context_managers_close(servers):
    with Mesh.from_config(config_for(servers)) as mesh:
        mesh.complete("chat", "hi")
    with pytest.raises(MeshClosedError):
        mesh.complete("chat", "hi")

    async def run() -> Mesh:
        async with Mesh.from_config(config_for(servers)) as amesh:
            await amesh.acomplete("chat", "hi")
        return amesh

    closed = asyncio.run(run())
    with pytest.raises(MeshClosedError):
        closed.complete("chat", "hi")
