"""Test helpers: a real OpenAI-compatible HTTP server with fault injection.

Use it in your own tests to see what your chains do when providers fail::

    from mesh_core.testing import FaultServer, faults
"""

from __future__ import annotations

from . import faults
from .faults import Behaviour
from .server import FaultServer, RecordedRequest

__all__ = ["Behaviour", "FaultServer", "RecordedRequest", "faults"]
