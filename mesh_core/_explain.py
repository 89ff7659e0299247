"""``mesh.explain(pool, messages)``: which model would serve a request right now, and why.

A failover router decides in the dark: a request goes to a model and the only
trace is which model answered. When traffic lands somewhere unexpected ("why is
everything on the backup?"), the questions are always the same: which members are
in standby, why, and until when; what ruled the others out for *this* request
(tools, a schema, images, the context window, a pinned model); and how the
strategy ranked what was left, on what inputs (priorities, prices, latencies,
rate-limit headroom). :func:`explain` answers them with a dry run of the routing
decision.

Nothing is called and nothing changes: due recoveries and an open maintenance
window are applied to a copy of the view (the next real request applies them for
real), and the strategy ranks the candidates on a copy of itself, so a round-robin
cursor, a session table or an exploration counter stay where they were. It is safe
on a live mesh, from any thread.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import ModelMeshError
from ._evaluators import DeactivationReason
from ._needs import needs_of
from ._state import ACTIVE, STANDBY, ModelSnapshot
from ._types import CompletionRequest
from .strategies import SelectionStrategy
from .strategies._cost import CostFirstOptions, blended_price
from .strategies._rate_limit import usage_ratio

if TYPE_CHECKING:
    from ._mesh import Mesh
    from ._pool import CapabilityPool, Model

__all__ = ["Explanation", "MemberReport", "explain"]

_PLACEHOLDER = [{"role": "user", "content": "Hello"}]
"""The request explained when none is given: one short text message, needing nothing."""

# What each shipped strategy weighs, shown as columns of the report (every input is
# in ``MemberReport.inputs`` and ``to_dict()`` whatever the strategy).
_COLUMNS: dict[str, tuple[str, ...]] = {
    "modelmesh.stick-until-failure.v1": ("priority",),
    "modelmesh.priority-selection.v1": ("priority",),
    "modelmesh.round-robin.v1": (),
    "modelmesh.cost-first.v1": ("price",),
    "modelmesh.latency-first.v1": ("latency",),
    "modelmesh.session-stickiness.v1": ("priority",),
    "modelmesh.rate-limit-aware.v1": ("priority", "headroom"),
    "modelmesh.load-balanced.v1": ("headroom",),
}


_PERIOD_KEYS = {
    "requests_this_period": "requests",
    "tokens_this_period": "tokens",
    "spend_this_period": "spent",
}
"""Usage against the pool's request, token and budget limits, in the current period."""


@dataclass(frozen=True, slots=True)
class MemberReport:
    """One member of the pool, as the routing decision sees it now."""

    model_id: str
    provider_id: str
    status: str
    """``active`` or ``standby``, as of now (a due recovery counts as done)."""
    reason: str | None
    """The standby reason (``error_threshold``, ``quota_exhausted``, ``maintenance_window``...)."""
    recovers_in: float | None
    """Seconds until a standby model may return; None when active or back only by hand."""
    on_trial: bool
    """Back from a cooldown: its next request is a trial that decides whether it stays."""
    ruled_out: str | None
    """Why this request cannot go to it now (None: it is a candidate)."""
    rank: int | None
    """1: the strategy's choice; 2: the next one tried if that one fails; and so on."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """What the strategies weigh: priority, price, latency, headroom, error rate, usage."""
    note: str | None = None
    """What the next request would change: a recovery that is due, a window that opened."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for ``Explanation.to_dict()`` and ``modelmesh explain --json``."""
        out = dataclasses.asdict(self)
        out["inputs"] = dict(self.inputs)
        return out


