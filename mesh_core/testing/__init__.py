"""Test helpers: a real OpenAI-compatible HTTP server with fault injection.

Use it in your own tests to see what your chains do when providers fail::

    from mesh_core.testing import FaultServer, faults
"""

from __future__ import annotations

from typing import Any

from . import faults
from .faults import Behaviour
from .server import FaultServer, RecordedRequest

__all__ = ["Behaviour", "FaultServer", "LocalModelServer", "RecordedRequest", "faults"]


def __getattr__(name: str) -> Any:
    if name == "LocalModelServer":  # loaded on use: it is only for the real-model tier
        from .._local_model import LocalModelServer

        return LocalModelServer
    raise AttributeError(f"module 'mesh_core.testing' has no attribute {name!r}")
