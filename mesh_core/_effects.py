"""The effects a request's plan yields, and what the drivers send back.

The failover loop (:mod:`._failover`) is a generator that never does I/O itself: it
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
    from ._types import CompletionChunk, CompletionRequest, EmbeddingRequest
    from .providers import AsyncProviderStream, Provider, ProviderReply, ProviderStream, Timeouts
    from .providers._embeddings import EmbeddingReply

__all__ = ["Answer", "Blocking", "Call", "Effect", "Hedge", "Hedged", "Opened", "Outcome", "Sleep"]


@dataclass(slots=True)
class Hedge:
    """Ask a second model too when a stream has no first token after ``after`` seconds.

    ``backup`` chooses that model and returns its call, or None when no model is left;
    it may read the state store, so the async driver runs it in a thread."""

    after: float
    backup: Callable[[], Call | None]


@dataclass(slots=True)
class Call:
    """Effect: call ``provider`` for ``model``: a completion (streaming or not), or, when
    ``embed`` is set, an embedding of that batch (``request`` then only carries what
    routing reads: the pool, the timeout cap, the retry limit)."""

    provider: Provider
    model: Model
    request: CompletionRequest
    timeouts: Timeouts
    stream: bool
    span: Any = None
    """The attempt's tracing span, made current while the provider is called (or None)."""
    hedge: Hedge | None = None
    embed: EmbeddingRequest | None = None


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
class Opened:
    """A stream that sent its first token (or finished): failover is over for it."""

    stream: ProviderStream | AsyncProviderStream
    head: list[CompletionChunk]
    """The chunks read up to and including the first token."""


@dataclass(slots=True)
class Hedged:
    """How a hedged call went: the second ``call``, whether its answer won, and what the
    call that did not win raised (None: it was still waiting, and was cancelled)."""

    call: Call
    won: bool
    error: BaseException | None = None
    latency: float = 0.0
    """Seconds from the second call's start to its answer or error (0 when cancelled)."""


@dataclass(slots=True)
class Outcome:
    """What an effect gave: a ``Call``'s reply (a ProviderReply, an :class:`Opened` stream
    or an EmbeddingReply), a ``Blocking`` function's value, or the error it raised."""

    value: ProviderReply | Opened | EmbeddingReply | object = None
    error: BaseException | None = None
    hedged: Hedged | None = None


@dataclass(slots=True)
class Answer:
    """What a plan returns: the model that answered, its reply and its latency."""

    model: Model
    reply: ProviderReply | Opened | EmbeddingReply
    latency: float


Effect = Call | Sleep | Blocking
