"""Injectable clocks and calendar periods.

All decision code asks a :class:`Clock` for the time instead of calling
``time.time()``, so tests move time forward instead of sleeping through
cooldowns, quota periods and maintenance windows.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = [
    "PERIODS",
    "Clock",
    "ManualClock",
    "SystemClock",
    "next_period_start",
    "period_start",
]


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time in Unix seconds."""

    def time(self) -> float: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to. Thread-safe."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` and return the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, timestamp: float) -> None:
        with self._lock:
            self._now = float(timestamp)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


#: Calendar periods understood by ``quota_window`` and ``budget_window`` (all UTC).
PERIODS = ("hourly", "daily", "weekly", "monthly")


def period_start(period: str, ts: float) -> float:
    """Start (Unix seconds) of the UTC calendar period that contains ``ts``."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    if period == "hourly":
        start = dt.replace(minute=0, second=0, microsecond=0)
    elif period == "daily":
        start = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "weekly":  # ISO weeks start on Monday
        day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
    elif period == "monthly":
        start = dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
    return start.timestamp()


def next_period_start(period: str, ts: float) -> float:
    """Start of the UTC calendar period that follows the one containing ``ts``."""
    start = datetime.fromtimestamp(period_start(period, ts), tz=UTC)
    if period == "hourly":
        nxt = start + timedelta(hours=1)
    elif period == "daily":
        nxt = start + timedelta(days=1)
    elif period == "weekly":
        nxt = start + timedelta(weeks=1)
    else:
        nxt = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    return nxt.timestamp()
