"""The facade: ``Mesh.from_config(...)``, then ``complete``, ``acomplete``, ``stream``, ``astream``.

The routing logic lives in :mod:`.routing` as a generator of effects; the two
drivers here perform those effects, blocking or awaiting, and nothing else.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._assembly import build_model, build_pools, capability_tree
from ._clock import Clock, SystemClock, as_clock
from ._config import MeshConfig, load_config
from ._drivers import adrive, drive
from ._effects import Answer, Effect, Outcome
from ._embedding import embedding_plan, embedding_request
from ._errors import (
    InvalidRequestError,
    MeshClosedError,
    StreamInterruptedError,
    UnknownModelError,
    UnknownPoolError,
)
from ._evaluators import DeactivationReason
from ._events import EventEmitter, EventHandler, EventType
from ._failover import Flight
from ._logs import attach_logging
from ._metrics import attach_metrics
from ._persistence import StateKeeper
from ._pool import CapabilityPool, Model
from ._router import PoolSettings, Router
from ._spaces import embedding_only, embedding_specs
from ._state import ModelSnapshot
from ._streaming import AsyncChunkStream, ChunkStream, StreamRecovery, StreamRelay
from ._tracing import Tracing
from ._types import CompletionChunk, CompletionRequest, CompletionResponse, EmbeddingResponse
from .providers import Provider, Timeouts, create_provider
from .stores import StateStore, open_store

if TYPE_CHECKING:
    from ._explain import Explanation

__all__ = ["InvalidRequestError", "Mesh"]

_REQUEST_FIELDS = (
    "temperature",
    "max_tokens",
    "tools",
    "tool_choice",
    "response_format",
    "stop",
    "top_p",
    "seed",
    "session_id",
)


class Mesh:
    """Pools of models behind one ``complete`` call, with automatic failover.

    Thread-safe and asyncio-safe: one mesh may serve many threads and tasks.
    """

    def __init__(
        self,
        config: MeshConfig,
        *,
        clock: Clock | None = None,
        providers: Mapping[str, Provider] | None = None,
        store: StateStore | None = None,
    ) -> None:
        """``providers`` and ``store`` replace what the configuration describes (for a
        provider or state store of your own, or a read-only view of a store)."""
        self.config = config
        self.clock = as_clock(clock) if clock is not None else SystemClock()
        self._lock = threading.RLock()
        self.events = EventEmitter(self.clock.time)
        tree = capability_tree(config)
        self.models: dict[str, Model] = {
            mid: build_model(mid, mcfg, tree) for mid, mcfg in config.models.items()
        }
        self.pools: dict[str, CapabilityPool] = build_pools(
            config, self.models, tree, self.events, self.clock, self._lock
        )
        self.providers: dict[str, Provider] = dict(providers or {})
        for pid, pcfg in config.providers.items():
            if pid not in self.providers:
                self.providers[pid] = create_provider(pid, pcfg)
        timeouts = {
            mid: Timeouts().merged(config.providers[m.provider].timeouts).merged(m.timeouts)
            for mid, m in config.models.items()
        }
        settings = {pid: PoolSettings.from_config(p) for pid, p in config.pools.items()}
        self._router = Router(
            models=self.models,
            providers=self.providers,
            timeouts=timeouts,
            settings=settings,
            emitter=self.events,
            clock=self.clock,
            lock=self._lock,
        )
        storage = config.storage
        self._keeper = StateKeeper(
            (lambda: store) if store is not None else (lambda: open_store(storage)),
            backend=store.name if store is not None else storage.backend,
            models=self.models,
            pools=self.pools,
            lock=self._lock,
            clock=self.clock,
            emitter=self.events,
            sync_policy=storage.sync_policy,
            sync_interval=storage.sync_interval,
            refresh_interval=storage.refresh_interval,
            on_corrupt=storage.on_corrupt,
            on_unavailable=storage.on_unavailable,
        )
        attach_logging(self.events, logging.getLogger(config.observability.logger))
        self._router.adaptive = {
            mid: _first_set(m.timeouts.adaptive, config.providers[m.provider].timeouts.adaptive)
            for mid, m in config.models.items()
        }
        self._router.tracing = Tracing(config.observability.tracing)
        self._router.embeddings = embedding_specs(config)
        self._router.embedding_only = embedding_only(config, tree)
        self._router.metrics = attach_metrics(self.events, config.observability.metrics)
        self._keeper.metrics = self._router.metrics
        self._keeper.restore()
        self._router.keeper = self._keeper
        self._closed = False

    @classmethod
    def from_config(
        cls,
        source: str | os.PathLike[str] | Mapping[str, Any] | MeshConfig,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> Mesh:
        """Build a mesh from a YAML path, a dict or a MeshConfig (validated first)."""
        return cls(load_config(source, env=env), clock=clock)

    def __repr__(self) -> str:
        return f"Mesh(pools={sorted(self.pools)}, models={len(self.models)})"

    # --- lookups --------------------------------------------------------------------
    def pool(self, name: str) -> CapabilityPool:
        """The pool called ``name`` (UnknownPoolError, with a suggestion, if none)."""
        try:
            return self.pools[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.pools, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownPoolError(
                f"unknown pool {name!r}{hint} (pools: {', '.join(sorted(self.pools)) or 'none'})",
                pool_name=name,
            ) from None

    def model(self, model_id: str) -> Model:
        try:
            return self.models[model_id]
        except KeyError:
            close = difflib.get_close_matches(model_id, self.models, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownModelError(
                f"unknown model {model_id!r}{hint}", details={"model": model_id}
            ) from None

    def snapshot(self, model_id: str) -> ModelSnapshot:
        """A point-in-time view of one model's state."""
        model = self.model(model_id)
        with self._lock:
            return model.snapshot(self.clock.time())

    def on(self, event_type: EventType | str | None, handler: EventHandler) -> EventHandler:
        """Subscribe to mesh events (None: all of them)."""
        return self.events.on(event_type, handler)

    def stats(self) -> dict[str, Any]:
        """Aggregate statistics per model, provider and pool (JSON-safe)."""
        with self._lock:
            now = self.clock.time()
            models: dict[str, dict[str, Any]] = {}
            for mid, m in self.models.items():
                st = m.state
                snap = m.snapshot(now)
                models[mid] = {
                    "provider": m.provider_id,
                    "status": st.status,
                    "reason": st.deactivation_reason,
                    "requests": st.total_requests,
                    "failures": st.total_failures,
                    "tokens": st.total_tokens,
                    "cost": st.total_cost,
                    "error_rate": st.error_rate,
                    "latency_avg": snap.latency_avg,
                    "in_flight": m.in_flight,
                }
            providers: dict[str, dict[str, Any]] = {}
            for row in models.values():
                agg = providers.setdefault(
                    row["provider"],
                    {
                        "models": 0,
                        "active": 0,
                        "requests": 0,
                        "failures": 0,
                        "tokens": 0,
                        "cost": 0.0,
                    },
                )
                agg["models"] += 1
                agg["active"] += row["status"] == "active"
                for key in ("requests", "failures", "tokens", "cost"):
                    agg[key] += row[key]
            pools = {}
            for pid, pool in self.pools.items():
                members = [models[m.id] for m in pool.models]
                state = pool.get_state()
                pools[pid] = {
                    "requests": state.total_requests,
                    "rotation_events": state.rotation_events,
                    "active": state.active_count,
                    "standby": state.standby_count,
                    "tokens": sum(r["tokens"] for r in members),
                    "cost": sum(r["cost"] for r in members),
                }
        return {
            "models": models,
            "providers": providers,
            "pools": pools,
            "store": self._keeper.report(),
        }

    def explain(
        self,
        pool: str,
        messages: Any = None,
        *,
        request: CompletionRequest | None = None,
        **params: Any,
    ) -> Explanation:
        """Which model would serve this request right now, and why: a dry run.

        Each member's status, standby reason and time to recovery, what rules it out for
        this request (features, context window, a pinned model, standby), the strategy's
        ranking with its inputs, and the model chosen; ``print()`` it for a report. Takes
        what :meth:`complete` takes (without messages: a short text request). No provider
        is called and no state changes, so it is safe on a live mesh (see
        :mod:`mesh_core._explain`).
        """
        from ._explain import explain

        return explain(self, pool, messages, request=request, **params)

    # --- manual rotation ------------------------------------------------------------
    def deactivate(self, model_id: str, reason: str | DeactivationReason = "manual") -> None:
        """Put a model in standby in every pool (``manual`` standby lasts until :meth:`recover`)."""
        model = self.model(model_id)
        if model.pools:
            model.pools[0].deactivate(model, reason)

    def recover(self, model_id: str) -> None:
        """Bring a standby model back at once, without a trial."""
        model = self.model(model_id)
        if model.pools:
            model.pools[0].recover(model)

    # --- requests -------------------------------------------------------------------
    def _flight(
        self,
        pool: str,
        messages: Any,
        request: CompletionRequest | None,
        params: dict[str, Any],
        *,
        stream: bool,
    ) -> Flight:
        if self._closed:
            raise MeshClosedError("the mesh is closed; build a new one")
        target = self.pool(pool)
        if request is None:
            request = _build_request(pool, messages, params)
        request.stream = stream
        return Flight(self._router, target, request, stream=stream)

    def complete(
        self,
        pool: str,
        messages: Any = None,
        *,
        request: CompletionRequest | None = None,
        **params: Any,
    ) -> CompletionResponse:
        """Send a chat completion to ``pool`` and return the first model's answer that works."""
        flight = self._flight(pool, messages, request, params, stream=False)
        return flight.response(drive(flight.plan()))

    async def acomplete(
        self,
        pool: str,
        messages: Any = None,
        *,
        request: CompletionRequest | None = None,
        **params: Any,
    ) -> CompletionResponse:
        """Async :meth:`complete`; never blocks the event loop."""
        flight = self._flight(pool, messages, request, params, stream=False)
        return flight.response(await adrive(flight.plan()))

    def stream(
        self,
        pool: str,
        messages: Any = None,
        *,
        request: CompletionRequest | None = None,
        restart: bool = False,
        **params: Any,
    ) -> ChunkStream:
        """Stream an answer. Failover is transparent until the first token; the last
        chunk carries ``finish_reason``, ``usage`` and ``attempts``. A break after the
        first token continues on the next model by prefill (``stream_recovery: continue``,
        the default; the first chunk after it carries ``continued_from``), or raises
        StreamInterruptedError (``stream_recovery: raise``). When the answer cannot be
        continued (the next model rejects prefill, the break is inside a tool call) it is
        started over only with ``restart=True`` (its first chunk then carries
        ``restarted``: discard what you received); by default that raises instead, so the
        chunks yielded always join into one coherent answer.

        The request is checked at once (a bad pool or parameter raises here); the model is
        chosen and called on the first ``next()``. ``close()``, or ``with mesh.stream(...)
        as chunks:``, releases the model of a stream abandoned half-way."""
        flight = self._flight(pool, messages, request, params, stream=True)
        return ChunkStream(self._relay(flight, restart))

    def _relay(self, flight: Flight, restart: bool) -> Generator[CompletionChunk, None, None]:
        # Opened on the first next(), not at call time: a stream that is never iterated
        # holds no model and no connection, whatever happens to it.
        opened: Answer | None = drive(flight.plan())
        recovery = StreamRecovery(flight, restart=restart)
        while opened is not None:
            try:
                for chunk in StreamRelay(recovery.flight, opened):
                    recovery.delivered(chunk)
                    yield chunk
                return
            except StreamInterruptedError as err:
                opened = drive(recovery.reopen(err))
        yield recovery.ended()

    def astream(
        self,
        pool: str,
        messages: Any = None,
        *,
        request: CompletionRequest | None = None,
        restart: bool = False,
        **params: Any,
    ) -> AsyncChunkStream:
        """Async :meth:`stream`: ``async for chunk in mesh.astream(...)``, or
        ``async with mesh.astream(...) as chunks:`` to release the model on exit."""
        flight = self._flight(pool, messages, request, params, stream=True)
        return AsyncChunkStream(self._arelay(flight, restart))

    async def _arelay(self, flight: Flight, restart: bool) -> AsyncGenerator[CompletionChunk, None]:
        opened: Answer | None = await adrive(flight.plan())
        recovery = StreamRecovery(flight, restart=restart)
        while opened is not None:
            # Closed here, not left to the event loop's finalizer: a consumer that leaves
            # early must find the model released when its ``async with`` block ends.
            relay = StreamRelay(recovery.flight, opened).__aiter__()
            try:
                async for chunk in relay:
                    recovery.delivered(chunk)
                    yield chunk
                return
            except StreamInterruptedError as err:
                opened = await adrive(recovery.reopen(err))
            finally:
                await relay.aclose()
        yield recovery.ended()

    # --- embeddings (see mesh_core._embedding) ---------------------------------------
    def embed(
        self,
        pool: str,
        texts: str | Sequence[str],
        *,
        space: str | None = None,
        timeout: float | None = None,
    ) -> EmbeddingResponse:
        """Embed ``texts`` (one vector per text, in order) with the first model of ``pool``
        that works, failing over only between members of one embedding space: ``space``,
        or else the space of the first model chosen (``response.space`` says which)."""
        return drive(self._embedding(pool, texts, space, timeout))

    async def aembed(
        self,
        pool: str,
        texts: str | Sequence[str],
        *,
        space: str | None = None,
        timeout: float | None = None,
    ) -> EmbeddingResponse:
        """Async :meth:`embed`; never blocks the event loop."""
        return await adrive(self._embedding(pool, texts, space, timeout))

    def _embedding(
        self, pool: str, texts: Any, space: str | None, timeout: float | None
    ) -> Generator[Effect, Outcome | None, EmbeddingResponse]:
        if self._closed:
            raise MeshClosedError("the mesh is closed; build a new one")
        request = embedding_request(pool, texts, space=space, timeout=timeout)
        return embedding_plan(self._router, self.pool(pool), request)

    # --- state and shutdown -------------------------------------------------------
    def save_state(self) -> None:
        """Save the state to the configured store now (``storage.sync_policy`` aside).

        Raises StateStoreError when the store cannot take it; the state stays in memory
        and is saved once the store is back.
        """
        self._keeper.flush()

    def _in_flight(self) -> int:
        with self._lock:
            return sum(m.in_flight for m in self.models.values())

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let those in flight finish (up to ``timeout`` seconds), then
        save the state and close the store and every connection pool.

        A request still running after ``timeout`` loses its connection and raises one of
        the documented errors. Later calls raise MeshClosedError.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._keeper.close(max(0.0, deadline - time.monotonic()))
        for provider in self.providers.values():
            provider.close()

    async def aclose(self, timeout: float = 30.0) -> None:
        """Like :meth:`close`, without blocking the event loop; closes this loop's pools too."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(self._keeper.close, max(0.0, deadline - time.monotonic()))
        for provider in self.providers.values():
            await provider.aclose()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --- the drivers ------------------------------------------------------------------------


def _first_set(*values: bool | None) -> bool:
    """The first value set, model before provider (adaptive deadlines are on by default)."""
    return next((v for v in values if v is not None), True)


# --- request building ---------------------------------------------------------------------


def _build_request(pool: str, messages: Any, params: dict[str, Any]) -> CompletionRequest:
    """Validate the caller's arguments into a CompletionRequest (errors say where)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be a dict with a string 'role'")
    if not params:
        return CompletionRequest(model=pool, messages=list(messages))
    tools = params.get("tools")
    if tools is not None:
        _check_tools(tools)
    stop = params.get("stop")
    if isinstance(stop, str):
        params["stop"] = [stop]
    known = {k: params.pop(k) for k in _REQUEST_FIELDS if k in params}
    _attempt_limits(params, known)
    pinned = params.pop("model", None)
    extra = params.pop("extra", None) or {}
    extra.update(params)  # anything else is passed through to the provider
    return CompletionRequest(
        model=pool, messages=list(messages), pinned_model=pinned, extra=extra, **known
    )


