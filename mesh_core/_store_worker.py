"""The thread that talks to the state store on the mesh's behalf.

Requests never wait for the store when they can avoid it: a request that runs on an
event loop, or that finds the store degraded, leaves its changes with the
:class:`~mesh_core._persistence.StateKeeper` and wakes this thread, which writes them
behind the request (and, for a shared store, polls other processes' status changes
every ``refresh_interval``). The thread holds its keeper weakly, so a mesh that is
dropped without ``close()`` still lets it end.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._persistence import StateKeeper

__all__ = ["StoreWorker"]

logger = logging.getLogger("modelmesh")

_IDLE = 1.0
"""Longest sleep between two checks of a dropped keeper (seconds)."""


class StoreWorker:
    """A daemon thread running :meth:`StateKeeper.background_pass` when woken or due."""

    def __init__(self, keeper: StateKeeper) -> None:
        self._keeper = weakref.ref(keeper)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelmesh-store", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask for a pass soon (cheap; safe under any lock)."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds for a pass in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a wake during the pass below makes the next wait return at once
            keeper = self._keeper()
            if keeper is None:
                return
            try:
                delay = keeper.background_pass(time.monotonic())
            except Exception:  # never let the thread die: the store is secondary
                logger.debug("state store pass failed", exc_info=True)
                delay = _IDLE
            del keeper  # hold the keeper weakly while asleep
            self._wake.wait(min(max(delay, 0.001), _IDLE))
