"""The waiters board: a small shared memory file where every process sharing a budget posts,
every 20 ms, how many of its clients wait for a server of each pool, so that a process
holding idle servers of that pool lets one go (no hoarding).

One fixed-size record per member (its index from the budget file): a heartbeat, a count, and
(pool hash, demand) pairs. Each process writes only its own record; readers skip records whose
heartbeat is old (a member that died or left). Values are advice, read without locks: a torn
read costs at most one tick's worth of wrong advice.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import time

from pgmux.workers.budget import MAX_MEMBERS

RECORD = 1024
_HEAD = struct.Struct("dI4x")      # heartbeat (monotonic seconds), number of entries
_ENTRY = struct.Struct("QI4x")     # pool hash, clients waiting without a server on the way
MAX_ENTRIES = (RECORD - _HEAD.size) // _ENTRY.size
STALE = 1.0  # seconds without a heartbeat after which a record is ignored


def pool_hash(name: str, user: str) -> int:
    """The board's name for a pool (database as clients see it, server user)."""
    digest = hashlib.blake2b(f"{name}\0{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class Board:
    """The mapped board file."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < RECORD * MAX_MEMBERS:
                os.ftruncate(fd, RECORD * MAX_MEMBERS)
            self.map = mmap.mmap(fd, RECORD * MAX_MEMBERS)
        finally:
            os.close(fd)

    def publish(self, member: int, demand: dict[int, int], now: float | None = None) -> None:
        """Replace member's record: its heartbeat and what its clients wait for."""
        stamp = time.monotonic() if now is None else now
        base = member * RECORD
        items = [(h, n) for h, n in demand.items() if n > 0][:MAX_ENTRIES]
        pos = base + _HEAD.size
        for h, n in items:
            _ENTRY.pack_into(self.map, pos, h, n)
            pos += _ENTRY.size
        _HEAD.pack_into(self.map, base, stamp, len(items))

    def leave(self, member: int) -> None:
        _HEAD.pack_into(self.map, member * RECORD, 0.0, 0)

    def demand(self, exclude: int | None, now: float | None = None) -> dict[int, int]:
        """Clients waiting in the other members, by pool hash."""
        stamp = time.monotonic() if now is None else now
        out: dict[int, int] = {}
        for member in range(MAX_MEMBERS):
            if member == exclude:
                continue
            base = member * RECORD
            beat, count = _HEAD.unpack_from(self.map, base)
            if not count or stamp - beat > STALE:
                continue
            pos = base + _HEAD.size
            for _ in range(min(count, MAX_ENTRIES)):
                h, n = _ENTRY.unpack_from(self.map, pos)
                out[h] = out.get(h, 0) + n
                pos += _ENTRY.size
        return out

    def close(self) -> None:
        self.map.close()
