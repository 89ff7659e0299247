"""Connection pools: the TLS context every transport shares, and an event loop's pools.

Part of the transport (:mod:`._transport`). Transports are cheap to build, so a first call,
and the first call in each new event loop (``asyncio.run`` per request), costs what a bare
httpx call costs: the TLS context, the one expensive part (loading the CA bundle), is built
once per process and verification setting and shared by every transport, sync or async, and
none is built for a plain ``http://`` provider. An event loop's pools close when the loop
shuts down (``asyncio.run`` and ``asyncio.Runner`` finalise the async generators still open,
and one per loop is there to close its pools), or, for a loop closed without that step, at
the next new loop or at the provider's ``close()``, which closes every loop's pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import threading
import weakref
from collections.abc import AsyncGenerator
from functools import lru_cache
from typing import Any, Protocol

import httpx

from ._shards import Shards

__all__ = [
    "AsyncTransport",
    "LoopPools",
    "drop_closed_loops",
    "no_tls",
    "running_loop",
    "tls_context",
]


class _Owner(Protocol):
    def _forget(self, pools: LoopPools) -> None: ...


class AsyncTransport(Protocol):
    """What a loop's pools are made of (:class:`~._h1pool.H1Transport`, or the SOCKS
    fallback :class:`~._h1socks.HttpxTransport`): how they close."""

    async def aclose(self) -> None: ...

    def drop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections without awaiting ``loop`` (closed, idle, or this thread's)."""


_TLS: dict[bool, ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


def tls_context(verify: bool) -> ssl.SSLContext:
    """The TLS context of every transport that verifies (or not) certificates: built once
    per process, as httpx builds it (certifi's CA bundle, no environment).

    Loading the CA bundle is most of what building a transport costs (15-90 ms, against a
    few microseconds for the rest), and the context is read-only once built, so transports,
    event loops and providers share it. Threads that need it while it is being built wait
    for it, since they would otherwise build their own; nobody else takes this lock.
    """
    context = _TLS.get(verify)
    if context is None:
        with _TLS_LOCK:
            context = _TLS.get(verify)
            if context is None:
                context = _TLS[verify] = httpx.create_ssl_context(verify=verify, trust_env=False)
    return context


@lru_cache(maxsize=1)
def no_tls() -> ssl.SSLContext:
    """The context handed to the transports of a plain-HTTP provider (httpx wants one).

    Never used: the URL is fixed and redirects are not followed. Were it used, it would fail
    closed: it verifies certificates and trusts no authority.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopPools:
    """One event loop's transports, and how they close with it.

    :meth:`close_with_loop` starts an async generator that does nothing but wait: the loop
    registers it (its first-iteration hook), and its shutdown (``loop.shutdown_asyncgens()``,
    which ``asyncio.run``, ``asyncio.Runner``, anyio and pytest-asyncio run before closing a
    loop) finalises it, inside the loop, where its ``finally`` awaits the transports' close.
    Nothing global is patched. A loop closed without that step is caught by :meth:`drop`.
    """

    __slots__ = ("_closer", "_owner", "closed", "loop", "shards")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        shards: Shards[AsyncTransport],
        owner: weakref.ref[_Owner],
    ) -> None:
        self.loop = loop
        self.shards = shards
        self.closed = False
        self._owner = owner
        self._closer: Any = None

    def close_with_loop(self) -> None:
        """Have the loop's shutdown close these pools (see the class docstring)."""
        if sys.get_asyncgen_hooks().firstiter is None:
            return  # a loop that does not track async generators: drop() it is
        closer = _close_at_shutdown(self)
        # Runs the generator up to its ``yield`` without awaiting anything (so this stays a
        # plain function): StopIteration is that first step completing.
        with contextlib.suppress(StopIteration):
            closer.asend(None).send(None)
        self._closer = closer

    async def aclose(self) -> None:
        """Close the transports, awaiting their connections (on this loop)."""
        if self.closed:
            return
        self.closed = True
        owner = self._owner()
        if owner is not None:
            owner._forget(self)
        for transport in self.shards.transports:
            await transport.aclose()
        self._finish()

    def drop(self) -> None:
        """Close the transports without awaiting the loop (from any thread).

        A closed loop's sockets, and a loop's that is not running, close here and now; a
        loop running on this thread closes them on its next turn; a loop running on another
        thread is asked to, thread-safely.
        """
        if self.closed:
            return
        self.closed = True
        loop = self.loop
        transports = list(self.shards.transports)
        if loop.is_running() and running_loop() is not loop:
            try:
                loop.call_soon_threadsafe(_drop_all, transports, loop)
            except RuntimeError:  # closed in the meantime
                _drop_all(transports, loop)
        else:
            _drop_all(transports, loop)
        self._finish()

    def _finish(self) -> None:
        """End the shutdown generator, so that nothing is left for the loop to finalise
        (a generator the collector finds unfinished would be handed to its loop, closed
        or not)."""
        closer, self._closer = self._closer, None
        if closer is not None:
            step = closer.aclose()
            try:
                step.send(None)  # its ``finally`` sees ``closed`` and returns at once
            except (StopIteration, RuntimeError):  # done; or the loop is finalising it now
                pass
            else:  # cannot happen (nothing is awaited); never leave it half-run
                step.close()


def _drop_all(transports: list[AsyncTransport], loop: asyncio.AbstractEventLoop) -> None:
    for transport in transports:
        transport.drop(loop)


async def _close_at_shutdown(pools: LoopPools) -> AsyncGenerator[None, None]:
    """Waits at its ``yield`` until the loop shuts down (or :meth:`LoopPools._finish`)."""
    try:
        yield
    finally:
        if not pools.closed:
            pools._closer = None  # being finalised by the loop itself
            await pools.aclose()


def drop_closed_loops(
    loops: dict[asyncio.AbstractEventLoop, LoopPools], lock: threading.Lock
) -> None:
    """The finaliser of a provider collected without close(): the pools of loops that are
    closed release their sockets (an open loop finalises its generator, which closes them)."""
    with lock:
        stale = [p for loop, p in loops.items() if loop.is_closed()]
    for pools in stale:
        pools.drop()
