"""Session stickiness: every request of a session goes to the same model."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .._config import Duration
from .._errors import SessionModelUnavailableError
from .._state import ModelSnapshot
from .._types import CompletionRequest
from ._base import SelectionResult, SelectionStrategy, StrategyContext, StrategyOptions

__all__ = ["SessionStickinessOptions", "SessionStickinessStrategy", "session_id_of"]


def session_id_of(request: CompletionRequest) -> str | None:
    """The request's session: ``session_id``, else ``extra["session_id"]`` or ``extra["user"]``."""
    if request.session_id:
        return request.session_id
    sid = request.extra.get("session_id") or request.extra.get("user")
    return str(sid) if sid else None


class SessionStickinessOptions(StrategyOptions):
    """Options of session-stickiness (both are also pool keys)."""

    affinity_mode: Literal["fallback", "strict"] = "fallback"
    """When a session's model is unavailable: reassign the session, or raise."""
    session_timeout: Duration = 1800.0
    """Assignments unused for this long expire (``30m``, ``1h`` or seconds)."""


class SessionStickinessStrategy(SelectionStrategy):
    """Route all requests of a session to the same model, for consistency.

    A new session is assigned by the priority lists, else pool order. While the
    session's model is available it keeps the session. When it is not:
    ``affinity_mode: fallback`` (default) reassigns the session and remembers the
    new model; ``affinity_mode: strict`` raises SessionModelUnavailableError.
    Assignments unused for ``session_timeout`` expire. Requests without a session
    follow the priority lists.
    """

    strategy_id = "modelmesh.session-stickiness.v1"

    Options = SessionStickinessOptions
    options: SessionStickinessOptions

    def __init__(
        self, options: StrategyOptions | None = None, context: StrategyContext | None = None
    ) -> None:
        super().__init__(options, context)
        self.sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        sid = session_id_of(request)
        if sid is None:
            return self._result(self._by_priority(candidates), 0.0, "no session")
        now = self.clock.time()
        self._expire(now)
        mapped = self.sessions.get(sid)
        if mapped is not None:
            for cand in candidates:
                if cand.model_id == mapped[0]:
                    self._remember(sid, cand.model_id, now)
                    return self._result(cand, 1.0, "session's model")
            if self.options.affinity_mode == "strict":
                raise SessionModelUnavailableError(
                    f"session {sid!r} is bound to {mapped[0]!r}, which is not available "
                    "(affinity_mode: strict)",
                    pool_name=self.pool_name,
                )
            reason = f"session reassigned from {mapped[0]}"
        else:
            reason = "new session"
        chosen = self._by_priority(candidates)
        self._remember(sid, chosen.model_id, now)
        return self._result(chosen, 1.0, reason)

    def _remember(self, sid: str, model_id: str, now: float) -> None:
        self.sessions[sid] = (model_id, now)
        self.sessions.move_to_end(sid)

    def _expire(self, now: float) -> None:
        cutoff = now - self.options.session_timeout
        sessions = self.sessions
        while sessions:
            sid, (_, last) = next(iter(sessions.items()))
            if last > cutoff:
                break
            del sessions[sid]

    def assignment(self, session_id: str) -> str | None:
        """The model a session is bound to, if any."""
        mapped = self.sessions.get(session_id)
        return mapped[0] if mapped else None

    def export_state(self) -> dict[str, Any]:
        return {"sessions": {sid: [m, t] for sid, (m, t) in self.sessions.items()}}

    def import_state(self, data: Mapping[str, Any]) -> None:
        items = sorted(data.get("sessions", {}).items(), key=lambda kv: kv[1][1])
        self.sessions = OrderedDict((sid, (m, float(t))) for sid, (m, t) in items)
