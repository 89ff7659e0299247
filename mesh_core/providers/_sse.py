"""Server-sent events, decoded incrementally and bounded, sans I/O.

Every streaming dialect so far (OpenAI and Azure, Anthropic, Gemini with ``alt=sse``)
frames its events as SSE, so the framing is decoded once, here, and each dialect only
interprets the ``data`` payloads (Anthropic repeats the ``event:`` name inside them as
``type``, so the payload alone is enough).
"""

from __future__ import annotations

from collections.abc import Iterator

from .._errors import MalformedResponseError
from ._reply import malformed

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Incremental server-sent-events decoder: feed bytes, get ``data`` payloads.

    Comments and non-data fields are skipped; the payloads of one event's data lines are
    joined with newlines, as the SSE specification says. Linear in its input: each fed
    chunk is searched once, and a line split over many chunks is kept as a list of pieces
    joined once at its end (``buffer += chunk`` and a search from the start would copy
    and rescan the line for every chunk: quadratic, minutes for a few MiB in small reads).
    A line, or an event, longer than ``max_line_bytes`` is a MalformedResponseError.
    """

    __slots__ = ("_data", "_event_bytes", "_max", "_parts", "_pending")

    def __init__(self, max_line_bytes: int = 4 << 20) -> None:
        self._parts: list[bytes] = []
        """The current line so far (received without its newline yet)."""
        self._pending = 0
        self._data: list[bytes] = []
        """The data lines of the current event."""
        self._event_bytes = 0
        self._max = max_line_bytes

    def _too_long(self, what: str) -> MalformedResponseError:
        return malformed(f"stream {what} longer than max_sse_line_bytes ({self._max} bytes)")

    def feed(self, chunk: bytes) -> Iterator[str]:
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            if self._parts:
                self._parts.append(chunk[start:nl])
                line = b"".join(self._parts)
                self._parts, self._pending = [], 0
            else:
                line = chunk[start:nl]
            start = nl + 1
            if len(line) > self._max:
                raise self._too_long("line")
            data = self._line(line)
            if data is not None:
                yield data
        if start < len(chunk):
            self._pending += len(chunk) - start
            if self._pending > self._max:
                raise self._too_long("line")
            self._parts.append(chunk[start:] if start else chunk)

    def _line(self, line: bytes) -> str | None:
        """Take one line; the event's data when the line ends it."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return self._event()
        if line.startswith(b":"):
            return None
        field, _, value = line.partition(b":")
        if field == b"data":
            if value.startswith(b" "):
                value = value[1:]
            self._event_bytes += len(value) + 1
            if self._event_bytes > self._max:
                raise self._too_long("event")
            self._data.append(value)
        return None

    def _event(self) -> str | None:
        if not self._data:
            return None
        data = b"\n".join(self._data).decode("utf-8", "replace")
        self._data, self._event_bytes = [], 0
        return data

    def close(self) -> Iterator[str]:
        """Flush an event left unterminated at the end of the stream."""
        if self._parts and b"".join(self._parts).strip():
            yield from self.feed(b"\n\n")
        elif (data := self._event()) is not None:
            yield data
