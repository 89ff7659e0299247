"""The default store: state lives in the process and dies with it."""

from __future__ import annotations

from ._base import PersistedState, StateStore

__all__ = ["MemoryStore"]


class MemoryStore(StateStore):
    name = "memory"
    durable = False

    def __init__(self) -> None:
        self._state: PersistedState | None = None

    def load(self) -> PersistedState | None:
        return self._state

    def save(self, state: PersistedState) -> None:
        self._state = state