@dataclass(frozen=True)
class Explanation:
    """The answer of :func:`explain`: ``str()`` is a readable report, ``to_dict()`` JSON."""

    pool: str
    strategy: str
    request: Mapping[str, Any]
    """What the request needs: messages, estimated tokens (``prompt_tokens``, and with
    ``max_tokens`` the ``tokens_needed`` a context window must hold), features, a pin."""
    members: tuple[MemberReport, ...]
    chosen: str | None
    """The model that would serve the request now (None: it would fail, see ``error``)."""
    reason: str
    """The strategy's reason for its choice, or why nothing can be chosen."""
    order: tuple[str, ...]
    """The failover order: the chosen model, then the next one if it fails, and so on."""
    error: str | None = None
    """The error the request would raise now (``NoAvailableModelError: ...``)."""
    outside: Mapping[str, str] = field(default_factory=dict)
    """Models of the mesh that are not members of this pool, and why."""
    notes: tuple[str, ...] = ()
    """Pool-level facts that bear on the decision (a session's model, a wait for recovery)."""

    def member(self, model_id: str) -> MemberReport:
        """The report of one member (KeyError if it is not one)."""
        for m in self.members:
            if m.model_id == model_id:
                return m
        raise KeyError(model_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (``modelmesh explain --json``)."""
        return {
            "pool": self.pool,
            "strategy": self.strategy,
            "request": dict(self.request),
            "chosen": self.chosen,
            "reason": self.reason,
            "order": list(self.order),
            "error": self.error,
            "members": [m.to_dict() for m in self.members],
            "outside": dict(self.outside),
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        return _render(self)


def explain(
    mesh: Mesh,
    pool: str,
    messages: Any = None,
    *,
    request: CompletionRequest | None = None,
    **params: Any,
) -> Explanation:
    """Which model of ``pool`` would serve this request right now, and why (a dry run).

    Takes what :meth:`Mesh.complete` takes (``messages``, ``tools``, ``max_tokens``,
    ``response_format``, ``model``, ``session_id``...); without messages, a short text
    request is explained. Raises what ``complete`` raises for a bad pool or request
    (``UnknownPoolError``, ``InvalidRequestError``); what the request itself would
    raise (no capable model, every model in standby) is reported, not raised.
    """
    from ._mesh import _build_request

    target = mesh.pool(pool)
    if request is None:
        request = _build_request(pool, _PLACEHOLDER if messages is None else messages, dict(params))
    with mesh._lock:  # one consistent view; nothing below waits on I/O
        return _Explainer(mesh, target, request, given=messages is not None).run()


class _Explainer:
    def __init__(
        self, mesh: Mesh, pool: CapabilityPool, request: CompletionRequest, *, given: bool
    ) -> None:
        self.mesh = mesh
        self.pool = pool
        self.request = request
        self.given = given
        self.now = mesh.clock.time()
        self.mono = mesh.clock.monotonic()
        self.policy = pool.rotation_policy
        self.needs = needs_of(request)
        self.position = {m.id: i for i, m in enumerate(pool.models, 1)}

    def run(self) -> Explanation:
        pool = self.pool
        strategy = pool.strategy
        inside, until = self.policy.deactivation.in_maintenance(self.now)
        views = [self._view(m, inside, until) for m in pool.models]
        error = self._eligibility_error()
        candidates = [snap for snap, why, *_ in views if why is None]
        order, reason, raised = self._rank(strategy, candidates)
        notes = self._notes(strategy)
        if error is None and raised is not None:
            error = raised
        if error is None and not order:
            error, reason = self._exhausted(views)
        elif error is not None and not order:
            reason = "the request would fail"
        rank = {mid: i for i, mid in enumerate(order, 1)}
        members = tuple(
            MemberReport(
                model_id=m.id,
                provider_id=m.provider_id,
                status=status,
                reason=why_standby,
                recovers_in=left,
                on_trial=trial,
                ruled_out=why,
                rank=rank.get(m.id),
                inputs=self._inputs(m, snap, strategy),
                note=note,
            )
            for m, (snap, why, status, why_standby, left, trial, note) in zip(pool.models, views)
        )
        return Explanation(
            pool=pool.name,
            strategy=strategy.strategy_id or type(strategy).__name__,
            request=self._request_summary(),
            members=members,
            chosen=order[0] if order else None,
            reason=reason,
            order=tuple(order),
            error=error,
            outside=self._outside(),
            notes=notes,
        )

    # --- each member ---------------------------------------------------------------
    def _view(
        self, m: Model, inside: bool, until: float
    ) -> tuple[ModelSnapshot, str | None, str, str | None, float | None, bool, str | None]:
        """``(snapshot, ruled out, status, standby reason, recovers in, on trial, note)``
        as the next request would find them (due recoveries and windows applied)."""
        st = m.state
        snap = m.snapshot(self.now, self.mono)
        maintenance = DeactivationReason.MAINTENANCE_WINDOW.value
        note = None
        why: str | None
        if st.status == STANDBY:
            left = st.recovers_in(self.now, self.mono)
            reason = st.deactivation_reason
            held = inside and reason == maintenance
            if left is None or left > 0 or held:
                if held:
                    left = max(0.0, until - self.now)
                back = (
                    "only mesh.recover() brings it back"
                    if left is None
                    else f"back in {_duration(left)}"
                )
                return snap, f"in standby ({reason}): {back}", STANDBY, reason, left, False, None
            trial = self.policy.recovery.needs_trial(reason)
            note = f"{reason} is over: back with the next request" + (", on trial" if trial else "")
            snap = dataclasses.replace(
                snap,
                status=ACTIVE,
                deactivation_reason=None,
                cooldown_remaining=0.0,
                probation=trial,
                failure_count=0,
                error_rate=0.0,
                window_requests=0,
            )
            status, standby_reason, left = ACTIVE, None, None
        else:
            trial, status, standby_reason, left = st.probation, ACTIVE, None, None
            if inside:
                left = max(0.0, until - self.now)
                why = (
                    f"maintenance window open: standby with the next request, for {_duration(left)}"
                )
                return snap, why, STANDBY, maintenance, left, False, why
        why = self._unmet(m)
        if why is None and st.probation and m.in_flight:
            why = "on trial, and its one trial request is in flight"
        return snap, why, status, standby_reason, left, trial, note

    def _unmet(self, m: Model) -> str | None:
        pin = self.request.pinned_model
        if pin is not None and m.id != pin:
            return f"not the pinned model {pin!r}"
        return self.needs.unmet(m)

    def _inputs(self, m: Model, snap: ModelSnapshot, strategy: SelectionStrategy) -> dict[str, Any]:
        opts = strategy.context
        out: dict[str, Any] = {"pool_position": self.position[m.id]}
        if m.id in opts.model_priority:
            out["priority"] = f"model #{opts.model_priority.index(m.id) + 1}"
        elif m.provider_id in opts.provider_priority:
            out["priority"] = f"provider #{opts.provider_priority.index(m.provider_id) + 1}"
        if m.input_price is not None or m.output_price is not None:
            r = getattr(strategy.options, "output_ratio", CostFirstOptions().output_ratio)
            blended = blended_price(m.input_price, m.output_price, r)
            out["price_per_1k"] = {
                "input": m.input_price,
                "output": m.output_price,
                "blended": round(blended, 9),
            }
        if m.request_price:
            out["price_per_request"] = m.request_price
        if snap.latency_history:
            out["latency_ms"] = round((snap.latency_avg or 0.0) * 1000, 2)
            out["latency_samples"] = len(snap.latency_history)
        ratio = usage_ratio(snap)
        if ratio is not None:
            out["headroom"] = round(1.0 - ratio, 4)
        if snap.requests_remaining is not None:
            out["requests_remaining"] = snap.requests_remaining
            out["requests_limit"] = snap.requests_limit
        if snap.error_rate or snap.failure_count:
            out["error_rate"] = round(snap.error_rate, 4)
            out["consecutive_failures"] = snap.failure_count
        limits = self.policy.deactivation.policy
        if limits.request_limit is not None:
            out["requests_this_period"] = f"{snap.quota_used}/{limits.request_limit}"
        if limits.token_limit is not None:
            out["tokens_this_period"] = f"{snap.tokens_used}/{limits.token_limit}"
        if limits.budget_limit is not None:
            out["spend_this_period"] = (
                f"${_money(snap.cost_accumulated)}/${_money(limits.budget_limit)}"
            )
        if m.context_window is not None:
            out["context_window"] = m.context_window
        try:
            score = strategy.score(snap, self.request)
            if math.isfinite(score):
                out["score"] = round(score, 6)
        except Exception:  # a custom strategy's score may need what select() prepares
            pass
        return out

    # --- the decision ----------------------------------------------------------------
    def _eligibility_error(self) -> str | None:
        """What the router's capability check would raise for this request (as text)."""
        try:
            self.mesh._router.eligibility(self.pool, self.request)
        except ModelMeshError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _rank(
        self, strategy: SelectionStrategy, candidates: list[ModelSnapshot]
    ) -> tuple[list[str], str, str | None]:
        """The failover order as the strategy would walk it: its choice, then its choice
        among the rest once that one is excluded, and so on, on one copy of the strategy
        (as one request's failover would use the strategy)."""
        shadow = _copy_strategy(strategy, self.pool)
        order: list[str] = []
        reason = ""
        left = list(candidates)
        while left:
            try:
                picked = shadow.select(left, self.request)
            except ModelMeshError as exc:
                if not order:
                    return [], str(exc), f"{type(exc).__name__}: {exc}"
                break
            if not order:
                reason = picked.reason
            order.append(picked.model_id)
            left = [c for c in left if c.model_id != picked.model_id]
        return order, reason, None

    def _exhausted(self, views: Sequence[tuple[Any, ...]]) -> tuple[str, str]:
        """The NoAvailableModelError a request would meet, and whether it would wait."""
        standby = [
            (m.id, left)
            for m, (_snap, why, status, _r, left, _t, _n) in zip(self.pool.models, views)
            if status == STANDBY and self._unmet(m) is None
        ]
        if not self.pool.models:
            return f"NoAvailableModelError: pool {self.pool.name!r} has no models", "no models"
        if not standby:
            msg = f"no model of pool {self.pool.name!r} can take this request now"
            return f"NoAvailableModelError: {msg}", msg
        timed = [(left, mid) for mid, left in standby if left is not None]
        msg = f"every capable model of pool {self.pool.name!r} is in standby"
        if timed:
            left, first = min(timed)
            msg += f"; the earliest, {first}, recovers in {_duration(left)}"
            wait = self.mesh._router.settings[self.pool.name].wait_for_recovery
            if wait > 0 and left <= wait:
                return (
                    f"NoAvailableModelError unless it waits: {msg}",
                    f"{msg}; the pool waits up to {_duration(wait)} (wait_for_recovery), "
                    f"so the request would wait for {first}",
                )
        else:
            msg += "; none recovers by itself (mesh.recover() brings one back)"
        return f"NoAvailableModelError: {msg}", msg

    def _notes(self, strategy: SelectionStrategy) -> tuple[str, ...]:
        notes = []
        current = getattr(strategy, "current", None)
        if isinstance(current, str):
            notes.append(f"current model (stick-until-failure): {current}")
        sid = self.request.session_id
        assignment = getattr(strategy, "assignment", None)
        if sid and callable(assignment):
            bound = assignment(sid)
            notes.append(
                f"session {sid!r} is bound to {bound}" if bound else f"session {sid!r} is new"
            )
        wait = self.mesh._router.settings[self.pool.name].wait_for_recovery
        if wait > 0:
            notes.append(f"wait_for_recovery: {_duration(wait)}")
        return tuple(notes)

    # --- the request and the rest of the mesh -----------------------------------------
    def _request_summary(self) -> dict[str, Any]:
        req, needs = self.request, self.needs
        needed = [
            name
            for name, flag in (
                ("tool calling", needs.tools),
                ("structured output (JSON schema)", needs.schema),
                ("JSON mode", needs.json_mode),
                ("images (vision)", needs.vision),
            )
            if flag
        ]
        summary: dict[str, Any] = {
            "messages": len(req.messages) if self.given else 0,
            "prompt_tokens": needs.tokens - (req.max_tokens or 0),
            "tokens_needed": needs.tokens,
            "needs": needed,
        }
        if req.max_tokens is not None:
            summary["max_tokens"] = req.max_tokens
        if req.tools:
            summary["tools"] = [str((t.get("function") or {}).get("name", "?")) for t in req.tools]
        if req.pinned_model:
            summary["pinned_model"] = req.pinned_model
        if req.session_id:
            summary["session_id"] = req.session_id
        return summary

    def _outside(self) -> dict[str, str]:
        """Models of the mesh that this pool leaves out, and which rule leaves them out."""
        config = self.mesh.config
        pcfg = config.pools.get(self.pool.name)
        members = {m.id for m in self.pool.models}
        out: dict[str, str] = {}
        if pcfg is None:
            return out
        node = self.pool.hierarchy_node
        for mid, mcfg in config.models.items():
            if mid in members:
                continue
            provider = config.providers.get(mcfg.provider)
            model = self.mesh.models.get(mid)
            caps = model.capabilities if model is not None else ()
            if provider is not None and not provider.enabled:
                out[mid] = f"its provider {mcfg.provider!r} is disabled"
            elif not node:
                out[mid] = "not listed in the pool's models"
            elif mcfg.provider in pcfg.excluded_providers:
                out[mid] = f"its provider {mcfg.provider!r} is in excluded_providers"
            elif pcfg.allowed_providers is not None and mcfg.provider not in pcfg.allowed_providers:
                out[mid] = f"its provider {mcfg.provider!r} is not in allowed_providers"
            else:
                out[mid] = f"none of its capabilities ({', '.join(caps)}) is at or below {node}"
        return out


def _copy_strategy(strategy: SelectionStrategy, pool: CapabilityPool) -> SelectionStrategy:
    """A copy to decide on, so that the real strategy's state (a cursor, a session table,
    a counter) does not move. The clock is shared, not copied."""
    clock = strategy.clock
    try:
        return copy.deepcopy(strategy, {id(clock): clock})
    except Exception:  # a custom strategy holding something that cannot be copied
        shadow = type(strategy)(strategy.options, strategy.context)
        shadow.bind(pool.name, [m.id for m in pool.models])
        shadow.import_state(strategy.export_state())
        return shadow


def _money(usd: float) -> str:
    """Dollars to the cent, or to two significant digits below a cent."""
    return f"{usd:.2f}" if usd == 0 or abs(usd) >= 0.01 else f"{usd:.2g}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


# --- the report ---------------------------------------------------------------------------


def _render(e: Explanation) -> str:
    req = e.request
    what = [f"about {req['prompt_tokens']} prompt tokens"]
    if req.get("max_tokens") is not None:
        what.append(f"max_tokens {req['max_tokens']}")
    if req.get("needs"):
        what.append("needs " + ", ".join(req["needs"]))
    if req.get("pinned_model"):
        what.append(f"pinned to {req['pinned_model']}")
    if req.get("session_id"):
        what.append(f"session {req['session_id']!r}")
    lines = [f"pool {e.pool!r} ({e.strategy})", f"  request: {', '.join(what)}"]
    if e.chosen is not None:
        lines.append(f"  would be served by {e.chosen} ({e.reason})")
        if len(e.order) > 1:
            lines.append(f"  failover order: {' > '.join(e.order)}")
    else:
        lines.append(f"  no model would serve it: {e.error or e.reason}")
    for note in e.notes:
        lines.append(f"  {note}")
    columns = _COLUMNS.get(e.strategy, ("score",))
    if any(k in m.inputs for m in e.members for k in _PERIOD_KEYS):
        columns = (*columns, "this period")  # the pool has request, token or budget limits
    header = ["rank", "model", "status", *columns, "why not / note"]
    rows = [header]
    for m in e.members:
        cells = [
            str(m.rank) if m.rank else "-",
            m.model_id,
            m.status + (" (trial)" if m.on_trial and m.status == ACTIVE else ""),
        ]
        cells += [_cell(m.inputs, c) for c in columns]
        cells.append(m.ruled_out or m.note or "")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines.append("")
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    if e.outside:
        lines.append("")
        lines.append("  not in this pool:")
        lines += [f"    {mid}: {why}" for mid, why in e.outside.items()]
    lines.append("")
    lines.append("  (a dry run: no provider was called and no state changed)")
    return "\n".join(lines)


def _cell(inputs: Mapping[str, Any], column: str) -> str:
    if column == "priority":  # no priority list names it: pool order decides
        return str(inputs.get("priority") or f"pool #{inputs.get('pool_position', '?')}")
    if column == "price":
        price = inputs.get("price_per_1k")
        if not price:
            return "unpriced"
        return f"${price['blended']:g}/1k"
    if column == "latency":
        if "latency_ms" not in inputs:
            return "unmeasured"
        return f"{inputs['latency_ms']:.1f} ms ({inputs['latency_samples']})"
    if column == "headroom":
        if "headroom" not in inputs:
            return "no data"
        return f"{inputs['headroom'] * 100:.0f}%"
    if column == "score":
        return str(inputs.get("score", "-"))
    if column == "this period":
        used = [f"{inputs[k]} {unit}" for k, unit in _PERIOD_KEYS.items() if k in inputs]
        return ", ".join(used) or "-"
    return str(inputs.get(column, "-"))
