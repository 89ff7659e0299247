"""The effects a request's plan yields, and what the drivers send back.

The failover loop (:mod:`.routing`) is a generator that never does I/O itself: it
yields one of these and receives an :class:`Outcome`. The sync driver performs an
effect with blocking calls, the async driver awaits it (a :class:`Blocking` effect
in a worker thread), so one plan serves both without touching the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._pool import Model
    from ._types import CompletionRequest
    from .providers._base import Provider, Timeouts

__all__ = ["Blocking", "Call", "Effect", "Outcome", "Sleep"]


@dataclass(slots=True)
class Call:
    """Effect: call ``provider`` for ``model`` (streaming or not)."""

    provider: Provider
    model: Model
    request: CompletionRequest
    timeouts: Timeouts
    stream: bool
    span: Any = None
    """The attempt's tracing span, made current while the provider is called (or None)."""


@dataclass(slots=True)
class Sleep:
    """Effect: wait ``seconds``."""

    seconds: float


@dataclass(slots=True)
class Blocking:
    """Effect: run ``fn()``, a blocking call that must stay off the event loop (state-store
    I/O). It never raises; the async driver runs it in a thread."""

    fn: Callable[[], object]


@dataclass(slots=True)
class Outcome:
    value: Any = None
    error: BaseException | None = None


Effect = Call | Sleep | Blocking
