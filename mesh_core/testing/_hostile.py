"""The fault server's hostile replies: a decompression bomb built in a blink, and a writer
that trickles a reply one byte at a time (a server never silent long enough for a read
timeout). Kept apart from the protocol code: they are the same in every dialect."""

from __future__ import annotations

import functools
import struct
import zlib
from typing import Any, Protocol

__all__ = ["Trickle", "bomb"]


class _Stopping(Protocol):
    """What the trickling writer needs of the server: whether it stops, and a wait."""

    _stopping: Any

    def _wait(self, seconds: float) -> None: ...


@functools.lru_cache(maxsize=4)
def bomb(inflated: int) -> bytes:
    """A gzip body of ``inflated`` zero bytes, built in a blink: after a full flush, deflate
    compresses each identical MiB of zeros to identical bytes, so one block is repeated."""
    mib = 1 << 20
    blocks, rest = divmod(inflated, mib)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH) if blocks else b""
    block = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH) if blocks > 1 else b""
    # The trailer's CRC and length cover every block; compress them through ``c`` too.
    tail_c = c.copy()
    crc = zlib.crc32(bytes(mib)) if blocks else 0
    for _ in range(max(0, blocks - 1)):
        crc = zlib.crc32(bytes(mib), crc)
    tail = tail_c.compress(bytes(rest)) + tail_c.flush(zlib.Z_SYNC_FLUSH)
    crc = zlib.crc32(bytes(rest), crc)
    # End the deflate stream with an empty final block, then the gzip trailer.
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    final = end.flush()  # an empty final block, raw deflate
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, inflated & 0xFFFFFFFF)
    return head + block * max(0, blocks - 1) + tail + final + trailer


class Trickle:
    """A write file that sends one byte every ``interval`` seconds (until the server stops)."""

    def __init__(self, raw: Any, interval: float, owner: _Stopping) -> None:
        self._raw, self._interval, self._owner = raw, interval, owner

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def write(self, data: bytes) -> int:
        for i in range(len(data)):
            if self._owner._stopping.is_set():
                raise OSError("the fault server is stopping")
            self._raw.write(data[i : i + 1])
            self._owner._wait(self._interval)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()
