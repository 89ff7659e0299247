"""Embedding pools over the fault servers, shared by the two adapters' embedding tests."""

from __future__ import annotations

import math
from typing import Any

from mesh_core.testing import FaultServer
from tests.conftest import FAST

SPACE_A = "test/emb-a@8"
"""Served by p1.ea and p2.ea (one model name, ``emb-a``, on two providers)."""
SPACE_B = "test/emb-b@16"
"""Served by p3.eb alone (``emb-b``)."""


def embedding_config(
    servers: list[FaultServer],
    order: list[str] | None = None,
    strategy: str = "priority-selection",
) -> dict[str, Any]:
    """Pools over p1.ea and p2.ea (space A) and p3.eb (space B):

    * ``embeddings``: ``order`` (default ``[p1.ea, p2.ea]``), mixing spaces if it says so;
    * ``chat``: a chat pool (its members cannot embed).
    """
    order = order or ["p1.ea", "p2.ea"]
    # ``dimensions`` asks the fault server for vectors of the space's size
    a = {"capabilities": ["text-embeddings"], "dimensions": 8}
    b = {"capabilities": ["text-embeddings"], "dimensions": 16}
    spaces = {"p1.ea": SPACE_A, "p2.ea": SPACE_A, "p3.eb": SPACE_B}
    pool: dict[str, Any] = {  # its members: ``order`` alone (no capability to widen it)
        "strategy": strategy,
        "models": order,
        "retry": {"initial_delay": "10ms"},
    }
    if len({spaces[m] for m in order}) > 1:
        pool["mixed_embedding_spaces"] = True
    return {
        "providers": {
            f"p{i}": {"base_url": s.base_url, "timeouts": FAST} for i, s in enumerate(servers, 1)
        },
        "models": {
            "p1.ea": {"provider": "p1", "name": "emb-a", "embedding_space": SPACE_A, **a},
            "p2.ea": {"provider": "p2", "name": "emb-a", "embedding_space": SPACE_A, **a},
            "p3.eb": {"provider": "p3", "name": "emb-b", "embedding_space": SPACE_B, **b},
            "p1.chat": {"provider": "p1", "name": "m1"},
        },
        "pools": {
            "embeddings": pool,
            "chat": {"models": ["p1.chat"]},
        },
    }


def slow(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with 10 s provider timeouts: only a per-call timeout makes a hang short."""
    for provider in config["providers"].values():
        provider["timeouts"] = {
            "connect": "5s",
            "first_token": "10s",
            "stall": "10s",
            "total": "10s",
        }
    return config


def inputs_sent(server: FaultServer) -> list[list[str]]:
    """The texts of each embedding request ``server`` received, in order."""
    out = []
    for r in server.requests:
        texts = r.body.get("input")
        if texts is not None:
            out.append([texts] if isinstance(texts, str) else list(texts))
    return out


def is_unit(vector: list[float]) -> bool:
    return math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-6)
