"""What a provider call gives back to the router, whatever the wire protocol.

The router and the failover loop consume these types and nothing of any one dialect:
a parsed answer (:class:`ParsedResponse`), the provider's rate-limit headroom
(:class:`RateLimitInfo`), and the shared rules every dialect applies to the numbers a
provider reports (token counts, ``retry-after`` delays). Keeping them here, not in the
OpenAI dialect, is what lets a new protocol be one dialect file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from .._errors import MalformedResponseError, ProviderError
from .._types import ToolCall, Usage

__all__ = [
    "MAX_TOKENS",
    "ParsedResponse",
    "RateLimitInfo",
    "count",
    "guarded",
    "header_count",
    "load_json",
    "malformed",
    "parse_retry_after",
    "seconds",
    "usage_of",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """A complete (non-streamed) answer, in the mesh's terms: finish reasons are the OpenAI
    ones (``stop``, ``length``, ``tool_calls``, ``content_filter``) whatever the dialect."""

    id: str
    provider_model: str | None
    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: Usage | None
    created: int


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """Rate-limit headroom a provider reported in its reply headers (each dialect reads its
    own: ``x-ratelimit-*``, ``anthropic-ratelimit-*``...)."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    reset_requests: float | None = None
    """Seconds until the request window resets."""


MAX_TOKENS = 10**9
"""Token counts at or above this (per request) are not believed."""


def count(value: Any) -> int:
    """A reported token count: an integer (or integral float) in ``[0, MAX_TOKENS)``; a
    missing one is 0. Anything else raises ValueError."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():  # False for NaN and infinities
        n = int(value)
    else:
        raise ValueError(value)
    if not 0 <= n < MAX_TOKENS:
        raise ValueError(value)
    return n


def usage_of(prompt: Any, completion: Any, total: Any = None) -> Usage | None:
    """The reported usage from its three raw counts, or None when one is unusable.

    Unusable (a count that is a string, a bool, NaN, infinite, fractional, negative or
    ``>= MAX_TOKENS``) is treated as *missing*, never clamped: a provider that miscounts
    one field is not trusted with the others, and a missing usage is one the mesh knows
    how to handle (a stream's is estimated). So counters and cost never turn negative,
    NaN or absurd. A total below prompt + completion is raised to their sum.
    """
    try:
        p, c, t = count(prompt), count(completion), count(total)
    except ValueError:
        return None
    return Usage(p, c, max(t, p + c))


def malformed(why: str) -> MalformedResponseError:
    return MalformedResponseError(f"malformed provider reply: {why}")


def load_json(text: bytes | str, what: str) -> Any:
    """``json.loads``, failing as a MalformedResponseError that says what was not JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise malformed(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        shown = f": {text[:80]!r}" if what == "stream event" else ""
        raise malformed(f"{what} is not JSON{shown}") from None


def guarded(parse: Callable[[Any], T], data: Any, what: str) -> T:
    """``parse(data)``; whatever goes wrong in it becomes a MalformedResponseError.

    The parsers check the shapes they rely on and say what is wrong; this is the net under
    them, so that no provider's bytes can ever surface as a raw Python exception (and so
    escape failover)."""
    try:
        return parse(data)
    except ProviderError:
        raise
    except RecursionError:
        raise malformed(f"{what} is nested too deeply") from None
    except Exception as exc:
        raise malformed(f"unexpected {what} ({type(exc).__name__})") from None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date);
    None when absent or not a number."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return seconds(float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return seconds(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds(when - (time.time() if now is None else now))


def seconds(value: float) -> float | None:
    """A non-negative number of seconds; None for NaN (an infinity stays: whoever waits caps
    it, e.g. by ``recovery.max_cooldown``)."""
    return None if math.isnan(value) else max(0.0, value)


def header_count(value: str | None) -> int | None:
    """A header's non-negative count (``"100"``, ``"99.0"``); None when it is not one."""
    try:
        n = int(float(value)) if value is not None else None
    except (ValueError, OverflowError):  # "x", "nan", "inf"
        return None
    return n if n is None or n >= 0 else None
