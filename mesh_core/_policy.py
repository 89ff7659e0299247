"""What to do after a failed attempt: retry the same model, fail over, or raise (sans I/O).

The decision is a pure function, tenacity-style: :func:`decide` maps what happened
(:class:`Failure`) and the pool's :class:`RetryPolicy` to a typed :class:`Decision`,
and does nothing else. The router applies the failure to the model's state first
(error window, standby, an authentication shutout) and then asks for the decision, so
the whole policy can be read, and tested, as one table (``tests/test_policy.py``).

The rules, in order:

1. A caller's error (a bad request, a content-policy refusal) is raised at once: no
   other model would answer it differently.
2. A context-window overflow fails over, skipping models whose window is no larger.
3. Anything else fails over unless it is transient *and* the model is still active: a
   rate limit or a server error is retried on the same model, up to ``max_attempts``
   tries, after the provider's Retry-After when it sent one (failing over instead when
   that is longer than ``max_delay``), else after a backoff.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from ._errors import CALLER_KINDS, ErrorKind

__all__ = ["Decision", "FailOver", "Failure", "Raise", "Retry", "RetryPolicy", "decide"]

_TRANSIENT = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR})


@dataclass(frozen=True, slots=True)
class Retry:
    """Try the same model again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class FailOver:
    """Leave this model for the rest of the request and try the next one."""

    smaller_windows_too: bool = False
    """Also leave every model whose context window is no larger (the prompt did not fit)."""


@dataclass(frozen=True, slots=True)
class Raise:
    """Give the error to the caller: another model would not do better."""


Decision = Retry | FailOver | Raise


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as the policy sees it."""

    kind: ErrorKind
    tries: int
    """Attempts made on this model for this request, this one included (1-based)."""
    retry_after: float | None = None
    """The provider's Retry-After, in seconds."""
    still_active: bool = True
    """Whether the model is still in rotation after this failure was recorded."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A pool's ``retry`` settings (see RetryConfig for their meaning and defaults)."""

    max_attempts: int
    backoff: Literal["exponential_jitter", "fixed"]
    initial_delay: float
    max_delay: float

    @classmethod
    def of(cls, config: object, max_attempts: int | None = None) -> RetryPolicy:
        """The policy of a RetryConfig, with the request's ``max_retries`` (+1) if given."""
        return cls(
            max_attempts if max_attempts is not None else config.max_attempts,  # type: ignore[attr-defined]
            config.backoff,  # type: ignore[attr-defined]
            config.initial_delay,  # type: ignore[attr-defined]
            config.max_delay,  # type: ignore[attr-defined]
        )

    def wait(self, tries: int, rng: random.Random) -> float:
        """The backoff before try ``tries + 1``: fixed, or doubling from ``initial_delay``
        up to ``max_delay`` with jitter (half to all of it, so clients spread out)."""
        if self.backoff == "fixed":
            return min(self.initial_delay, self.max_delay)
        delay = min(self.max_delay, self.initial_delay * 2.0 ** min(tries - 1, 64))
        return delay * (0.5 + rng.random() / 2)


def decide(failure: Failure, policy: RetryPolicy, rng: random.Random) -> Decision:
    """The decision for ``failure`` under ``policy`` (``rng``: the jitter's source)."""
    kind = failure.kind
    if kind in CALLER_KINDS:
        return Raise()
    if kind is ErrorKind.CONTEXT_WINDOW:
        return FailOver(smaller_windows_too=True)
    if kind not in _TRANSIENT or not failure.still_active:
        return FailOver()
    if failure.tries >= policy.max_attempts:
        return FailOver()
    retry_after = failure.retry_after
    if retry_after is not None:
        return Retry(retry_after) if 0 <= retry_after <= policy.max_delay else FailOver()
    return Retry(policy.wait(failure.tries, rng))
