"""How the fault server speaks one wire protocol: the interface, and the answer it renders.

The server decides *what* happens to a request (its behaviour: answer, fail, stall, cut...)
once, for every protocol; a :class:`ServerDialect` only says how that looks on the wire:
the request it accepts (and refuses as the real service would), the credential it checks,
the error bodies, the rate-limit headers, a complete reply, and a streamed one as events.
So each fault of the catalogue exists in every dialect, in that provider's own shapes.

Requests are translated to the OpenAI shape (:meth:`ServerDialect.to_openai`) for the
scripted responder, which therefore answers every protocol alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Answer", "Refusal", "ServerDialect", "StreamScript", "openai_error"]


@dataclass
class Answer:
    """A decided answer, in the terms every dialect renders."""

    model: str
    text: str
    calls: list[dict[str, Any]]
    """``{"id", "name", "arguments" (JSON text), "index"}`` each."""
    finish: str
    """OpenAI's finish reason: ``stop``, ``length``, ``tool_calls`` or ``content_filter``."""
    prompt_tokens: int
    completion_tokens: int


@dataclass
class StreamScript:
    """A streamed answer as event bytes: ``opening`` before the first token (the first
    token's delay comes after it), one item of ``pieces`` per token (what cuts, stalls and
    malformed events count), ``closing`` (finish and usage), then ``done`` (the end marker,
    left out by ``omit_done``)."""

    opening: list[bytes]
    pieces: list[bytes]
    closing: list[bytes]
    done: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Refusal:
    """A request the server refuses as the real service would: ``status`` and body."""

    status: int
    body: dict[str, Any]


def openai_error(message: str, kind: str = "invalid_request_error", **more: Any) -> dict[str, Any]:
    """An error in OpenAI's body shape (the fault catalogue's lingua franca)."""
    return {"error": {"message": message, "type": kind, **more}}


class ServerDialect(Protocol):
    name: str

    def check(
        self, body: Any, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Refusal | None:
        """A refusal for a request the real service would not accept, else None."""
        ...

    def to_openai(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request in OpenAI's shape, for the responder (and the answer's length)."""
        ...

    def credential(self, headers: Mapping[str, str]) -> str | None:
        """The key the client presented (None: none)."""
        ...

    def error_body(
        self, status: int, error: dict[str, Any], retry_after: float | None = None
    ) -> dict[str, Any]:
        """An error given in OpenAI's shape, in this dialect's (``retry_after``: the delay
        the reply's ``retry-after`` header says, for a dialect that puts it in the body)."""
        ...

    def error_status(self, status: int, error: dict[str, Any]) -> int:
        """The status this dialect sends that error with (Gemini: 400 for a bad key)."""
        ...

    def rate_limit_headers(self, limit: int, remaining: int, window: float) -> dict[str, str]: ...

    def reply(self, answer: Answer) -> dict[str, Any]: ...

    def stream(self, answer: Answer, body: dict[str, Any]) -> StreamScript: ...

    def error_event(self, status: int, error: dict[str, Any]) -> bytes:
        """An error reported inside a 200 stream."""
        ...

    def malformed_event(self) -> bytes: ...
