"""The one periodic tick of a pooler: every timeout, min_pool_size, the reserve pool and launches
for waiting clients (every SWEEP seconds), the operator's pending waits (PAUSE, WAIT_CLOSE,
SHUTDOWN: every tick while one is pending) and registered periodic jobs (stats_period). No
timer is armed per query or per client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgmux.protocol import messages as m
from pgmux.protocol.session import STATUS_IDLE
from pgmux.proxy import limits
from pgmux.proxy.client import Phase

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
monotonic = time.monotonic

TICK = 0.05   # seconds between ticks
SWEEP = 0.2   # seconds between sweeps of the pools for timeouts and launches
RENAME_IDLE = 1.0  # seconds idle before a server gets the pool's application_name back


class Janitor:
    """Runs the periodic work of one pooler from a single timer."""

    __slots__ = ("pooler", "_timer", "_last_sweep", "_jobs")

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self._timer: asyncio.TimerHandle | None = None
        self._last_sweep = 0.0
        # (period in seconds, when it last ran, the job); jobs read their period each time
        self._jobs: list[tuple[Callable[[], float], list[float], Callable[[], None]]] = []

    def every(self, period: Callable[[], float], job: Callable[[], None]) -> None:
        """Run job every period() seconds (period is read again each time, so a RELOAD of
        the setting it comes from applies)."""
        self._jobs.append((period, [monotonic()], job))

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = monotonic()
        try:
            self.pooler.control.tick()
            if now - self._last_sweep >= SWEEP:
                self._last_sweep = now
                self.sweep(now)
            else:
                # NOTE: launches every tick: a login retried after a short back-off (a
                # restarting server) is not held up to the next sweep.
                for pool in list(self.pooler.pools.values()):
                    self._pool_launches(pool)
            for period, last, job in self._jobs:
                if now - last[0] >= period():
                    last[0] = now
                    job()
        except Exception:  # noqa: BLE001 - the janitor must keep running
            log.exception("janitor failed")
        self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    # ---- the sweep ----------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        p = self.pooler
        s = p.settings
        if s.client_login_timeout:
            for client in [c for c in p.clients if c.is_logging_in()]:
                if client.admin is None and now - client.connect_time > s.client_login_timeout:
                    # NOTE: PgBouncer's words for a client still waiting for the pool's
                    # first server login.
                    client.fatal("client_login_timeout (server down)" if client.phase is
                                 Phase.WELCOME else "client_login_timeout")
        # NOTE: as PgBouncer (>= 1.21) does, a database with a forced user and a min_pool_size
        # gets its pool before any client comes, so the loop below keeps it at min_pool_size.
        if not p.control.paused:
            for name, db in p.config.databases.items():
                min_size = db.min_pool_size if db.min_pool_size is not None else s.min_pool_size
                if db.user and min_size > 0 and name != "*" and (name, db.user) not in p.pools:
                    p.get_pool(db, db.user)
        for pool in list(p.pools.values()):
            self._pool_timeouts(pool, now)
            self._pool_launches(pool)
        if p.autodbs and not p.control.paused:
            p.drop_idle_autodbs(now)

    def _pool_timeouts(self, pool: Pool, now: float) -> None:
        self._waiting_clients(pool, now)
        self._linked_servers(pool, now)
        self._idle_servers(pool, now)
        # Servers stuck logging in.
        s = self.pooler.settings
        core = pool.core
        if core.login and s.server_connect_timeout:
            for server in list(core.login):
                if now - server.connect_time > s.server_connect_timeout:
                    server.login_failed("connect timeout", transient=True)

    def _waiting_clients(self, pool: Pool, now: float) -> None:
        """Waiting clients: query_timeout (checked first, as in PgBouncer's janitor, which
        applies the global query_timeout to waiting clients too), query_wait_timeout, the
        query_wait_notify notice; idle clients: client_idle_timeout."""
        s = self.pooler.settings
        core = pool.core
        wait_timeout = s.query_wait_timeout
        notify = s.query_wait_notify
        if core.waiting and (wait_timeout or s.query_timeout or notify):
            for client in list(core.waiting):
                waited = now - client.wait_start
                if s.query_timeout and waited > s.query_timeout:
                    client.fatal("query_timeout")
                elif wait_timeout and waited > wait_timeout:
                    client.fatal("query_wait_timeout")
                elif limits.wait_notice_due(notify, waited,
                                            client.wait_notified == client.wait_start):
                    # NOTE: once per wait: the wait it was sent for is remembered by its start.
                    client.wait_notified = client.wait_start
                    client.send(m.notice_response(limits.WAIT_NOTICE))
        user_conf = self.pooler.config.users.get(pool.user)
        idle_timeout = limits.effective(user_conf.client_idle_timeout if user_conf else None,
                                        s.client_idle_timeout)
        if idle_timeout:
            for client in [c for c in core.clients if c.server is None and
                           now - c.request_time > idle_timeout]:
                client.fatal("client_idle_timeout")

    def _linked_servers(self, pool: Pool, now: float) -> None:
        """Linked servers: query_timeout, idle_transaction_timeout and transaction_timeout
        ([users] overrides [pgbouncer]); server_fast_close in session mode."""
        s = self.pooler.settings
        core = pool.core
        user_conf = self.pooler.config.users.get(pool.user)
        query_timeout = float(limits.effective(user_conf.query_timeout if user_conf else None,
                                               s.query_timeout))
        idle_tx = float(limits.effective(
            user_conf.idle_transaction_timeout if user_conf else None,
            s.idle_transaction_timeout))
        xact = float(limits.effective(user_conf.transaction_timeout if user_conf else None,
                                      s.transaction_timeout))
        fast_close = s.server_fast_close
        if not (query_timeout or idle_tx or xact or fast_close):
            return
        for server in list(core.active):
            client = server.link
            if client is None:
                continue
            ls = server.link_state
            busy = ls.outstanding > 0 or ls.copy_in
            in_tx = ls.status != STATUS_IDLE
            if fast_close and client.pool_mode == "session" and limits.fast_close(
                    fast_close, bool(server.close_needed), ls.idle and not in_tx):
                server.disconnect(limits.CONFIG_CHANGED)  # NOTE: its client goes with it
                continue
            reason = limits.linked_timeout(
                busy, in_tx, now - server.query_start if server.query_start else 0.0,
                now - client.request_time,
                now - server.xact_start if server.xact_start else 0.0, query_timeout, idle_tx,
                xact)
            if reason is not None:
                server.disconnect(reason)
                client.fatal(reason)

    def _idle_servers(self, pool: Pool, now: float) -> None:
        """Idle servers: server_idle_timeout (keeping min_pool_size), server_lifetime (the
        pool's, closes spread out), server_check_query after server_check_delay idle, and the
        pool's own application_name back after a second idle."""
        s = self.pooler.settings
        core = pool.core
        if not core.idle:
            return
        lim = core.limits
        server_idle = s.server_idle_timeout
        check_query = "" if core.paused else s.server_check_query
        keep = lim.min_pool_size
        own_name = pool.extra_startup.get("application_name", "")
        for server in list(core.idle):
            if server_idle and now - server.request_time > server_idle and \
                    core.server_count > keep:
                server.disconnect("server idle timeout")
            elif limits.life_over(now - server.connect_time, lim.server_lifetime,
                                  lim.pool_size, now - pool.last_lifetime_close):
                pool.last_lifetime_close = now
                server.disconnect("server lifetime over")
            elif limits.check_needed(check_query, s.server_check_delay,
                                     now - max(server.request_time, server.checked_at)):
                self.pooler.links.check(server, check_query, now)
            elif now - server.request_time >= RENAME_IDLE and \
                    server.tracked.get("application_name", own_name) != own_name:
                self.pooler.links.refresh_idle(server)

    def _pool_launches(self, pool: Pool) -> None:
        """Launch what waiters, the reserve pool or min_pool_size call for."""
        core = pool.core
        if core.paused:
            return
        launcher = self.pooler.launcher
        # NOTE: welcome_waiters: clients waiting for the pool's first server, which
        # max_db_connections/max_user_connections may have held back.
        if core.waiting or (pool.welcome_waiters and not core.login):
            launcher.launch_needed(pool)
        elif core.limits.min_pool_size and core.server_count < core.limits.min_pool_size \
                and (core.clients or pool.welcome is not None or self._forced_user(pool)):
            launcher.launch_needed(pool)

    def _forced_user(self, pool: Pool) -> bool:
        """Whether pool's database logs in with a user of its own ([databases] user=)."""
        db = self.pooler.config.databases.get(pool.name)
        return db is not None and bool(db.user)
