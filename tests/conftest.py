"""Fixtures: real fault-injecting servers on 127.0.0.1 and meshes over them."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from mesh_core import Mesh
from mesh_core.testing import FaultServer

FAST = {"connect": "2s", "first_token": "1500ms", "stall": "1500ms", "total": "3s"}
"""Short enough that a silent server fails over quickly, long enough that a healthy local one
is never cut on a loaded 2-core CI machine. Tests assert which model answered, never these."""
FAST_TOTAL = 3.0


@pytest.fixture
def servers() -> Iterator[list[FaultServer]]:
    """Three servers, one per provider (p1, p2, p3)."""
    started = [FaultServer().start() for _ in range(3)]
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def config_for(
    servers: list[FaultServer],
    pool: dict[str, Any] | None = None,
    models: dict[str, dict[str, Any]] | None = None,
    n: int = 2,
) -> dict[str, Any]:
    """Providers p1..pn, one model each (p<i>.m<i>), and a pool 'chat' over them."""
    cfg: dict[str, Any] = {
        "providers": {
            f"p{i}": {"base_url": servers[i - 1].base_url, "timeouts": FAST}
            for i in range(1, n + 1)
        },
        "models": {f"p{i}.m{i}": {"provider": f"p{i}"} for i in range(1, n + 1)},
        "pools": {"chat": {"capability": "chat-completion", "retry": {"initial_delay": "10ms"}}},
    }
    for mid, extra in (models or {}).items():
        cfg["models"].setdefault(mid, {}).update(extra)
    cfg["pools"]["chat"].update(copy.deepcopy(pool or {}))
    return cfg


@pytest.fixture
def make_mesh(servers):
    meshes: list[Mesh] = []

    def make(pool=None, models=None, n=2, **kw) -> Mesh:
        mesh = Mesh.from_config(config_for(servers, pool, models, n), **kw)
        meshes.append(mesh)
        return mesh

    yield make
    for m in meshes:
        m.close()


def complete(mesh: Mesh, mode: str, *args: Any, **kw: Any):
    """``mesh.complete`` or ``mesh.acomplete`` by ``mode``."""
    if mode == "sync":
        return mesh.complete(*args, **kw)
    return asyncio.run(_acomplete(mesh, *args, **kw))


async def _close_loop_pools(mesh: Mesh) -> None:
    """Close this event loop's connections (asyncio.run ends the loop); the mesh stays open."""
    for provider in mesh.providers.values():
        await provider.aclose()


async def _acomplete(mesh: Mesh, *args: Any, **kw: Any):
    try:
        return await mesh.acomplete(*args, **kw)
    finally:
        await _close_loop_pools(mesh)


def stream(mesh: Mesh, mode: str, *args: Any, **kw: Any) -> list:
    """All chunks of ``mesh.stream`` or ``mesh.astream``; an error propagates after them."""
    if mode == "sync":
        return list(mesh.stream(*args, **kw))

    async def run():
        try:
            return [c async for c in mesh.astream(*args, **kw)]
        finally:
            await _close_loop_pools(mesh)

    return asyncio.run(run())


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@pytest.fixture(scope="session")
def redis_url():
    """A private redis-server on 127.0.0.1, started for the session."""
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_server():
    """A redis-server of this test's own, to pause, kill and restart."""
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    yield server
    server.stop()
