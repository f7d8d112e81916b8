"""The running pooler as a registry: its configuration, pools, clients, the outbox every write
goes through, and the parts that do the work (listen, login, launch, link, janitor, control).

Owns: `config`/`settings` (replaced whole by RELOAD through control.py), `pools`, `clients`,
the outbox and the loop clock `now`. The parts reach each other through it and import it only
for type checking, so no import cycle runs through here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from pgmux import build_kind
from pgmux.config import Config, DatabaseConfig
from pgmux.pool.core import PoolLimits
from pgmux.pool.pool import Pool
from pgmux.protocol.prepared import PreparedRegistry, ServerStatements
from pgmux.proxy import limits, tls
from pgmux.proxy.autosize import size_auto_pools
from pgmux.proxy.client import ClientConnection
from pgmux.proxy.control import Control
from pgmux.proxy.janitor import Janitor
from pgmux.proxy.launch import Launcher
from pgmux.proxy.link import Links
from pgmux.proxy.listen import Listener
from pgmux.proxy.login import Login

if TYPE_CHECKING:
    from pgmux.stats.period import StatsPeriod
    from pgmux.workers import WorkerInfo
    from pgmux.workers.cancel import CancelRouter
    from pgmux.workers.shared import Shared

log = logging.getLogger("pgmux")
monotonic: Final = time.monotonic

# Client-visible parameters each client keeps for itself (PgBouncer's set plus search_path).
BASE_TRACKED = ("client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings",
                "application_name", "IntervalStyle", "search_path")
# application_name of server logins whose [databases] entry names none.
SERVER_APPLICATION_NAME = "pgmux"
# The pool startup parameters a [databases] entry may set, by DatabaseConfig attribute.
_DB_STARTUP = (("client_encoding", "client_encoding"), ("datestyle", "DateStyle"),
               ("timezone", "TimeZone"), ("application_name", "application_name"))


def _canonical(names: tuple[str, ...]) -> dict[str, str]:
    return {n.lower(): n for n in names}


class Pooler:
    """Owns every pool and client of one process; the asyncio face of the pool cores."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.settings
        self.pools: dict[tuple[str, str], Pool] = {}
        self.clients: set[ClientConnection] = set()
        self.admin_factory: Callable[[Pooler, ClientConnection], Any] | None = None
        self.on_reload: list[Callable[[Config], None]] = []
        self.stop_event: asyncio.Event | None = None  # set by app.serve: stops the process
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_ident = 0
        self._ident_step = 1
        self.started = time.time()
        # NOTE: -v: PgBouncer's verbose lines (each link, release and SET); read once here so
        # the hot path pays one attribute test.
        self.debug = log.isEnabledFor(logging.DEBUG)
        self.auto_sizes: dict[str, int] = {}
        # NOTE: databases made from the '*' entry (auto-databases), by name: the monotonic
        # time since which none of their pools has a client or a server, 0.0 while in use.
        # The janitor drops those unused for autodb_idle_timeout.
        self.autodbs: dict[str, float] = {}
        self.stats_period: StatsPeriod | None = None  # stats/period.py's, made on first use
        # NOTE: set by pgmux/workers when this process shares a budget (workers, budget_file),
        # marks its cancel keys (workers, peer_id) or is a worker; None: a pooler on its own.
        self.worker: WorkerInfo | None = None
        self.budget: Shared | None = None
        self.cancel_router: CancelRouter | None = None
        # NOTE: writes of one loop iteration, sent together when the iteration's ready events
        # have all been handled (see post()).
        self.outbox: list[tuple[asyncio.Transport, bytes]] = []
        # runs flush_outbox after this loop iteration's ready events; start() binds the loop
        self.schedule_flush: Callable[[], object] = self._flush_soon
        # NOTE: a clock read once per received chunk (PgBouncer's cached time), so the hot
        # path does not call monotonic() at every step.
        self.now = monotonic()
        self.prepared_registry = PreparedRegistry()
        # NOTE: replication clients and their own server (proxy/replication.py), which
        # closes with its client.
        self.replication: dict[ClientConnection, Any] = {}
        self.tracked_params: frozenset[str] = frozenset()
        self.tracked_canonical: dict[str, str] = {}
        self.reset_always = False
        self.tracking = True
        self.check_always = False
        # NOTE: max_prepared_statements was > 0 at some point: servers keep tracking
        # statements from then on, for the clients that logged in with it.
        self.prepared_tracked = False
        self.apply_settings()
        self.client_tls = tls.client_context(self.settings)
        self.server_tls = tls.server_context(self.settings)
        self.listener = Listener(self)
        self.login = Login(self)
        self.launcher = Launcher(self)
        self.links = Links(self)
        self.control = Control(self)
        self.janitor = Janitor(self)

    def apply_settings(self) -> None:
        """What follows from the settings, read once here (at start and on every RELOAD) so
        the hot path reads plain attributes: the parameters each client keeps for itself
        (PgBouncer's set plus track_extra_parameters) and the settings links decide by."""
        extra = self.settings.track_extra_parameters
        names = BASE_TRACKED + tuple(n for n in extra if n not in BASE_TRACKED)
        self.tracked_params = frozenset(names)
        self.tracked_canonical = _canonical(names)
        own = self.config.pgmux
        self.reset_always = self.settings.server_reset_query_always
        self.tracking = own.session_state == "track"
        self.check_always = self.tracking and own.session_check == "always"
        limit = self.settings.max_prepared_statements
        self.prepared_tracked = self.prepared_tracked or limit > 0
        if self.prepared_tracked:
            # NOTE: a new max_prepared_statements reaches the open servers too; each evicts
            # down to it at its next Parse (lazily, as PgBouncer does). At 0, clients that
            # logged in before keep their statements on an LRU of one.
            for pool in self.pools.values():
                for server in pool.core.servers():
                    if server.stmts is not None:
                        server.stmts.max_prepared = max(1, limit)

    def next_ident(self) -> int:
        """The `id` of a new client or server in SHOW CLIENTS/SERVERS: connect order."""
        self._next_ident += self._ident_step
        return self._next_ident

    def number_idents(self, first: int, step: int) -> None:
        """Number clients and servers first + step, first + 2 step, ... (workers apart)."""
        self._next_ident, self._ident_step = first, step

    # ---- writing ------------------------------------------------------------------------
    def post(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write data to transport once the current loop iteration has handled every ready
        event. Every write on a linked connection goes through here, so they stay in order.

        NOTE: a write to a socket wakes its reader, and on a busy machine the woken process
        often takes this CPU at once (the kernel assumes the writer will sleep soon). A pooler
        never does; preempted in the middle of an iteration, it leaves every other ready event
        waiting. Writing last means it is preempted, if at all, with nothing left undone.
        """
        outbox = self.outbox
        if not outbox:
            self.schedule_flush()
        outbox.append((transport, data))

    def _flush_soon(self) -> None:
        asyncio.get_running_loop().call_soon(self.flush_outbox)

    def flush_outbox(self) -> None:
        """Send what post() holds; also called before any write or close that bypasses it."""
        outbox = self.outbox
        if outbox:
            self.outbox = []
            for transport, data in outbox:
                try:
                    transport.write(data)
                except RuntimeError:
                    # NOTE: the connection closed after the post; its connection_lost has run
                    # or will run, and that carries the reason.
                    pass

    # ---- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Size pool_size=auto pools, listen (StartError when the port, socket or pidfile is
        taken), start the janitor."""
        loop = asyncio.get_running_loop()
        self.schedule_flush = functools.partial(loop.call_soon, self.flush_outbox)
        # NOTE: before listening, so the first client already gets the sized pool.
        self.auto_sizes = await size_auto_pools(self)
        where = await self.listener.start(lambda: ClientConnection(self),
                                          self.worker.sockets if self.worker else None)
        self.janitor.start()
        for place in where:
            log.info("listening on %s", place)
        # NOTE: like PgBouncer's "process up: PgBouncer 1.25.0, libevent ... (epoll)".
        event_loop = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        log.info("process up: pgmux, event loop %s, build %s, listening on %s", event_loop,
                 build_kind(), ", ".join(where) or "nothing")

    async def close(self) -> None:
        """Stop listening, disconnect everyone, stop the janitor."""
        self.listener.stop()
        self.janitor.stop()
        for client in list(self.clients):
            client.disconnect("server shutting down")
        for pool in list(self.pools.values()):
            for server in list(pool.core.servers()):
                server.disconnect("server shutting down")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the registry of clients ----------------------------------------------------------
    def client_connected(self, client: ClientConnection) -> None:
        self.clients.add(client)
        self.control.client_connected(client)
        # NOTE: max_client_conn is checked after the startup packet (proxy/login.py).

    def client_closed(self, client: ClientConnection, reason: str) -> None:
        self.clients.discard(client)
        self.login.forget_key(client)
        if self.replication:
            link = self.replication.pop(client, None)
            if link is not None and not isinstance(link, dict):
                link.close(reason, client_gone=True)
        if self.settings.log_disconnections:
            log.info("%s closing because: %s (age=%ds)", client.prefix(), reason,
                     int(monotonic() - client.connect_time))
        self.links.client_gone(client)

    def client_counts(self, dbname: str, user: str) -> tuple[int, int]:
        """Logged-in clients (those in a pool) of database dbname and of login user `user`:
        what max_db_client_connections / max_user_client_connections and SHOW DATABASES /
        USERS current_client_connections count."""
        db_n = user_n = 0
        for c in self.clients:
            if c.pool is not None:
                if c.dbname == dbname:
                    db_n += 1
                if c.user == user:
                    user_n += 1
        return db_n, user_n

    # ---- auto-databases ('*') ----------------------------------------------------------------
    def register_autodb(self, client: ClientConnection, name: str) -> None:
        """A client asked for a database only the '*' entry gives: register it (PgBouncer's
        log line) the first time."""
        if name not in self.autodbs:
            log.info("%s registered new auto-database: %s", client.prefix(), name)
        self.autodbs[name] = 0.0

    def drop_idle_autodbs(self, now: float) -> None:
        """autodb_idle_timeout: drop the pools of auto-databases no client or server has
        used for that long (0 keeps them)."""
        timeout = self.settings.autodb_idle_timeout
        in_use = {c.dbname for c in self.clients}
        by_name: dict[str, list[Pool]] = {}
        for pool in self.pools.values():
            if pool.name in self.autodbs:
                by_name.setdefault(pool.name, []).append(pool)
                if pool.core.server_count or pool.core.clients or pool.core.waiting:
                    in_use.add(pool.name)
        for name, since in list(self.autodbs.items()):
            pools = by_name.get(name, [])
            if name in in_use:
                self.autodbs[name] = 0.0
            elif not since:
                self.autodbs[name] = now
            elif timeout > 0 and now - since > timeout:
                log.warning("dropping database '%s' as it does not exist anymore or inactive "
                            "auto-database", name)
                del self.autodbs[name]
                for pool in pools:
                    del self.pools[(pool.name, pool.user)]

    # ---- the registry of pools ------------------------------------------------------------
    def new_server_statements(self, pool: Pool) -> ServerStatements | None:
        """Per-server prepared statement tracking, in the modes that share servers."""
        if pool.pool_mode == "session" or not self.prepared_tracked:
            return None
        return ServerStatements(max(1, self.settings.max_prepared_statements))

    def limits_for(self, db: DatabaseConfig, server_user: str) -> PoolLimits:
        """The limits the configuration gives one pool: [users] > [databases] > [pgbouncer],
        with pool_size=auto read from the server (default_pool_size until it is)."""
        conf = self.config
        s = conf.settings
        size = conf.pool_size_for(db.name, server_user)
        if size < 0:  # pool_size=auto
            size = self.auto_sizes.get(db.name, s.default_pool_size)
        return PoolLimits(
            pool_size=size,
            reserve_pool_size=conf.reserve_pool_size_for(db.name, server_user),
            reserve_pool_timeout=s.reserve_pool_timeout,
            min_pool_size=db.min_pool_size if db.min_pool_size is not None else s.min_pool_size,
            server_lifetime=float(limits.effective(db.server_lifetime, s.server_lifetime)),
        )

    def get_pool(self, db: DatabaseConfig, user: str, client: ClientConnection | None = None
                 ) -> Pool:
        server_user = db.user or user
        key = (client.dbname if client else db.name, server_user)
        pool = self.pools.get(key)
        if pool is not None:
            return pool
        conf = self.config
        if db.user:
            # NOTE: as PgBouncer: the forced user's [databases] password, else its auth_file
            # entry.
            password = db.password or conf.userlist.get(db.user)
        else:
            password = conf.userlist.get(user)
            if password is None:
                password = client.auth_secret if client is not None and \
                    client.auth_secret else db.password
        name = key[0]
        startup = {param: value for attr, param in _DB_STARTUP
                   if (value := getattr(db, attr))}
        # NOTE: server logins say who they are, so that readers of pg_stat_activity (pgmux
        # doctor, an operator) tell the pool from a leak; a client's own name is applied
        # while it holds the server, and an idle server gets this one back (janitor).
        startup.setdefault("application_name", SERVER_APPLICATION_NAME)
        pool = Pool(name, server_user, host=db.host, port=db.port, dbname=db.dbname or name,
                    server_user=server_user, server_password=password,
                    pool_mode=conf.pool_mode_for(name, server_user),
                    limits=self.limits_for(db, server_user),
                    connect_query=db.connect_query, startup=startup,
                    round_robin=db.load_balance_hosts == "round-robin")
        self.pools[key] = pool
        self.control.sync_pause(pool)
        return pool