def _attempt_limits(params: dict[str, Any], known: dict[str, Any]) -> None:
    """Move ``timeout`` (or LangChain's ``request_timeout``) and ``max_retries`` from the
    parameters into the request: they are the mesh's to apply, and a provider that is
    strict about its arguments (OpenAI, Azure) answers 400 to a body that carries them."""
    timeout = params.pop("timeout", None)
    alias = params.pop("request_timeout", None)
    timeout = alias if timeout is None else timeout
    if timeout is not None:
        if isinstance(timeout, tuple):  # httpx/requests style (connect, read): the larger
            timeout = max((t for t in timeout if t is not None), default=None)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0
            or timeout == float("inf")
        ):
            raise InvalidRequestError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        known["timeout"] = float(timeout)
    retries = params.pop("max_retries", None)
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidRequestError(f"max_retries must be an integer >= 0, got {retries!r}")
        known["max_retries"] = retries


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise InvalidRequestError("tools must be a list of OpenAI tool dicts")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(fn, Mapping)
        ):
            raise InvalidRequestError(
                f"tools[{i}] must look like {{'type': 'function', 'function': {{'name': ..., "
                "'parameters': {...}}}}}"
            )
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequestError(f"tools[{i}].function.name must be a non-empty string")
        params = fn.get("parameters")
        if params is not None and (
            not isinstance(params, Mapping) or params.get("type") != "object"
        ):
            raise InvalidRequestError(
                f"tools[{i}].function.parameters must be a JSON schema object with type 'object'"
            )
