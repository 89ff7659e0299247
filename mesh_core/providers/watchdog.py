"""Deadlines for blocking socket reads (the sync streaming path).

httpx fixes one read timeout per response, but a stream needs two (first token,
then stall between chunks) and a total. A single daemon thread watches the armed
deadlines of every open stream and shuts the socket down when one passes, which
wakes the blocked read; the stream then reports a timeout instead of a reset.
The thread sleeps while nothing is armed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["SocketGuard", "Watchdog"]

_TICK = 0.02


class SocketGuard:
    __slots__ = ("_sock", "deadline", "fired")

    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self.deadline: float | None = None
        self.fired = False

    def _fire(self) -> None:
        self.fired = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    def __init__(self) -> None:
        self._guards: set[SocketGuard] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def guard(self, sock: socket.socket | None) -> SocketGuard:
        g = SocketGuard(sock)
        with self._cond:
            self._guards.add(g)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="modelmesh-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return g

    def release(self, g: SocketGuard) -> None:
        with self._cond:
            self._guards.discard(g)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._guards:
                    self._cond.wait()
                now = time.monotonic()
                expired = [g for g in self._guards if g.deadline is not None and now >= g.deadline]
                for g in expired:
                    self._guards.discard(g)
            for g in expired:
                g._fire()
            time.sleep(_TICK)


WATCHDOG = Watchdog()
