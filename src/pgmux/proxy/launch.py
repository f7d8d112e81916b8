"""Server connections: when to open them (pool size, reserve pool, min_pool_size, database and
user limits, evicting another pool's idle server), connecting, and the outcome of each login.

Owns each pool's login-failure memory (`last_login_*`, `login_*`: when to try again) and the
pool's welcome (the parameters the first login reported).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final

from pgmux.pool.core import ServerState
from pgmux.proxy import limits
from pgmux.proxy.server import ServerConnection

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
monotonic: Final = time.monotonic

_UNLIMITED: Final = 1 << 30
_LOGIN_STATE: Final = ServerState.LOGIN
# NOTE: transient login failures are retried after 0.1 s, doubling, at most this (and never
# longer than server_login_retry): a PostgreSQL restart costs clients a wait, not an error,
# and they are served within this long of the server accepting connections again.
LOGIN_BACKOFF_FIRST: Final = 0.1
LOGIN_BACKOFF_CAP: Final = 2.0


class Launcher:
    """Opens server connections for one pooler's pools."""

    __slots__ = ("pooler",)

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler

    # ---- how many ---------------------------------------------------------------------------
    def room(self, pool: Pool) -> tuple[int, int]:
        """How many more servers the database and user limits allow for this pool."""
        p = self.pooler
        s = p.settings
        db = p.config.database(pool.name)
        db_limit = (db.max_db_connections if db and db.max_db_connections else 0) or \
            s.max_db_connections
        user_conf = p.config.users.get(pool.server_user)
        user_limit = (user_conf.max_user_connections if user_conf and
                      user_conf.max_user_connections else 0) or s.max_user_connections
        db_room = user_room = _UNLIMITED
        if db_limit:
            db_room = db_limit - sum(o.core.server_count for o in p.pools.values()
                                     if o.name == pool.name)
        if user_limit:
            user_room = user_limit - sum(o.core.server_count for o in p.pools.values()
                                         if o.server_user == pool.server_user)
        return db_room, user_room

    def launch_needed(self, pool: Pool) -> None:
        core = pool.core
        lim = core.limits
        if lim.pool_size and core.server_count >= lim.pool_size + lim.reserve_pool_size:
            return  # NOTE: the common case under load: the pool is full, nothing to compute
        now = monotonic()
        if now < pool.login_retry_at:
            return  # NOTE: the janitor tries again once the back-off has passed
        want = core.wanted_launches(now, _UNLIMITED, _UNLIMITED)
        if pool.welcome is None and pool.welcome_waiters and not core.login:
            want = max(want, 1)  # NOTE: logged-in clients wait for the pool's first server
        db_room, user_room = self.room(pool)
        # NOTE: PgBouncer's evict_connection/evict_user_connection: when clients wait and the
        # database or user limit is what stops a launch, close the longest-idle server of
        # another pool of that database/user to make room (never for min_pool_size alone).
        evict = bool(core.waiting or pool.welcome_waiters)
        while evict and min(db_room, user_room) < want and \
                self._evict_idle(pool, by_db=db_room < want):
            db_room, user_room = self.room(pool)
        n = max(0, min(want, db_room, user_room))
        if pool.last_login_failed:
            n = min(n, 1 - len(core.login))  # NOTE: after a failure, probe with one connection
        for _ in range(n):
            if lim.pool_size and core.server_count >= lim.pool_size and core.waiting:
                # NOTE: PgBouncer's warning, with the first waiter's prefix, for each server
                # the reserve pool gives (the core allowed it: pool/core.py wanted_launches).
                log.warning("%s %s", core.waiting[0].prefix(), limits.RESERVE_LOG)
            if not self.launch_connection(pool):
                break

    def _evict_idle(self, pool: Pool, by_db: bool) -> bool:
        """Close the longest-idle server of another pool of pool's database (by_db) or
        server user; False when there is none."""
        oldest: ServerConnection | None = None
        for other in self.pooler.pools.values():
            if other is pool or (other.name != pool.name if by_db else
                                 other.server_user != pool.server_user):
                continue
            for server in other.core.idle:
                if oldest is None or server.request_time < oldest.request_time:
                    oldest = server
        if oldest is None:
            return False
        oldest.disconnect("evicted")
        return True

    # ---- connecting ---------------------------------------------------------------------------
    def launch_connection(self, pool: Pool) -> bool:
        """Open one server connection for pool; False when the shared budget has no slot."""
        budget = self.pooler.budget
        slot = budget.take(pool) if budget is not None else None
        if budget is not None and slot is None:
            return False  # NOTE: the server budget shared with other processes is spent
        server = ServerConnection(self.pooler, pool)
        if budget is not None and slot is not None:
            budget.keep(server, slot)
        pool.core.add_server(server)
        self.pooler.spawn(self._connect(server))
        return True

    async def _connect(self, server: ServerConnection) -> None:
        """Connect to the pool's host, or with host=a,b,c to the one load_balance_hosts
        picks; a failed connect moves to the next host of the list at once (each host tried
        once), so one bad host costs its clients no error while another is up."""
        pool = server.pool
        hosts, pool.host_counter = limits.hosts_in_order(pool.host, pool.host_counter,
                                                         pool.round_robin, pool.host_failed)
        reason = ""
        for attempt, host in enumerate(hosts):
            server.host = host
            if attempt:
                # NOTE: each host gets its own server_connect_timeout (the janitor's clock).
                server.connect_time = monotonic()
            reason = await open_server(server, host, server.port, self.pooler.settings)
            if not reason:
                pool.host_failed = False
                return
            pool.host_failed = True
            if server.server_state is not _LOGIN_STATE:
                return  # NOTE: given up on meanwhile (connect timeout in the janitor)
            if attempt + 1 < len(hosts):
                log.warning("%s %s; trying the next host", server.prefix(), reason)
                if not pool.round_robin:
                    pool.host_counter += 1  # NOTE: disable: stay on the host that answers
        server.login_failed(reason, transient=True)

    # ---- the outcome of a login -------------------------------------------------------------
    def logged_in(self, server: ServerConnection, ready: bool) -> None:
        """A server finished its login; ready=False while its connect_query runs."""
        pool = server.pool
        pool.last_login_failed = pool.login_retry_at = pool.login_backoff = 0.0
        pool.login_transient = False
        self.welcome(pool, server.params)
        if ready:
            self.pooler.links.server_ready(server)
        else:
            pool.core.mark_tested(server)

    def welcome(self, pool: Pool, params: dict[str, str]) -> None:
        """The parameters a login reported (a worker may have them from a sibling): the pool's
        welcome, if it has none yet, and the clients waiting for it go on."""
        if pool.welcome is None:
            pool.welcome = dict(params)
            pool.welcome_cache.clear()
        waiters, pool.welcome_waiters = pool.welcome_waiters, []
        for wake in waiters:
            wake(None)

    def login_failed(self, server: ServerConnection, message: str, sqlstate: str,
                     transient: bool) -> None:
        """A server login failed. Transient (unreachable, starting up, shutting down, too many
        connections): the clients stay queued and logins are retried soon, 0.1 s doubling up
        to LOGIN_BACKOFF_CAP. Otherwise (authentication, unknown database, configuration):
        PgBouncer's server_login_retry: the waiting clients get the server's error, new ones
        are refused with it, and no login is tried for server_login_retry."""
        pool = server.pool
        if server.server_state is not _LOGIN_STATE:
            return
        pool.core.remove_server(server)
        if self.pooler.budget is not None:
            self.pooler.budget.release(server)
        now = monotonic()
        pool.last_login_failed = now
        pool.last_login_sqlstate = sqlstate
        pool.last_login_error = message
        pool.login_transient = transient
        retry = self.pooler.settings.server_login_retry
        if transient:
            pool.login_backoff = min(max(pool.login_backoff * 2, LOGIN_BACKOFF_FIRST),
                                     min(retry, LOGIN_BACKOFF_CAP))
            pool.login_retry_at = now + pool.login_backoff
        else:
            pool.login_backoff = 0.0
            pool.login_retry_at = now + retry
        log.warning("%s closing because: %s (age=%ds)", server.prefix(),
                    message, int(now - server.connect_time))
        if transient or pool.core.server_count:
            return
        # NOTE: nothing is up for this pool and it will not be soon: nobody may hang on it.
        waiters, pool.welcome_waiters = pool.welcome_waiters, []
        for wake in waiters:
            wake(message)
        for client in list(pool.core.waiting):
            client.fatal(message, sqlstate)

    def fast_fail(self, client: ClientConnection, pool: Pool) -> bool:
        """PgBouncer's check_fast_fail: while logins fail for a reason that will not pass by
        itself and nothing is up, refuse at once with the cached error."""
        if not pool.last_login_failed or pool.login_transient or pool.core.server_count:
            return False
        if monotonic() >= pool.login_retry_at:
            return False
        client.fatal(retry_text(pool.last_login_error), pool.last_login_sqlstate)
        return True


def retry_text(error: str) -> str:
    """PgBouncer 1.24+'s refusal while server_login_retry runs, with the cached error."""
    return f"server login has been failing, cached error: {error} (server_login_retry)"


async def open_server(protocol: asyncio.BaseProtocol, host: str | None, port: int,
                      settings: Any) -> str:
    """Connect protocol to a server: host:port, or the Unix socket in a host (or
    unix_socket_dir) that is a directory; within server_connect_timeout. "" when connected,
    else why not (pooled and replication server logins alike)."""
    loop = asyncio.get_running_loop()
    where = host or settings.unix_socket_dir or "/tmp"
    try:
        if where.startswith("/"):
            coro: Any = loop.create_unix_connection(
                lambda: protocol, os.path.join(where, f".s.PGSQL.{port}"))
        else:
            coro = loop.create_connection(lambda: protocol, where, port)
        await asyncio.wait_for(coro, timeout=settings.server_connect_timeout or None)
    except (TimeoutError, OSError) as exc:
        return "connect timeout" if isinstance(exc, asyncio.TimeoutError) else \
            f"connect failed: {exc.strerror or exc}"
    return ""
