"""Blocking foreign calls on worker threads, waited on with deadlines, and never piling up.

A blocking call (a foreign model's sync ``invoke``, a read of its sync stream, or the sync
code an async-less model would otherwise run on the event loop's default executor) cannot be
interrupted from outside. So it runs on a daemon worker thread (:class:`_Workers`, reused
from call to call) while the caller, sync or async, waits on it with the mesh's deadline.
Past the deadline the caller gives up and the call is *abandoned*: it goes on in the
background until it returns (or the foreign client's own timeout ends it), and what it
returns is dropped.

A model that never returns would keep one thread per call forever. :class:`Stuck` counts a
provider's abandoned calls still running: past its ``limit``, the provider starts no new
call (each attempt is a :class:`Saturated` at once, which the provider turns into a timeout
error) until one of them ends. So a hung model holds at most ``limit`` threads, whatever the
number of requests.

Why not the event loop's default executor for async-less models: it has a handful of
threads (``min(32, cpus + 4)``), shared with everything on the loop (``getaddrinfo`` of every
new connection among them); a few hung calls there would stall every other model's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["END", "ERROR", "ITEM", "Expired", "Pump", "Saturated", "Stuck", "arun", "run", "submit"]

T = TypeVar("T")
ITEM, END, ERROR = 0, 1, 2


class Expired(Exception):
    """The worker did not answer in time (the caller builds the timeout error)."""


class Saturated(Exception):
    """Too many abandoned calls of this provider are still running: no new one starts."""

    def __init__(self, running: int) -> None:
        super().__init__(running)
        self.running = running


class Stuck:
    """The abandoned calls of one provider still running on worker threads (see the module
    docstring); ``limit`` of them at most before new calls are refused."""

    __slots__ = ("_lock", "count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    def ticket(self) -> Ticket:
        """A ticket for a new call, or :class:`Saturated`."""
        with self._lock:
            if self.count >= self.limit:
                raise Saturated(self.count)
        return Ticket(self)


class Ticket:
    """One call's standing: running, ended, or abandoned while running (then counted in its
    :class:`Stuck` until it ends)."""

    __slots__ = ("_abandoned", "_done", "_stuck")

    def __init__(self, stuck: Stuck) -> None:
        self._stuck = stuck
        self._done = self._abandoned = False

    def ended(self) -> None:
        with self._stuck._lock:
            self._done = True
            if self._abandoned:
                self._abandoned = False
                self._stuck.count -= 1

    def abandon(self) -> None:
        with self._stuck._lock:
            if not self._done and not self._abandoned:
                self._abandoned = True
                self._stuck.count += 1


class _Workers:
    """Daemon threads reused from call to call (starting a thread costs ~50 µs a call).

    A job goes to an idle worker, or to a new one when none is idle: an abandoned call keeps
    its worker busy but never holds up another call. A worker idle for ``IDLE`` seconds
    ends, so the threads follow the load (none is left once calls stop).
    """

    IDLE = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            jobs = self._idle.pop() if self._idle else None
        if jobs is None:
            jobs = queue.SimpleQueue()
            threading.Thread(
                target=self._work, args=(jobs,), name="mesh-foreign-worker", daemon=True
            ).start()
        jobs.put(job)

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            try:
                job = jobs.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    if jobs in self._idle:  # else a job was just handed to this worker
                        self._idle.remove(jobs)
                        return
                continue
            with contextlib.suppress(Exception):  # jobs deliver their own outcome: a net
                job()
            del job
            with self._lock:
                self._idle.append(jobs)


_WORKERS = _Workers()


def submit(fn: Callable[[], T], ticket: Ticket, deliver: Callable[[int, Any], None]) -> None:
    """``fn()`` on a worker, in the caller's context; ``deliver(ITEM, result)`` or
    ``deliver(ERROR, exception)`` (any BaseException: the caller re-raises it) once it ends."""
    context = contextvars.copy_context()

    def job() -> None:
        try:
            outcome: tuple[int, Any] = (ITEM, context.run(fn))
        except BaseException as exc:
            outcome = (ERROR, exc)
        finally:
            ticket.ended()
        deliver(*outcome)

    _WORKERS.submit(job)


def run(fn: Callable[[], T], seconds: float, stuck: Stuck) -> T:
    """``fn()`` on a worker, waited on for at most ``seconds``: what it returned or raised,
    :class:`Expired` (it is then abandoned) or :class:`Saturated`."""
    ticket = stuck.ticket()
    box: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
    submit(fn, ticket, lambda tag, value: box.put((tag, value)))
    try:
        tag, value = box.get(timeout=max(seconds, 0.0))
    except queue.Empty:
        ticket.abandon()
        raise Expired from None
    if tag == ERROR:
        raise value
    return value  # type: ignore[no-any-return]


async def arun(fn: Callable[[], T], stuck: Stuck) -> T:
    """``fn()`` on a worker, awaited (the caller's ``asyncio.timeout`` is the deadline):
    what it returned or raised, or :class:`Saturated`. Cancelled, it abandons the call."""
    ticket = stuck.ticket()
    loop = asyncio.get_running_loop()
    result: asyncio.Future[tuple[int, Any]] = loop.create_future()

    def settle(tag: int, value: Any) -> None:
        if not result.done():
            result.set_result((tag, value))

    def deliver(tag: int, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, tag, value)

    submit(fn, ticket, deliver)
    try:
        tag, value = await result
    except BaseException:  # cancelled (a deadline, the caller): the call goes on alone
        ticket.abandon()
        raise
    if tag == ERROR:
        raise value
    return value  # type: ignore[no-any-return]


class Pump:
    """A foreign iterator read on a worker thread, each item handed to ``put`` as
    ``(ITEM, chunk)``, then ``(END, None)`` or ``(ERROR, exception)``. :meth:`stop` makes
    the worker stop at its next item (and close the iterator); a worker still blocked in the
    foreign code then is abandoned."""

    def __init__(
        self,
        open_stream: Callable[[], Iterator[Any]],
        put: Callable[[tuple[int, Any]], None],
        stuck: Stuck,
    ) -> None:
        self._stop = threading.Event()
        self._put = put
        self._ticket = stuck.ticket()
        submit(lambda: self._pump(open_stream), self._ticket, lambda tag, value: None)

    def _pump(self, open_stream: Callable[[], Iterator[Any]]) -> None:
        chunks: Iterator[Any] | None = None
        try:
            chunks = iter(open_stream())
            for chunk in chunks:
                if self._stop.is_set():
                    return
                self._put((ITEM, chunk))
            self._put((END, None))
        except BaseException as exc:
            self._put((ERROR, exc))
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):  # the stream is over for us either way
                    close()

    def stop(self) -> None:
        self._stop.set()
        self._ticket.abandon()  # (a no-op when the worker is done)


async def athread_chunks(open_stream: Callable[[], Iterator[T]], stuck: Stuck) -> AsyncIterator[T]:
    """A sync foreign stream read on a worker thread, as an async iterator (each read
    awaits, cancellably, instead of blocking the loop or its default executor)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    def put(item: tuple[int, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads
            loop.call_soon_threadsafe(items.put_nowait, item)

    pump = Pump(open_stream, put, stuck)
    try:
        while True:
            tag, value = await items.get()
            if tag == END:
                return
            if tag == ERROR:
                raise value
            yield value
    finally:
        pump.stop()
