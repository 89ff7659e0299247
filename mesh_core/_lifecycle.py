"""A model's lifecycle as one explicit state machine (h11-style: phases, moves, a table).

A model is in one of three phases:

* ``ACTIVE``: in rotation;
* ``TRIAL``: back in rotation after a cooldown, not yet proven: its next request is a
  trial, and a failure sends it straight back with a longer cooldown;
* ``STANDBY``: out of rotation, with a reason and (usually) a recovery time.

and moves between them only as :data:`TRANSITIONS` says. :func:`apply` is the one
function that writes the fields that store the phase (``status``, ``probation``,
``strikes``, ``deactivation_reason``, the recovery time); it returns a
:class:`Transition` record from which the caller derives events, logs, metrics and
persistence. :func:`adopt` applies a phase another process published. The stored form
stays ``status: "active" | "standby"`` plus ``probation``, as persisted and shared
states always had it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._state import ACTIVE, STANDBY, ModelState

__all__ = ["TRANSITIONS", "Move", "Phase", "Transition", "adopt", "apply", "phase_of"]


class Phase(enum.StrEnum):
    ACTIVE = "active"
    TRIAL = "trial"
    STANDBY = "standby"


class Move(enum.StrEnum):
    DEACTIVATE = "deactivate"
    """Out of rotation, for a reason (from a trial: one more strike)."""
    RECOVER = "recover"
    """Back in full rotation (by hand, or at a calendar boundary)."""
    RECOVER_ON_TRIAL = "recover_on_trial"
    """Back after a cooldown, for one trial request."""
    PASS_TRIAL = "pass_trial"
    """The trial request succeeded: strikes are forgiven."""


TRANSITIONS: Mapping[tuple[Phase, Move], Phase] = {
    (Phase.ACTIVE, Move.DEACTIVATE): Phase.STANDBY,
    (Phase.TRIAL, Move.DEACTIVATE): Phase.STANDBY,
    (Phase.STANDBY, Move.DEACTIVATE): Phase.STANDBY,  # a new reason (e.g. by hand)
    (Phase.STANDBY, Move.RECOVER): Phase.ACTIVE,
    (Phase.STANDBY, Move.RECOVER_ON_TRIAL): Phase.TRIAL,
    (Phase.TRIAL, Move.PASS_TRIAL): Phase.ACTIVE,
}
"""Every legal move. Any other (recovering an active model, passing a trial that is not
one) changes nothing and :func:`apply` returns None."""


@dataclass(frozen=True, slots=True)
class Transition:
    """What one move did, for events, logs, metrics and persistence."""

    before: Phase
    after: Phase
    move: Move
    reason: str | None = None
    """The standby reason (DEACTIVATE), or the reason left behind (RECOVER*)."""
    recover_at: float | None = None
    strikes: int = 0

    @property
    def failed_trial(self) -> bool:
        return self.before is Phase.TRIAL and self.move is Move.DEACTIVATE


def phase_of(state: ModelState) -> Phase:
    if state.status == STANDBY:
        return Phase.STANDBY
    return Phase.TRIAL if state.probation else Phase.ACTIVE


def strikes_after(state: ModelState, move: Move) -> int:
    """The failed-trial count once ``move`` is made (a cooldown grows with it)."""
    phase = phase_of(state)
    if move is Move.DEACTIVATE and phase is Phase.TRIAL:
        return state.strikes + 1
    if move in (Move.PASS_TRIAL, Move.RECOVER):
        return 0
    return state.strikes


def apply(
    state: ModelState,
    move: Move,
    *,
    now: float,
    mono: float,
    reason: str | None = None,
    recover_at: float | None = None,
) -> Transition | None:
    """Make ``move`` (``now``/``mono``: wall and monotonic time of the same moment).

    DEACTIVATE takes the ``reason`` and ``recover_at``; recovering clears them and the
    error window, so a returning model starts clean. Returns None for a move the table
    does not allow from the current phase (nothing is changed).
    """
    before = phase_of(state)
    after = TRANSITIONS.get((before, move))
    if after is None:
        return None
    strikes = strikes_after(state, move)
    left_behind = state.deactivation_reason
    state.strikes = strikes
    state.probation = after is Phase.TRIAL
    if after is Phase.STANDBY:
        state.status = STANDBY
        state.deactivation_reason = reason
        state.set_recover_at(recover_at, now, mono)
        state.standby_since = now
        state.retry_after = None
    elif before is Phase.STANDBY:
        state.status = ACTIVE
        state.deactivation_reason = None
        state.set_recover_at(None, now, mono)
        state.standby_since = None
        state.cooldown_remaining = 0.0
        _clean_window(state)
        reason, recover_at = left_behind, None
    state.touch()
    return Transition(before, after, move, reason, recover_at, strikes)


def adopt(state: ModelState, published: Mapping[str, Any]) -> Transition | None:
    """Take on the phase another process published (its status fields). Returns the
    transition when the phase changed (None: same phase, details refreshed)."""
    before = phase_of(state)
    for key in ("status", "deactivation_reason", "recover_at", "standby_since"):
        if key in published:
            setattr(state, key, published[key])
    state.probation = bool(published.get("probation", state.probation))
    state.strikes = int(published.get("strikes", state.strikes) or 0)
    after = phase_of(state)
    if before is Phase.STANDBY and after is not Phase.STANDBY:
        _clean_window(state)
        state.cooldown_remaining = 0.0  # as apply() does: no snapshot is needed to clear it
    state.touch()
    if before is after:
        return None
    move = (
        Move.DEACTIVATE
        if after is Phase.STANDBY
        else Move.RECOVER_ON_TRIAL
        if after is Phase.TRIAL and before is Phase.STANDBY
        else Move.PASS_TRIAL
        if before is Phase.TRIAL
        else Move.RECOVER
    )
    return Transition(
        before, after, move, state.deactivation_reason, state.recover_at, state.strikes
    )


def _clean_window(state: ModelState) -> None:
    state.failure_count = 0
    state.outcomes.clear()
    state.error_rate = 0.0
