"""A provider's connection pool split over several transports (mesh_core.providers._shards):
light traffic stays on one warm connection, concurrent traffic spreads, and every lease is
given back whatever happens to the request."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from mesh_core import Mesh
from mesh_core._errors import ModelMeshError
from mesh_core.providers._shards import shard_limits
from mesh_core.testing import faults
from tests.conftest import config_for


@pytest.mark.parametrize(
    ("connections", "split"),
    [(1, [1]), (10, [10]), (49, [49]), (60, [30, 30]), (100, [25] * 4), (257, [65, 64, 64, 64])],
)
def test_pool_split(connections, split):
    assert shard_limits(connections) == split
    assert sum(split) == connections


def test_sequential_requests_reuse_one_connection(servers):
    with Mesh.from_config(config_for(servers)) as mesh:
        for _ in range(4):
            mesh.complete("chat", "hi")
            list(mesh.stream("chat", "hi"))
    ports = {r.client_port for r in servers[0].requests_for("m1")}
    assert len(servers[0].requests_for("m1")) == 8 and len(ports) == 1


def test_concurrent_requests_spread_and_every_lease_comes_back(servers):
    mesh = Mesh.from_config(config_for(servers))
    shards = mesh.providers["p1"]._sync_shards()
    assert len(shards.transports) == 4  # the default 100 connections
    servers[0].set("m1", faults.reply("slow", delay=0.4))
    threads = [threading.Thread(target=mesh.complete, args=("chat", "hi")) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    during = shards.load
    for t in threads:
        t.join()
    assert sum(during) == 8 and max(during) - min(during) <= 1
    assert shards.load == [0, 0, 0, 0]
    mesh.close()


async def test_no_lease_is_lost_to_errors_breaks_or_cancellation(servers):
    pool = {
        "strategy": "priority-selection",
        "retry": {"max_attempts": 1},
        "deactivation": {"retry_limit": 100},
    }
    cfg = config_for(servers, pool=pool)
    cfg["providers"]["p1"]["timeouts"] = {"first_token": "300ms", "total": "300ms"}
    mesh = Mesh.from_config(cfg)
    p1 = mesh.providers["p1"]

    async def every_kind_of_call() -> None:
        with contextlib.suppress(ModelMeshError):
            mesh.complete("chat", "hi")
        with contextlib.suppress(ModelMeshError):
            list(mesh.stream("chat", "hi"))
        with contextlib.suppress(ModelMeshError):
            await mesh.acomplete("chat", "hi")
        with contextlib.suppress(ModelMeshError):
            [c async for c in mesh.astream("chat", "hi")]

    for behaviour in (
        faults.server_error(503),
        faults.reset(),
        faults.silent(),
        faults.cut(2),
        faults.stall(1, 1.0),
        faults.unauthorized(),
        faults.ok(),
    ):
        servers[0].set("m1", behaviour)
        mesh.recover("p1.m1")
        await every_kind_of_call()
    # the consumer walks away mid-stream
    stream = mesh.stream("chat", "a long answer to stop reading early")
    next(stream)
    stream.close()
    astream = mesh.astream("chat", "a long answer to stop reading early")
    await anext(astream)
    await astream.aclose()
    # a task cancelled while waiting for a silent server
    servers[0].set("m1", faults.silent())
    task = asyncio.create_task(mesh.acomplete("chat", "hi"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p1._sync_shards().load == [0, 0, 0, 0]
    assert p1._async_shards().load == [0, 0, 0, 0]
    assert len(servers[0].requests_for("m1")) >= 14  # each fault met p1 more than once
    await mesh.aclose()
