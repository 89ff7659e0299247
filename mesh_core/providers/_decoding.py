"""Response bodies, decoded from their content-encoding and bounded, sans I/O.

httpx inflates a gzip body with one unbounded ``decompress`` call per network read, so a
1.2 MB bomb becomes 1.2 GB in memory before anything can count it. Here the raw bytes go
through a ``decompressobj`` asked for at most the room left under the cap plus one byte:
no more than the cap is ever produced, and a body stops being read the moment it passes
it. The same decoder serves streams, whose raw bytes httpx would hand over still
compressed (``iter_raw``), so a gzip-encoded event stream is decoded too.
"""

from __future__ import annotations

import zlib
from typing import Any

from .._errors import MalformedResponseError

__all__ = ["BodyDecoder", "BodyReader"]

_GZIP = ("gzip", "x-gzip")
_SUPPORTED = (*_GZIP, "deflate")


def _too_large(what: str, limit: int) -> MalformedResponseError:
    return MalformedResponseError(
        f"malformed provider reply: larger than {what} ({limit} bytes, decompressed)"
    )


def _zlib_header(data: bytes) -> bool:
    """Whether ``data`` starts with a zlib header (RFC 1950: deflate, and a check value)."""
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _corrupt() -> MalformedResponseError:
    return MalformedResponseError("malformed provider reply: corrupt compressed body")


class BodyDecoder:
    """Feed raw body bytes, get decoded bytes, at most ``limit`` of them in all.

    Past the limit, :meth:`feed` raises MalformedResponseError naming ``what`` (the
    setting to raise), or with ``truncate`` returns what fits and sets :attr:`full` (an
    error reply: its first bytes are enough to classify it, and the rest is never read).
    An encoding other than gzip or deflate (the only ones asked for), or a corrupt
    compressed body, is a MalformedResponseError as well.
    """

    __slots__ = ("_head", "_inflate", "_limit", "_size", "_what", "full", "truncate")

    def __init__(
        self,
        encoding: str | None,
        limit: int,
        what: str = "max_response_bytes",
        *,
        truncate: bool = False,
    ) -> None:
        codings = [c.strip().lower() for c in (encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in _SUPPORTED):
            raise MalformedResponseError(
                f"malformed provider reply: unsupported content-encoding {encoding!r}"
            )
        self._inflate: Any = None
        self._head: bytes | None = None
        if codings:
            # gzip: a gzip header; deflate: a zlib header, or (some servers) none at all.
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | (16 if codings[0] in _GZIP else 0))
            self._head = b"" if codings[0] == "deflate" else None
        self._limit = limit
        self._what = what
        self._size = 0
        self.truncate = truncate
        self.full = False

    def feed(self, raw: bytes) -> bytes:
        inflate = self._inflate
        if inflate is None:
            return self._count(raw)
        if self._head is not None:  # deflate: which kind is known from its first two bytes
            raw = self._head + raw
            if len(raw) < 2:
                self._head = raw
                return b""
            self._head = None
            if not _zlib_header(raw):  # "deflate" sent raw, without its zlib header
                inflate = self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        try:  # past the cap by one byte: stop there
            data = inflate.decompress(raw, self._limit - self._size + 1)
        except zlib.error:
            raise _corrupt() from None
        return self._count(data)

    def flush(self) -> bytes:
        """What the inflater still holds at the end of the body (bounded like the rest)."""
        if self._inflate is None or self.full:
            return b""
        if self._head:  # a body of one byte cannot be deflate data
            raise _corrupt()
        try:
            return self._count(self._inflate.flush())
        except zlib.error:
            raise _corrupt() from None

    def _count(self, data: bytes) -> bytes:
        room = self._limit - self._size
        if len(data) > room:
            if not self.truncate:
                raise _too_large(self._what, self._limit)
            self.full, data = True, data[:room]
        self._size += len(data)
        return data


class BodyReader:
    """A whole body being read, sans I/O: what the sync and async read loops share. An
    error body that does not decode is classified as it is; an answer that does not is
    malformed."""

    def __init__(self, decoder: BodyDecoder) -> None:
        self._decoder = decoder
        self._parts: list[bytes] = []
        self._failed = False

    def feed(self, raw: bytes) -> bool:
        """Take some raw bytes; True when enough was read (a truncated error body)."""
        if self._failed:
            return True
        try:
            self._parts.append(self._decoder.feed(raw))
        except MalformedResponseError:
            if not self._decoder.truncate:
                raise
            self._failed = True
            return True
        return self._decoder.full

    def result(self) -> bytes:
        if not self._failed and not self._decoder.full:
            try:
                self._parts.append(self._decoder.flush())
            except MalformedResponseError:
                if not self._decoder.truncate:
                    raise
        return b"".join(self._parts)
