"""The shared server budget: the bookkeeping of one process (pure, on a table of locks), and
the real byte locks between processes, released when a holder dies."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from pgmux.workers.budget import REGION, Budget, LockFile, region, region_of


class TableLocks:
    """Locks as a table: who (a name) holds which byte; one name per Budget under test."""

    def __init__(self) -> None:
        self.owner: dict[int, str] = {}
        self.calls = 0

    def as_(self, who: str) -> _Holder:
        return _Holder(self, who)


class _Holder:
    def __init__(self, table: TableLocks, who: str) -> None:
        self.table, self.who = table, who

    def try_lock(self, offset: int) -> bool:
        self.table.calls += 1
        held = self.table.owner.get(offset)
        if held is not None and held != self.who:
            return False
        self.table.owner[offset] = self.who
        return True

    def unlock(self, offset: int) -> None:
        if self.table.owner.get(offset) == self.who:
            del self.table.owner[offset]


def test_two_processes_never_exceed_the_limit_together() -> None:
    table = TableLocks()
    a, b = Budget(table.as_("a")), Budget(table.as_("b"))
    pool = region("pool", "db\0user")
    taken_a = [a.take([(pool, 10)]) for _ in range(6)]
    taken_b = [b.take([(pool, 10)]) for _ in range(6)]
    assert all(t is not None for t in taken_a)
    assert sum(t is not None for t in taken_b) == 4
    assert len(table.owner) == 10
    # NOTE: a second slot of one process is a different byte, though the kernel would let
    # one open file lock the same byte twice.
    assert len({t for t in taken_a if t}) == 6


def test_a_slot_is_taken_in_every_budget_or_in_none() -> None:
    table = TableLocks()
    a, b = Budget(table.as_("a")), Budget(table.as_("b"))
    pool1, pool2 = region("pool", "db\0u1"), region("pool", "db\0u2")
    db = region("db", "db")
    assert b.take([(pool2, 5), (db, 3)]) is not None
    assert b.take([(pool2, 5), (db, 3)]) is not None
    assert a.take([(pool1, 5), (db, 3)]) is not None
    # the database budget (3) is spent: the pool slot taken on the way is given back
    assert a.take([(pool1, 5), (db, 3)]) is None
    assert a.held(pool1) == 1 and a.held(db) == 1
    assert sum(1 for off in table.owner if region_of(off) == pool1) == 1


def test_a_spent_budget_costs_one_scan_until_refresh_or_release() -> None:
    table = TableLocks()
    a, b = Budget(table.as_("a")), Budget(table.as_("b"))
    pool = region("pool", "p")
    slots = [b.take([(pool, 4)]) for _ in range(4)]
    assert a.take([(pool, 4)]) is None
    calls = table.calls
    for _ in range(100):
        assert a.take([(pool, 4)]) is None
    assert table.calls == calls  # NOTE: known spent: no lock is even tried
    first = slots[0]
    assert first is not None
    b.release(first)
    assert a.take([(pool, 4)]) is None  # not refreshed yet: another process's release
    a.refresh()
    assert a.take([(pool, 4)]) is not None


def test_release_is_idempotent_and_frees_for_ourselves_at_once() -> None:
    table = TableLocks()
    a = Budget(table.as_("a"))
    pool = region("pool", "p")
    one = a.take([(pool, 1)])
    assert one is not None
    assert a.take([(pool, 1)]) is None
    a.release(one)
    a.release(one)
    assert table.owner == {}
    assert a.take([(pool, 1)]) is not None


def test_members_take_the_lowest_free_index() -> None:
    table = TableLocks()
    assert [Budget(table.as_(n)).join() for n in "abc"] == [0, 1, 2]
    table.owner.pop(1)
    assert Budget(table.as_("d")).join() == 1


def test_regions_are_apart_and_never_the_members_region() -> None:
    names = [("pool", "db0\0u"), ("db", "db0"), ("user", "u")]
    bases = {region(*n) for n in names}
    assert len(bases) == len(names)
    assert all(b >= REGION and b % REGION == 0 for b in bases)


# ---- real locks between processes ---------------------------------------------------------

def _hold_in_child(path: Path, n: int, base: int) -> int:
    """A forked process that takes n slots and sleeps; its pid once it holds them."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            budget = Budget(LockFile(str(path)))
            for _ in range(n):
                assert budget.take([(base, 10)]) is not None
            os.write(w, b"1")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    return pid


def test_the_kernel_gives_a_dead_process_slots_back(tmp_path: Path) -> None:
    path = tmp_path / "budget"
    base = region("pool", "db\0user")
    pid = _hold_in_child(path, 7, base)
    try:
        mine = Budget(LockFile(str(path)))
        got = [mine.take([(base, 10)]) for _ in range(10)]
        assert sum(g is not None for g in got) == 3
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        mine.refresh()
        more = [mine.take([(base, 10)]) for _ in range(10)]
        assert sum(g is not None for g in more) == 7
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_two_opens_in_one_process_do_not_share_locks(tmp_path: Path) -> None:
    path = str(tmp_path / "budget")
    a, b = LockFile(path), LockFile(path)
    assert a.try_lock(REGION)
    assert not b.try_lock(REGION)
    a.unlock(REGION)
    assert b.try_lock(REGION)
    a.close()
    b.close()
