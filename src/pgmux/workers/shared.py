"""What one pooler process shares with the others of its budget file: server slots (taken
before a server is launched, given back when it is gone), the waiters board, and a timer of
its own that keeps both honest (retry launches, let idle servers go when others wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from pgmux.workers.board import Board, pool_hash
from pgmux.workers.budget import Budget, LockFile, region

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
monotonic = time.monotonic

R_WANTED = "wanted by another worker"
TICK = 0.02        # seconds between looks at the board (a scan costs about 75 µs)
IDLE_SPARE = 0.04  # seconds idle after which a server is spare when others wait


class Shared:
    """The budget and board of one pooler process."""

    def __init__(self, pooler: Pooler, budget_path: str) -> None:
        self.pooler = pooler
        self.lock_file = LockFile(budget_path)
        self.budget = Budget(self.lock_file)
        self.member = self.budget.join()
        self.board = Board(budget_path + ".board")
        self.held: dict[Any, tuple[int, ...]] = {}   # server -> the bytes its slot holds
        self._hashes: dict[tuple[str, str], int] = {}
        self._regions: dict[tuple[str, str], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Look at the board every TICK, on a timer of its own: a client waiting here for a
        server another process holds idle is served within two ticks and a login."""
        self._timer = asyncio.get_running_loop().call_later(TICK, self._run)

    def _run(self) -> None:
        try:
            self.tick()
        except Exception:  # noqa: BLE001 - the budget's upkeep must keep running
            log.exception("shared budget tick failed")
        self._timer = asyncio.get_running_loop().call_later(TICK, self._run)

    # ---- slots ----------------------------------------------------------------------------
    def _region(self, kind: str, name: str) -> int:
        key = (kind, name)
        base = self._regions.get(key)
        if base is None:
            base = self._regions[key] = region(kind, name)
        return base

    def wants(self, pool: Pool) -> list[tuple[int, int]]:
        """The budgets a server of pool counts against, as (region, limit)."""
        p = self.pooler
        s = p.settings
        lim = pool.core.limits
        out: list[tuple[int, int]] = []
        if lim.pool_size:
            out.append((self._region("pool", f"{pool.name}\0{pool.server_user}"),
                        lim.pool_size + lim.reserve_pool_size))
        db_limit = s.max_db_connections
        db = p.config.databases.get(pool.name)
        if db is None and (s.max_db_connections or "*" in p.config.databases):
            db = p.config.database(pool.name)
        if db is not None and db.max_db_connections:
            db_limit = db.max_db_connections
        if db_limit:
            out.append((self._region("db", pool.name), db_limit))
        user = p.config.users.get(pool.server_user)
        user_limit = (user.max_user_connections if user and user.max_user_connections
                      else 0) or s.max_user_connections
        if user_limit:
            out.append((self._region("user", pool.server_user), user_limit))
        return out

    def take(self, pool: Pool) -> tuple[int, ...] | None:
        """A slot for a new server of pool, or None when the shared budget is spent."""
        return self.budget.take(self.wants(pool))

    def keep(self, server: Any, slot: tuple[int, ...]) -> None:
        self.held[server] = slot

    def release(self, server: Any) -> None:
        """The server is gone: its slot goes back (idempotent)."""
        slot = self.held.pop(server, None)
        if slot is not None:
            self.budget.release(slot)

    # ---- the janitor job ------------------------------------------------------------------
    def _hash(self, pool: Pool) -> int:
        key = (pool.name, pool.server_user)
        h = self._hashes.get(key)
        if h is None:
            h = self._hashes[key] = pool_hash(*key)
        return h

    def tick(self) -> None:
        """Post what our clients wait for, retry launches the budget held back, and close
        idle servers of pools whose clients wait elsewhere."""
        p = self.pooler
        self.budget.refresh()
        now = monotonic()
        demand: dict[int, int] = {}
        for pool in list(p.pools.values()):
            core = pool.core
            want = len(core.waiting) + len(pool.welcome_waiters)
            if not want:
                continue
            h = self._hash(pool)
            on_the_way = len(core.login) + len(core.used) + len(core.tested)
            demand[h] = demand.get(h, 0) + max(0, want - on_the_way)
            if not core.paused:
                p.launcher.launch_needed(pool)
        self.board.publish(self.member, demand, now)
        elsewhere = self.board.demand(self.member, now)
        if not elsewhere:
            return
        for pool in list(p.pools.values()):
            core = pool.core
            if not core.idle or core.waiting:
                continue
            need = elsewhere.get(self._hash(pool), 0)
            # NOTE: the oldest idle servers go first (the stack's bottom); the waiting process
            # launches into the freed slot on its next tick. Under load every server is idle
            # for a moment between two transactions: only one idle for a whole tick is spare.
            for server in core.idle[:need]:
                if now - server.request_time < IDLE_SPARE:
                    break
                server.disconnect(R_WANTED)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(ValueError):
            self.board.leave(self.member)
        self.board.close()
