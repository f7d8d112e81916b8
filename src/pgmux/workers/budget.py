"""One server budget shared by several processes: a slot is a lock on one byte of the budget
file, which the kernel drops when the process holding it dies, so a crash never leaks a slot.

Layout of the budget file (nothing is ever written to it; only byte ranges are locked):
region 0 holds one byte per member (a process taking part: its index on the board), every
other region belongs to one budget (a pool, a database or a user) and holds one byte per slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Protocol

REGION = 1 << 16          # bytes per budget: more slots than any pool size
MAX_MEMBERS = 256         # processes that may share one budget file at a time

# NOTE: open-file-description locks (Linux 3.15+) belong to the open file, not the process:
# two opens in one process do not share them, and closing another descriptor of the same
# file does not drop them (as it would with POSIX record locks). Elsewhere, POSIX locks do:
# each process opens the file once and never closes it while it holds slots.
_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux (x86_64, aarch64)


def region(kind: str, name: str) -> int:
    """Where the slots of one budget start: a hash of its kind and name, never region 0."""
    digest = hashlib.blake2b(f"{kind}\0{name}".encode(), digest_size=5).digest()
    return (int.from_bytes(digest, "big") + 1) * REGION


def region_of(offset: int) -> int:
    return offset - offset % REGION


class Locks(Protocol):
    """Try-locks on single bytes; the kernel (or a test) decides who holds what."""

    def try_lock(self, offset: int) -> bool: ...

    def unlock(self, offset: int) -> None: ...


class LockFile:
    """Exclusive one-byte locks on a file, held by this open file until unlocked or death."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _lock(self, kind: int, offset: int) -> bool:
        try:
            if _OFD_SETLK is not None:
                fcntl.fcntl(self.fd, _OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))
            else:
                op = fcntl.LOCK_UN if kind == fcntl.F_UNLCK else fcntl.LOCK_EX | fcntl.LOCK_NB
                fcntl.lockf(self.fd, op, 1, offset, os.SEEK_SET)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def try_lock(self, offset: int) -> bool:
        return self._lock(fcntl.F_WRLCK, offset)

    def unlock(self, offset: int) -> None:
        self._lock(fcntl.F_UNLCK, offset)

    def close(self) -> None:
        os.close(self.fd)


class Budget:
    """This process's share of the budgets: which bytes it holds, and which budgets it found
    spent (so a full pool costs one scan per refresh, not one per queued client).

    A slot is taken in every budget that applies (pool, database, user) or in none.
    NOTE: locks taken through one open file never conflict with each other, so the bytes
    this process holds are skipped from its own bookkeeping (`mine`), not by the kernel.
    """

    def __init__(self, locks: Locks) -> None:
        self.locks = locks
        self.mine: set[int] = set()
        self.spent: set[int] = set()      # regions found full since the last refresh()
        self.member: int | None = None    # this process's index on the board

    def join(self) -> int:
        """Take the lowest free member index (raises RuntimeError when all are taken)."""
        for index in range(MAX_MEMBERS):
            if self.locks.try_lock(index):
                self.member = index
                return index
        raise RuntimeError(f"budget file: more than {MAX_MEMBERS} processes share it")

    def take(self, wants: Sequence[tuple[int, int]]) -> tuple[int, ...] | None:
        """One slot in each (region, limit) of wants, or None (and nothing held) when one of
        them has no free slot."""
        for base, _ in wants:
            if base in self.spent:
                return None
        got: list[int] = []
        for base, limit in wants:
            offset = self._take_one(base, limit)
            if offset is None:
                self.spent.add(base)
                self.release(got)
                return None
            got.append(offset)
        return tuple(got)

    def _take_one(self, base: int, limit: int) -> int | None:
        for offset in range(base, base + min(limit, REGION)):
            if offset not in self.mine and self.locks.try_lock(offset):
                self.mine.add(offset)
                return offset
        return None

    def release(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            if offset in self.mine:
                self.mine.discard(offset)
                self.locks.unlock(offset)
                # NOTE: a slot given back here may be taken again at once, by us as by others
                self.spent.discard(region_of(offset))

    def refresh(self) -> None:
        """Forget which budgets were full: other processes may have given slots back."""
        self.spent.clear()

    def held(self, base: int) -> int:
        """How many slots of the budget at base this process holds."""
        return sum(1 for offset in self.mine if region_of(offset) == base)
