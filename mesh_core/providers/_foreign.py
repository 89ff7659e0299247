"""Foreign models as providers: a LangChain chat model or a LlamaIndex LLM the user already
has (``ChatBedrock``, ``ChatVertexAI``, a LlamaIndex ``Bedrock``...) as a pool member.

Such a model brings its own client, authentication (SigV4, application default
credentials, Entra ID tokens) and wire protocol; the mesh brings the rest (state, standby
and recovery, strategies, quotas, first-token failover, persistence). The split:

* a :class:`ForeignAdapter`, one per framework (``modelmesh_langchain._foreign``,
  ``modelmesh_llamaindex._foreign``), converts: the mesh's OpenAI-shaped
  :class:`~mesh_core._types.CompletionRequest` into the framework's call, and its answer
  back into a :class:`~._reply.ParsedResponse` or :class:`~mesh_core._types.CompletionChunk`\\ s.
  It knows nothing of the mesh's timeouts or errors.
* :class:`ForeignProvider` does the mesh's side once for every framework: it implements
  :class:`~._base.Provider`, holds each attempt to its :class:`~._base.Timeouts`, and turns
  every exception into a classified, secret-free
  :class:`~mesh_core._errors.ProviderError` (``adapter.classify`` first, then
  :func:`~._foreign_errors.classify_foreign_error`).

Timeouts. Async calls run under ``asyncio`` timeouts (``total`` around a call; around each
``__anext__`` of a stream, ``first_token`` then ``stall``, capped by ``total``), which
cancel the foreign call. A blocking call cannot be interrupted from outside, so a sync
call (or a stream's reads) runs on a daemon worker thread (reused from call to call, with
the caller's context variables, so LangChain callbacks and tracing still see their parent
run) while the caller waits on it with the same deadlines
(:mod:`._foreign_threads`). Past one, the caller gets a
:class:`~mesh_core._errors.ProviderTimeoutError` and fails over at once; the worker is
abandoned: it finishes (or hits the foreign client's own timeout) in the background, and
what it returns is dropped. A stream's worker stops reading at its next chunk after the
stream is closed. At most :attr:`ForeignProvider.max_abandoned` abandoned calls of one
provider may still be running: past that, its calls fail at once with a timeout error
until one ends, so a model that never returns holds a bounded number of threads. A model
with no async code of its own (the adapter's ``sync_only``) is called the same way on the
async path, its worker awaited: its framework would otherwise run it on the event loop's
small default executor (or on the loop itself), where a few hung calls stall the rest.

A foreign stream that ends without raising is complete: when the adapter yields no finish
reason, the provider adds one (``tool_calls`` when tool-call fragments came, else
``stop``), since the framework gives no other sign of an answer's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, NoReturn, Protocol, runtime_checkable

from .._errors import ProviderError, ProviderTimeoutError
from .._types import CompletionChunk, CompletionRequest
from . import _foreign_threads as threads
from ._base import (
    AsyncProviderStream,
    ProviderReply,
    ProviderStream,
    StreamTimer,
    Timeouts,
    total_expired,
)
from ._foreign_errors import classify_foreign_error, scrub, shows_secret, stale_event_loop
from ._foreign_mesh import foreign_mesh_config, mesh_from_models
from ._reply import ParsedResponse

__all__ = ["ForeignAdapter", "ForeignProvider", "foreign_mesh_config", "mesh_from_models"]

_MAX_MESSAGE = 2000


@runtime_checkable
class ForeignAdapter(Protocol):
    """What one framework's models need to be mesh providers: conversion, no mesh logic.

    ``model_name`` is the mesh model's ``name`` (the part of its ID after the first dot,
    unless configured); a foreign model, which knows its own model, may ignore it.
    Exceptions are raised as the framework raises them: :class:`ForeignProvider`
    classifies them. An adapter may also have ``sync_only(streaming: bool) -> bool``: True
    when the model has no async code of its own for that kind of call, so the provider runs
    the sync one on its own worker threads instead of the async one.
    """

    name: str
    """The framework (``"langchain"``, ``"llamaindex"``), for reprs and error messages."""

    def invoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse: ...

    async def ainvoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse: ...

    def stream(self, model_name: str, request: CompletionRequest) -> Iterator[CompletionChunk]:
        """The answer's chunks; the last one carries ``finish_reason`` and ``usage`` when the
        model reports them."""
        ...

    def astream(
        self, model_name: str, request: CompletionRequest
    ) -> AsyncIterator[CompletionChunk]: ...

    def classify(self, exc: BaseException) -> ProviderError | None:
        """The framework's own reading of ``exc``; None leaves it to
        :func:`~._foreign_errors.classify_foreign_error`."""
        ...

    def close(self) -> None:
        """Release what the adapter owns (may do nothing: a foreign model's client belongs
        to whoever built the model)."""
        ...


class ForeignProvider:
    """A :class:`~._base.Provider` over a :class:`ForeignAdapter`: timeouts, error
    classification and the provider ID, the same for every framework.

    ``secrets`` (e.g. the model's API key) are hidden from every error message, on top of
    the secret shapes :func:`~._foreign_errors.scrub` knows.
    """

    def __init__(
        self, provider_id: str, adapter: ForeignAdapter, *, secrets: Iterable[str] = ()
    ) -> None:
        self.provider_id = provider_id
        self.adapter = adapter
        self._secrets = tuple(s for s in secrets if s)
        self._stuck = threads.Stuck(self.max_abandoned)

    def __repr__(self) -> str:
        return f"ForeignProvider({self.provider_id!r}, {self.adapter.name})"

    # --- errors ---------------------------------------------------------------------
    def error(self, exc: BaseException) -> ProviderError:
        """``exc`` as a classified mesh error of this provider, with no secret in it."""
        err: ProviderError | None = exc if isinstance(exc, ProviderError) else None
        if isinstance(exc, threads.Saturated):
            err = ProviderTimeoutError(
                f"{self.provider_id}: {exc.running} earlier calls are still running past their "
                "deadline on worker threads (the model's client has no timeout, or a longer "
                "one): no new call starts until one of them ends"
            )
        if err is None:
            try:
                err = self.adapter.classify(exc)
            except Exception:  # a classifier bug must not hide the original error
                err = None
        if err is None:
            err = classify_foreign_error(exc, provider_id=self.provider_id, secrets=self._secrets)
        err.provider_id = self.provider_id
        err.message = scrub(err.message, self._secrets)
        if len(err.message) > _MAX_MESSAGE:  # an adapter's own message may quote anything
            err.message = f"{err.message[:_MAX_MESSAGE]}... (cut)"
        err.args = (err.message,)
        return err

    def fail(self, exc: BaseException) -> NoReturn:
        """Raise the error for ``exc``: an unclassified one keeps its cause (it may be a bug
        in the caller's code, whose traceback matters) unless a secret shows anywhere in it;
        SDK errors do not (they may carry request bodies and headers). What is not an
        ``Exception`` (KeyboardInterrupt, SystemExit, GeneratorExit) is not the model's
        failure: it is raised as it is."""
        if not isinstance(exc, Exception):
            raise exc
        err = self.error(exc)
        keep = err.details.get("unclassified") and not shows_secret(exc, self._secrets)
        raise err from (exc if keep else None)

    max_abandoned = 8
    """Calls abandoned at their deadline that may still be running at once (each holds a
    worker thread) before the provider refuses new ones with a timeout error."""

    def _expired(self, err: ProviderError) -> ProviderError:
        err.provider_id = self.provider_id
        return err

    # --- non-streaming ------------------------------------------------------------------
    def complete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        try:
            response = threads.run(
                lambda: self.adapter.invoke(model_name, request), timeouts.total, self._stuck
            )
        except threads.Expired:
            raise self._expired(total_expired(timeouts)) from None
        except Exception as exc:
            self.fail(exc)
        return ProviderReply(response)

    async def acomplete(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderReply:
        try:
            async with asyncio.timeout(timeouts.total) as deadline:
                try:
                    response = await self._ainvoke(model_name, request)
                except Exception as exc:
                    if not stale_event_loop(exc):
                        raise
                    response = await self._ainvoke(model_name, request)  # once
        except TimeoutError as exc:
            if deadline.expired():
                raise self._expired(total_expired(timeouts)) from None
            self.fail(exc)
        except Exception as exc:
            self.fail(exc)
        return ProviderReply(response)

    # --- streaming --------------------------------------------------------------------
    def stream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> ProviderStream:
        return _WorkerStream(self, lambda: self.adapter.stream(model_name, request), timeouts)

    async def astream(
        self, model_name: str, request: CompletionRequest, timeouts: Timeouts
    ) -> AsyncProviderStream:
        if self._sync_only(streaming=True):
            return _TaskStream(
                self,
                lambda: threads.athread_chunks(
                    lambda: self.adapter.stream(model_name, request), self._stuck
                ),
                timeouts,
            )
        return _TaskStream(self, lambda: self.adapter.astream(model_name, request), timeouts)

    def _sync_only(self, *, streaming: bool) -> bool:
        """Whether the model has no async code of its own (its framework would run the sync
        code on the event loop's default executor, or on the loop itself)."""
        sync_only = getattr(self.adapter, "sync_only", None)
        return bool(sync_only(streaming)) if callable(sync_only) else False

    async def _ainvoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse:
        if self._sync_only(streaming=False):
            return await threads.arun(lambda: self.adapter.invoke(model_name, request), self._stuck)
        return await self.adapter.ainvoke(model_name, request)

    def close(self) -> None:
        self.adapter.close()

    async def aclose(self) -> None:
        self.adapter.close()


# --- the finish reason a foreign stream may not give ------------------------------------


class _Ending:
    """Watches a stream's chunks, and gives the final chunk the adapter did not send."""

    __slots__ = ("finished", "tools")

    def __init__(self) -> None:
        self.finished = False
        self.tools = False

    def saw(self, chunk: CompletionChunk) -> None:
        self.finished = self.finished or chunk.finish_reason is not None
        self.tools = self.tools or bool(chunk.tool_call_deltas)

    def last(self) -> CompletionChunk | None:
        if self.finished:
            return None
        self.finished = True
        return CompletionChunk(finish_reason="tool_calls" if self.tools else "stop")


# --- sync: the call on a worker thread, the caller waiting with deadlines --------------


class _WorkerStream(ProviderStream):
    """A foreign iterator read by a worker thread into a queue (a :class:`~._foreign_threads.Pump`),
    which the consumer reads with the stream's deadlines (first token, stall, total)."""

    def __init__(
        self,
        provider: ForeignProvider,
        open_stream: Callable[[], Iterator[CompletionChunk]],
        timeouts: Timeouts,
    ) -> None:
        self._provider = provider
        self._timer = StreamTimer(timeouts)
        self._ending = _Ending()
        self._queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._over = False
        self._pump: threads.Pump | None = None
        self._refused: threads.Saturated | None = None
        try:
            self._pump = threads.Pump(open_stream, self._queue.put, provider._stuck)
        except threads.Saturated as exc:  # raised by the first read, as a stream's errors are
            self._refused = exc

    def __next__(self) -> CompletionChunk:
        if self._over:
            raise StopIteration
        if self._refused is not None:
            self._over = True
            self._provider.fail(self._refused)
        now = time.monotonic()
        at = self._timer.deadline(now)
        try:
            tag, value = self._queue.get(timeout=max(at - now, 0.0))
        except queue.Empty:
            self.close()
            raise self._provider._expired(self._timer.expired(at)) from None
        if tag == threads.ITEM:
            self._timer.saw(value)
            self._ending.saw(value)
            return value  # type: ignore[no-any-return]
        if tag == threads.ERROR:
            self.close()
            self._provider.fail(value)
        self.done = True
        last = self._ending.last()
        if last is None:
            self._over = True
            raise StopIteration
        return last

    def close(self) -> None:
        self._over = True
        if self._pump is not None:
            self._pump.stop()


# --- async: asyncio timeouts around each step, cancelling the foreign call -----------------


class _TaskStream(AsyncProviderStream):
    """A foreign async stream, each step under its deadline. One opening that fails for a
    connection pooled in a closed event loop (:func:`~._foreign_errors.stale_event_loop`)
    is tried again, as :meth:`ForeignProvider.acomplete` does."""

    def __init__(
        self,
        provider: ForeignProvider,
        open_chunks: Callable[[], AsyncIterator[CompletionChunk]],
        timeouts: Timeouts,
    ) -> None:
        self._provider = provider
        self._open = open_chunks
        self._chunks = open_chunks()
        self._timer = StreamTimer(timeouts)
        self._ending = _Ending()
        self._over = False
        self._reopened = False

    async def _step(self) -> CompletionChunk:
        try:
            return await self._chunks.__anext__()
        except Exception as exc:
            if self._reopened or self._timer.got_token or not stale_event_loop(exc):
                raise
        self._reopened = True
        self._chunks = self._open()
        return await self._chunks.__anext__()

    async def __anext__(self) -> CompletionChunk:
        if self._over:
            raise StopAsyncIteration
        now = time.monotonic()
        at = self._timer.deadline(now)
        try:
            async with asyncio.timeout(max(at - now, 0.0)) as deadline:
                chunk = await self._step()
        except StopAsyncIteration:
            self.done = True
            last = self._ending.last()
            if last is None:
                self._over = True
                raise
            return last
        except TimeoutError as exc:
            await self.aclose()
            if deadline.expired():
                raise self._provider._expired(self._timer.expired(at)) from None
            self._provider.fail(exc)
        except Exception as exc:
            await self.aclose()
            self._provider.fail(exc)
        self._timer.saw(chunk)
        self._ending.saw(chunk)
        return chunk

    async def aclose(self) -> None:
        self._over = True
        close = getattr(self._chunks, "aclose", None)
        if callable(close):
            with contextlib.suppress(Exception):  # a broken stream: nothing more to learn
                await close()
