"""The two drivers: they perform a plan's effects, blocking or awaiting, and decide nothing.

A plan (:meth:`~mesh_core._failover.Flight.plan`) is a generator of effects. :func:`drive`
performs them with blocking calls, :func:`adrive` by awaiting them; the failover logic is
written once, in the plan. A hedged call (:class:`~mesh_core._effects.Hedge`) is the one
place where the drivers run two calls at once: the async driver as two tasks, the sync one
in two daemon threads (a blocking read cannot be interrupted, so the loser's connection
is closed as soon as its read returns, at most its first-token deadline later).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from collections.abc import Generator
from typing import TypeVar

from ._effects import Blocking, Call, Effect, Hedged, Opened, Outcome, Sleep
from ._errors import ErrorKind, ProviderError, provider_error
from ._tracing import current
from ._types import CompletionChunk
from .providers import ProviderReply
from .providers._base import embedder
from .providers._embeddings import EmbeddingReply

__all__ = ["adrive", "drive"]

T = TypeVar("T")
Plan = Generator[Effect, Outcome | None, T]


def drive(plan: Plan[T]) -> T:
    """Perform a plan's effects with blocking calls; returns what the plan returns."""
    outcome: Outcome | None = None
    try:
        while True:
            try:
                effect = plan.send(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(effect, Sleep):
                time.sleep(effect.seconds)
                outcome = None
            elif isinstance(effect, Blocking):
                outcome = Outcome(value=effect.fn())
            elif effect.hedge is not None:
                outcome = _race(effect)
            else:
                outcome = _attempt(effect)
    finally:
        plan.close()


async def adrive(plan: Plan[T]) -> T:
    """Perform a plan's effects by awaiting them (blocking work goes to a thread)."""
    outcome: Outcome | None = None
    try:
        while True:
            try:
                effect = plan.send(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(effect, Sleep):
                await asyncio.sleep(effect.seconds)
                outcome = None
            elif isinstance(effect, Blocking):
                outcome = Outcome(value=await asyncio.to_thread(effect.fn))
            elif effect.hedge is not None:
                outcome = await _arace(effect)
            else:
                outcome = await _aattempt(effect)
    finally:
        plan.close()


# --- one call -------------------------------------------------------------------------


def _attempt(c: Call) -> Outcome:
    try:
        with current(c.span):
            return Outcome(value=_call(c))
    except ProviderError as err:
        return Outcome(error=err)


async def _aattempt(c: Call) -> Outcome:
    try:
        with current(c.span):
            return Outcome(value=await _acall(c))
    except ProviderError as err:
        return Outcome(error=err)


def _call(c: Call) -> ProviderReply | Opened | EmbeddingReply:
    if c.embed is not None:
        return embedder(c.provider).embed(c.model.name, c.embed, c.timeouts)
    if not c.stream:
        return c.provider.complete(c.model.name, c.request, c.timeouts)
    stream = c.provider.stream(c.model.name, c.request, c.timeouts)
    head: list[CompletionChunk] = []
    try:
        for chunk in stream:  # read up to the first token: until then failover is free
            head.append(chunk)
            if chunk.has_token or chunk.finish_reason is not None:
                return Opened(stream, head)
    except BaseException:
        stream.close()
        raise
    stream.close()
    raise ended_early(c)


async def _acall(c: Call) -> ProviderReply | Opened | EmbeddingReply:
    if c.embed is not None:
        return await embedder(c.provider).aembed(c.model.name, c.embed, c.timeouts)
    if not c.stream:
        return await c.provider.acomplete(c.model.name, c.request, c.timeouts)
    stream = await c.provider.astream(c.model.name, c.request, c.timeouts)
    head: list[CompletionChunk] = []
    try:
        async for chunk in stream:
            head.append(chunk)
            if chunk.has_token or chunk.finish_reason is not None:
                return Opened(stream, head)
    except BaseException:
        await stream.aclose()
        raise
    await stream.aclose()
    raise ended_early(c)


def ended_early(c: Call) -> ProviderError:
    return provider_error(ErrorKind.CONNECTION, f"stream from {c.model.id} ended before any token")


# --- a hedged call: two at once, the first token wins ----------------------------------


def _decided(first: Outcome, second: Outcome, call: Call, second_won: bool, t0: float) -> Outcome:
    """The outcome of a race: the winner's reply, or (nobody won) the first call's error."""
    latency = time.perf_counter() - t0
    if second_won:
        return Outcome(value=second.value, hedged=Hedged(call, True, first.error, latency))
    if first.error is None:
        return Outcome(value=first.value, hedged=Hedged(call, False, second.error, latency))
    return Outcome(error=first.error, hedged=Hedged(call, False, second.error, latency))


class _Runner:
    """One call on a daemon thread; its stream is closed if it answers after losing."""

    def __init__(self, call: Call, done: queue.SimpleQueue[_Runner]) -> None:
        self.outcome: Outcome | None = None
        self._lost = False
        self._lock = threading.Lock()
        self._done = done
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(self._run, call), daemon=True, name="modelmesh-hedge"
        ).start()

    def _run(self, call: Call) -> None:
        try:
            outcome = _attempt(call)
        except BaseException as exc:  # carried to the waiting thread
            outcome = Outcome(error=exc)
        with self._lock:
            self.outcome = outcome
            lost = self._lost
        if lost:
            _discard(outcome)
        self._done.put(self)

    def lose(self) -> None:
        """Cancel: the answer is not wanted (closed now, or when it arrives)."""
        with self._lock:
            self._lost = True
            outcome = self.outcome
        if outcome is not None:
            _discard(outcome)


def _discard(outcome: Outcome) -> None:
    if isinstance(outcome.value, Opened):
        stream = outcome.value.stream
        stream.close()  # type: ignore[union-attr]


def _race(call: Call) -> Outcome:
    assert call.hedge is not None
    done: queue.SimpleQueue[_Runner] = queue.SimpleQueue()
    first = _Runner(call, done)
    try:
        finished = done.get(timeout=call.hedge.after)
    except queue.Empty:
        pass
    else:
        return _reraise(finished.outcome)
    second_call = call.hedge.backup()
    if second_call is None:
        return _reraise(done.get().outcome)
    t0 = time.perf_counter()
    second = _Runner(second_call, done)
    ahead = done.get()
    winner: _Runner | None = ahead if _won(ahead.outcome) else None
    if winner is None:
        behind = done.get()
        winner = behind if _won(behind.outcome) else None
    if winner is not None:
        (second if winner is first else first).lose()
    return _decided(
        first.outcome or Outcome(), second.outcome or Outcome(), second_call, winner is second, t0
    )


async def _arace(call: Call) -> Outcome:
    assert call.hedge is not None
    first = asyncio.ensure_future(_aattempt(call))
    second: asyncio.Future[Outcome] | None = None
    try:
        done, _ = await asyncio.wait({first}, timeout=call.hedge.after)
        if done:
            return _reraise(first.result())
        second_call = await asyncio.to_thread(call.hedge.backup)
        if second_call is None:
            return _reraise(await first)
        t0 = time.perf_counter()
        second = asyncio.ensure_future(_aattempt(second_call))
        both = (first, second)
        done, pending = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        winner = next((t for t in both if t in done and _won(t.result())), None)
        if winner is None and pending:
            await asyncio.wait(pending)
            winner = next((t for t in both if _won(t.result())), None)
        if winner is not None:
            await _acancel(second if winner is first else first)
        return _decided(_settled(first), _settled(second), second_call, winner is second, t0)
    finally:
        for task in (first, second):
            if task is not None and not task.done():
                await _acancel(task)


def _settled(task: asyncio.Future[Outcome]) -> Outcome:
    """A finished call's outcome (an empty one for a call cancelled while waiting)."""
    return task.result() if task.done() and not task.cancelled() else Outcome()


async def _acancel(task: asyncio.Future[Outcome]) -> None:
    """Cancel a call that lost (its stream closes as the task unwinds); a call that
    answered anyway has its stream closed here."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})  # unlike ``await task``, lets the caller's own cancel through
    if task.cancelled() or task.exception() is not None:
        return  # it lost; what it raised is not news
    opened = task.result().value
    if isinstance(opened, Opened):
        await opened.stream.aclose()  # type: ignore[union-attr]


def _won(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.error is None


def _reraise(outcome: Outcome | None) -> Outcome:
    """A call's outcome, raising what was not a provider error (as an un-hedged call would)."""
    assert outcome is not None
    if outcome.error is not None and not isinstance(outcome.error, ProviderError):
        raise outcome.error
    return outcome
