"""Injectable clocks and calendar periods.

All decision code asks a :class:`Clock` for the time instead of calling
``time.time()``, so tests move time forward instead of sleeping through
cooldowns, quota periods and maintenance windows.

A clock tells two times. :meth:`Clock.time` is the wall clock (Unix seconds):
the one for calendar instants (quota and budget periods, maintenance windows)
and for anything persisted or shared with other processes. :meth:`Clock.monotonic`
never goes back and is not moved by NTP steps or an administrator: the one
durations (cooldowns) are measured with, so a wall clock set back an hour
cannot stretch a 60 s cooldown into 61 minutes.
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
    "as_clock",
    "next_period_start",
    "period_start",
]


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time in Unix seconds, and a monotonic time for durations."""

    def time(self) -> float:
        """Wall-clock time in Unix seconds (may jump when the system clock is set)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back, unaffected by clock steps."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to. Thread-safe.

    :meth:`advance` is time passing (wall and monotonic time move together);
    :meth:`jump` is the system clock being set (only wall time moves), for
    tests of NTP steps and hand-set clocks.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, monotonic: float = 0.0) -> None:
        self._now = float(start)
        self._mono = float(monotonic)
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> float:
        """Let ``seconds`` pass (wall and monotonic time) and return the new wall time."""
        if seconds < 0:
            raise ValueError("time cannot pass backwards; use jump() to set the wall clock back")
        with self._lock:
            self._now += seconds
            self._mono += seconds
            return self._now

    def jump(self, seconds: float) -> float:
        """Step the wall clock by ``seconds`` (either way) without time passing.

        Monotonic time stays put, as it does when NTP or an administrator sets the
        system clock. Returns the new wall time.
        """
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, timestamp: float) -> None:
        """Move the wall clock to ``timestamp``.

        Forward, this is time passing (monotonic time moves by the same amount),
        which is how tests reach a calendar boundary. Backward it can only be a
        clock step: monotonic time never goes back.
        """
        with self._lock:
            timestamp = float(timestamp)
            if timestamp > self._now:
                self._mono += timestamp - self._now
            self._now = timestamp

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r}, monotonic={self._mono!r})"


class _TimeOnly(Protocol):
    def time(self) -> float: ...


class _WallOnly:
    """A clock of the user's own with only ``time()``: durations follow its wall time."""

    def __init__(self, clock: _TimeOnly) -> None:
        self._clock = clock

    def time(self) -> float:
        return self._clock.time()

    def monotonic(self) -> float:
        return self._clock.time()

    def __repr__(self) -> str:
        return repr(self._clock)


def as_clock(clock: object) -> Clock:
    """``clock`` as a full :class:`Clock` (one written before ``monotonic()`` existed, with
    only ``time()``, measures durations on its wall time, as it always did)."""
    if hasattr(clock, "monotonic"):
        return clock  # type: ignore[return-value]
    return _WallOnly(clock)  # type: ignore[arg-type]  # a clock without monotonic() has time()


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
