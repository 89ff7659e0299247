"""The model lifecycle as a table: every phase x every move, and adopting a remote phase."""

from __future__ import annotations

import pytest

from mesh_core._lifecycle import TRANSITIONS, Move, Phase, adopt, apply, phase_of
from mesh_core._state import ModelState

NOW, MONO = 1_000.0, 50.0


def in_phase(phase: Phase, strikes: int = 1) -> ModelState:
    st = ModelState(strikes=strikes)
    if phase is Phase.TRIAL:
        st.probation = True
    elif phase is Phase.STANDBY:
        apply(st, Move.DEACTIVATE, now=NOW, mono=MONO, reason="manual", recover_at=None)
        st.strikes = strikes
    st.failure_count, st.error_rate = 3, 0.5
    return st


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("move", list(Move))
def test_every_move_from_every_phase(phase, move):
    st = in_phase(phase)
    expected = TRANSITIONS.get((phase, move))
    moved = apply(st, move, now=NOW, mono=MONO, reason="error_threshold", recover_at=NOW + 60)
    if expected is None:
        assert moved is None and phase_of(st) is phase  # nothing changed
        return
    assert moved is not None and moved.before is phase and moved.after is expected
    assert phase_of(st) is expected
    if expected is Phase.STANDBY:
        assert st.status == "standby" and st.deactivation_reason == "error_threshold"
        assert st.recover_at == NOW + 60 and not st.probation
        assert moved.failed_trial is (phase is Phase.TRIAL)
        assert st.strikes == (2 if phase is Phase.TRIAL else 1)
    else:
        assert st.status == "active" and st.deactivation_reason is None
        assert st.recover_at is None and st.probation is (expected is Phase.TRIAL)
    if phase is Phase.STANDBY and expected is not Phase.STANDBY:
        assert st.failure_count == 0 and st.error_rate == 0.0  # starts clean
        assert moved.reason == "manual"  # the reason left behind, for the event
    if move in (Move.RECOVER, Move.PASS_TRIAL):
        assert st.strikes == 0  # forgiven


def test_adopting_another_process_phase():
    st = in_phase(Phase.ACTIVE)
    moved = adopt(st, {"status": "standby", "deactivation_reason": "manual", "recover_at": None})
    assert moved is not None and moved.after is Phase.STANDBY and moved.move is Move.DEACTIVATE
    again = adopt(st, {"status": "standby", "deactivation_reason": "manual"})
    assert again is None  # same phase: details refreshed only
    back = adopt(st, {"status": "active", "probation": True, "deactivation_reason": None})
    assert back is not None and back.after is Phase.TRIAL and back.move is Move.RECOVER_ON_TRIAL
    assert st.failure_count == 0
