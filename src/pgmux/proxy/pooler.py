"""The running pooler: listeners, the registry of pools, and the lifecycle verbs that move
clients and servers between states (find_server, release, launch_connection, disconnect)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgmux.auth import AuthError, ClientAuthenticator
from pgmux.config import Config, DatabaseConfig
from pgmux.pool.core import ClientState, PoolLimits, ServerState
from pgmux.pool.pool import Pool
from pgmux.protocol import messages as m
from pgmux.protocol.prepared import ClientStatements, PreparedRegistry, ServerStatements
from pgmux.proxy import tls
from pgmux.proxy.client import ClientConnection
from pgmux.proxy.client import Phase as ClientPhase
from pgmux.proxy.server import Phase as ServerPhase
from pgmux.proxy.server import ServerConnection

if TYPE_CHECKING:
    from pgmux.proxy.control import Control

log = logging.getLogger("pgmux")
monotonic = time.monotonic

# Client-visible parameters each client keeps for itself (PgBouncer's set plus search_path).
BASE_TRACKED = ("client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings",
                "application_name", "IntervalStyle", "search_path")
# Startup parameters accepted without ignore_startup_parameters (lower-case).
STARTUP_ALLOWED = {"user", "database", "replication"}
JANITOR_PERIOD = 0.2
_UNLIMITED = 1 << 30
_KEY = struct.Struct("!II")
# NOTE: on Python 3.11 an Enum member lookup goes through EnumType.__getattr__ (4x a plain
# attribute); the hot path uses this module constant.
_SERVER_READY = ServerPhase.READY


def startup_options(options: str) -> list[tuple[str, str]] | None:
    """The settings in an `options` startup parameter, parsed as PgBouncer does: only
    `-c name=value` and `--name=value`, backslash escapes a character; None if malformed."""
    out: list[tuple[str, str]] = []
    pos, end = 0, len(options)
    while True:
        while pos < end and options[pos].isspace():
            pos += 1
        if pos >= end:
            return out
        if options.startswith("-c", pos):
            pos += 2
            while pos < end and options[pos].isspace():
                pos += 1
        elif options.startswith("--", pos):
            pos += 2
        else:
            return None
        token: list[str] = []
        while pos < end and not options[pos].isspace():
            if options[pos] == "\\":
                pos += 1
                if pos == end:
                    break
            token.append(options[pos])
            pos += 1
        name, eq, value = "".join(token).partition("=")
        if not eq or not name:
            return None
        out.append((name, value))


def _canonical(names: tuple[str, ...]) -> dict[str, str]:
    return {n.lower(): n for n in names}


class Pooler:
    """Owns every pool, client and server; the asyncio face of the pool cores."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.settings
        self.pools: dict[tuple[str, str], Pool] = {}
        self.clients: set[ClientConnection] = set()
        self.by_key: dict[tuple[int, int], ClientConnection] = {}
        self._key_bytes = b""  # random bytes for cancel keys, drawn 4 KiB at a time
        self._key_pos = 0
        self.listeners: list[asyncio.AbstractServer] = []
        self.paused = False
        self.shutting_down: str | None = None
        self.admin_factory: Callable[[Pooler, ClientConnection], Any] | None = None
        self.on_reload: list[Callable[[Config], None]] = []
        self._janitor: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = time.time()
        self.auto_sizes: dict[str, int] = {}
        # NOTE: writes of one loop iteration, sent together when the iteration's ready events
        # have all been handled (see post()).
        self.outbox: list[tuple[asyncio.Transport, bytes]] = []
        # runs flush_outbox after this loop iteration's ready events; start() binds the loop
        self.schedule_flush: Callable[[], object] = self._flush_soon
        # NOTE: a clock read once per received chunk (PgBouncer's cached time), so the hot
        # path does not call monotonic() at every step.
        self.now = monotonic()
        self.prepared_registry = PreparedRegistry()
        self._apply_tracked()
        self.client_tls = tls.client_context(self.settings)
        self.server_tls = tls.server_context(self.settings)

    def _apply_tracked(self) -> None:
        extra = tuple(getattr(self.settings, "track_extra_parameters", ()) or ())
        names = BASE_TRACKED + tuple(n for n in extra if n not in BASE_TRACKED)
        self.tracked_params = frozenset(names)
        self.tracked_canonical = _canonical(names)

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

    # ---- listening ----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.schedule_flush = functools.partial(loop.call_soon, self.flush_outbox)
        s = self.settings
        # NOTE: before listening, so the first client already gets the sized pool.
        await self.size_auto_pools()
        addrs = [a.strip() for a in (s.listen_addr or "").split(",") if a.strip()]
        for addr in addrs:
            host = None if addr == "*" else addr
            server = await loop.create_server(
                lambda: ClientConnection(self), host, s.listen_port, reuse_address=True,
                backlog=s.listen_backlog)
            self.listeners.append(server)
        if s.unix_socket_dir:
            path = os.path.join(s.unix_socket_dir, f".s.PGSQL.{s.listen_port}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            server = await loop.create_unix_server(lambda: ClientConnection(self), path,
                                                   backlog=s.listen_backlog)
            # NOTE: unix_socket_mode is already an int (parsed as octal from the file).
            os.chmod(path, s.unix_socket_mode)
            if s.unix_socket_group:
                try:
                    gid = grp.getgrnam(s.unix_socket_group).gr_gid
                except KeyError:
                    raise OSError(f"unix_socket_group: no such group: "
                                  f"{s.unix_socket_group}") from None
                try:
                    os.chown(path, -1, gid)
                except OSError as exc:
                    raise OSError(f"unix_socket_group {s.unix_socket_group}: cannot give it "
                                  f"{path}: {exc.strerror}") from None
            self.listeners.append(server)
        self._janitor = loop.call_later(JANITOR_PERIOD, self._janitor_tick)
        # NOTE: like PgBouncer's "process up: PgBouncer 1.25.0, libevent ... (epoll)".
        event_loop = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        log.info("process up: pgmux, event loop %s, listening on %s:%d", event_loop,
                 s.listen_addr, s.listen_port)

    async def size_auto_pools(self) -> None:
        """pool_size=auto: 75% (auto_pool_fraction) of what the role may use on the server,
        read from the server itself at start and on RELOAD."""
        from pgmux.config import POOL_SIZE_AUTO
        from pgmux.doctor.facts import LIMITS_QUERY, limits_from_row
        from pgmux.doctor.plan import auto_pool_size

        sizes: dict[str, int] = {}
        for name, db in self.config.databases.items():
            if db.pool_size != POOL_SIZE_AUTO:
                continue
            role = db.user or self.settings.auth_user
            if not role:
                log.warning("pool_size=auto for %s needs user= (or auth_user) to read the "
                            "server's limits; using default_pool_size", name)
                continue
            password = db.password or self.config.userlist.get(role)
            host = db.host or self.settings.unix_socket_dir or "/tmp"
            try:
                import psycopg

                async with await psycopg.AsyncConnection.connect(
                        host=host, port=db.port, dbname=db.dbname or name, user=role,
                        password=password or None, autocommit=True,
                        application_name="pgmux pool_size=auto",
                        connect_timeout=int(self.settings.server_connect_timeout or 15)) as conn:
                    row = await (await conn.execute(LIMITS_QUERY)).fetchone()
            except Exception as exc:  # noqa: BLE001 - the pooler still starts
                log.warning("pool_size=auto for %s: cannot read limits (%s); using "
                            "default_pool_size", name, exc)
                continue
            assert row is not None
            lim = limits_from_row(row)
            size = auto_pool_size(lim.max_connections, lim.superuser_reserved + lim.reserved,
                                  lim.role_limit, lim.db_limit,
                                  fraction=self.config.pgmux.auto_pool_fraction)
            sizes[name] = size
            log.info("pool_size=auto for %s: %d (max_connections=%d, reserved=%d, role limit "
                     "%s, database limit %s)", name, size, lim.max_connections,
                     lim.superuser_reserved + lim.reserved, lim.role_limit, lim.db_limit)
        self.auto_sizes = sizes

    @property
    def unix_socket_path(self) -> str | None:
        s = self.settings
        if not s.unix_socket_dir:
            return None
        return os.path.join(s.unix_socket_dir, f".s.PGSQL.{s.listen_port}")

    def stop_listening(self) -> None:
        for server in self.listeners:
            server.close()
        self.listeners.clear()
        path = self.unix_socket_path
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def close(self) -> None:
        """Stop listening, disconnect everyone, stop the janitor."""
        self.stop_listening()
        if self._janitor is not None:
            self._janitor.cancel()
            self._janitor = None
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

    # ---- clients: connect and startup ---------------------------------------------------
    def client_connected(self, client: ClientConnection) -> None:
        self.clients.add(client)
        if self.shutting_down:
            client.fatal("server shutting down", "57P01")
        # NOTE: max_client_conn is checked in client_startup, after the startup packet.

    def startup_packet(self, client: ClientConnection, packet: m.StartupPacket) -> None:
        if isinstance(packet, m.SSLRequest | m.GSSENCRequest):
            self.negotiate_encryption(client, packet)
            return
        if isinstance(packet, m.CancelRequest):
            self.cancel(packet.pid, packet.key)
            client.disconnect("cancel request", notify=False)
            return
        self.client_startup(client, packet.params)

    def negotiate_encryption(self, client: ClientConnection, packet: m.StartupPacket) -> None:
        """Answer SSLRequest/GSSENCRequest: 'S' and a TLS handshake when client TLS is on,
        else 'N', which means carry on in plain text."""
        assert client.transport is not None
        if isinstance(packet, m.SSLRequest) and self.client_tls is not None and not client.tls:
            client.transport.write(b"S")
            client.start_tls(self.client_tls)
        else:
            client.transport.write(b"N")

    def client_startup(self, client: ClientConnection, params: dict[str, str]) -> None:
        s = self.settings
        if s.client_tls_sslmode in tls.REQUIRED and not client.tls and client.addr != "unix":
            client.fatal("SSL required", "28000")
            return
        ignored = {p.lower() for p in s.ignore_startup_parameters}
        startup: dict[str, str] = {}
        for key, value in params.items():
            low = key.lower()
            if low in STARTUP_ALLOWED:
                continue
            if low == "options":
                # NOTE: PgBouncer 1.25 takes `-c name=value` / `--name=value` settings of
                # tracked parameters from `options`; other settings are refused unless
                # they (or "options") are in ignore_startup_parameters.
                settings = startup_options(value)
                if settings is None:
                    client.fatal("unsupported options startup parameter: only '-c config=val' "
                                 "and '--config=val' are allowed")
                    return
                for name, setting in settings:
                    if name.lower() in self.tracked_canonical:
                        startup[self.tracked_canonical[name.lower()]] = setting
                    elif name.lower() not in ignored and "options" not in ignored:
                        client.fatal(f"unsupported startup parameter in options: {name}")
                        return
                continue
            if low in self.tracked_canonical:
                startup[self.tracked_canonical[low]] = value
            elif low in ignored:
                continue
            else:
                client.fatal(f"unsupported startup parameter: {key}")
                return
        user = params.get("user", "")
        if not user:
            client.fatal("no username supplied")
            return
        dbname = params.get("database") or user
        client.user, client.dbname, client.startup = user, dbname, startup
        # NOTE: checked here, after the startup packet, as PgBouncer does (not at accept):
        # an ErrorResponse sent at accept lands in the client's SSLRequest exchange, and
        # libpq then reports only "server sent an error response during SSL exchange".
        # The admin console is exempt, as in PgBouncer.
        if len(self.clients) > s.max_client_conn and dbname != "pgbouncer":
            client.fatal("no more connections allowed (max_client_conn)", "53300")
            return
        if params.get("replication"):
            client.fatal("replication connections are not supported")
            return
        refusal = self.control.refuse_login(dbname)
        if refusal is not None:
            client.fatal(*refusal)
            return
        if dbname == "pgbouncer" and self.admin_factory is not None:
            self._start_auth(client, admin=True)
            return
        if self.config.database(dbname) is None:
            client.fatal(f"no such database: {dbname}")
            return
        self._start_auth(client, admin=False)

    def _auth_method(self, user: str, admin: bool) -> str:
        method = self.settings.auth_type
        if method == "any":
            return "trust"
        if method == "hba":
            return "md5"
        return method

    def _start_auth(self, client: ClientConnection, admin: bool) -> None:
        method = self._auth_method(client.user, admin)
        if admin and client.transport is not None and \
                client.transport.get_extra_info("peername") in ("", None) and \
                self.control.is_own_user(client):
            # NOTE: PgBouncer lets a same-uid peer in as `pgbouncer` over the Unix socket.
            method = "trust"
        if method == "trust":
            self.client_authenticated(client, admin)
            return
        secret = self.config.userlist.get(client.user)
        if secret is None and not admin:
            db = self.config.database(client.dbname)
            if db is not None and db.user == client.user and db.password:
                secret = db.password
            elif db is not None and (db.auth_user or self.settings.auth_user):
                # NOTE: not in auth_file: ask the server (auth_user + auth_query), then go on.
                client.phase = ClientPhase.AUTH
                client.auth = None
                self.spawn(self._lookup_then_auth(client, db, method))
                return
        self._begin_exchange(client, method, secret, admin)

    def _begin_exchange(self, client: ClientConnection, method: str, secret: str | None,
                        admin: bool) -> None:
        auth = ClientAuthenticator(method, client.user, secret)
        client.auth = (auth, admin)
        client.phase = ClientPhase.AUTH
        assert client.transport is not None
        client.transport.write(auth.start())

    async def _lookup_then_auth(self, client: ClientConnection, db: DatabaseConfig,
                                method: str) -> None:
        from pgmux.proxy.authquery import lookup_secret

        auth_user = db.auth_user or self.settings.auth_user
        try:
            secret = await lookup_secret(self, db, auth_user, client.user)
        except Exception as exc:  # noqa: BLE001 - any failure refuses this login only
            log.warning("%s auth_query failed: %s", client.prefix(), exc)
            if client.phase is ClientPhase.AUTH:
                client.fatal("bouncer config error")
            return
        if client.phase is not ClientPhase.AUTH:
            return
        client.auth_secret = secret
        self._begin_exchange(client, method, secret, admin=False)

    def auth_message(self, client: ClientConnection, t: int, body: bytes) -> None:
        if client.auth is None:
            client.fatal("password message before authentication request")
            return
        auth, admin = client.auth
        if t != m.F_PASSWORD:
            client.fatal("expected password message during authentication")
            return
        try:
            step = auth.receive(t.to_bytes(1, "big"), body)
        except AuthError as exc:
            client.fatal(str(exc))
            return
        if step.failed:
            if step.detail:
                log.warning("%s %s", client.prefix(), step.detail)
            assert client.transport is not None
            client.transport.write(step.send)
            client.disconnect(step.error or "authentication failed", notify=False)
            return
        if step.send:
            assert client.transport is not None
            client.transport.write(step.send)
        if step.ok:
            # NOTE: step.send ended with AuthenticationOk; the welcome must not repeat it.
            client.auth_ok_sent = True
            client.scram_keys = auth.scram_keys
            self.client_authenticated(client, admin)

    def client_authenticated(self, client: ClientConnection, admin: bool) -> None:
        s = self.settings
        if self.settings.log_connections:
            log.info("%s login attempt: db=%s user=%s tls=%s", client.prefix(), client.dbname,
                     client.user, "yes" if client.tls else "no")
        if admin:
            assert self.admin_factory is not None
            client.admin = self.admin_factory(self, client)
            if client.phase is ClientPhase.CLOSED:
                return  # NOTE: the console refused this user ("not allowed")
            client.client_state = ClientState.ACTIVE
            client.ready(m.parameter_status_block(client.admin.welcome()),
                         self._new_key(client))
            return
        db = self.config.database(client.dbname)
        if db is None:
            client.fatal(f"no such database: {client.dbname}")
            return
        if s.max_db_client_connections or db.max_db_client_connections:
            limit = db.max_db_client_connections or s.max_db_client_connections
            n = sum(1 for c in self.clients if c.dbname == client.dbname and c.pool is not None)
            if n >= limit:
                # NOTE: PgBouncer's wording for the per-database client limit.
                client.fatal("client connections exceeded (max_db_client_connections)",
                             "53300")
                return
        user_conf = self.config.users.get(client.user)
        ulimit = (user_conf.max_user_client_connections if user_conf else 0) or \
            s.max_user_client_connections
        if ulimit:
            n = sum(1 for c in self.clients if c.user == client.user and c.pool is not None)
            if n >= ulimit:
                # NOTE: PgBouncer's wording for the per-user client limit.
                client.fatal("client connections exceeded (max_user_client_connections)",
                             "53300")
                return
        pool = self.get_pool(db, client.user, client)
        if client.scram_keys is not None and pool.scram_keys is None and not db.user:
            # NOTE: PgBouncer's SCRAM pass-through: the client's keys log us into the server.
            pool.scram_keys = client.scram_keys
        client.pool = pool
        client.pool_mode = pool.pool_mode
        client.watch_session = pool.pool_mode != "session"
        if pool.welcome is not None:
            self._welcome(client, pool)
            return
        if self._fast_fail(client, pool):
            return
        client.phase = ClientPhase.WELCOME
        pool.welcome_waiters.append(lambda error: self._welcome_or_fail(client, pool, error))
        # NOTE: the first login obeys max_db_connections/max_user_connections too (evicting
        # another pool's idle server if need be); when no room can be made now, the janitor
        # tries again while welcome_waiters is not empty.
        self.launch_needed(pool)

    def _welcome_or_fail(self, client: ClientConnection, pool: Pool, error: str | None) -> None:
        if client.phase is not ClientPhase.WELCOME:
            return
        if error is not None:
            client.fatal(error, pool.last_login_sqlstate)
            return
        self._welcome(client, pool)

    def _welcome(self, client: ClientConnection, pool: Pool) -> None:
        assert pool.welcome is not None
        # NOTE: the ParameterStatus block depends only on the pool's welcome and the client's
        # startup parameters; building it once per combination keeps connection churn cheap.
        key = tuple(client.startup.items())
        cached = pool.welcome_cache.get(key)
        if cached is None:
            welcome = dict(pool.welcome)
            welcome.update(client.startup)
            params = {k: v for k, v in welcome.items() if k in self.tracked_params}
            cached = (m.parameter_status_block(welcome), params)
            if len(pool.welcome_cache) < 256:
                pool.welcome_cache[key] = cached
        block, params = cached
        client.params = params  # NOTE: shared, never changed in place (copy on write)
        if pool.pool_mode != "session" and self.settings.max_prepared_statements > 0:
            client.stmts = ClientStatements(self.prepared_registry)
        pool.core.add_client(client)
        client.ready(block, self._new_key(client))

    def new_server_statements(self, pool: Pool) -> ServerStatements | None:
        """Per-server prepared statement tracking, in the modes that share servers."""
        if pool.pool_mode == "session" or self.settings.max_prepared_statements <= 0:
            return None
        return ServerStatements(self.settings.max_prepared_statements)

    def _new_key(self, client: ClientConnection) -> tuple[int, int]:
        while True:
            # NOTE: one getrandom() per 512 connections instead of one per connection.
            pos = self._key_pos
            if pos + 8 > len(self._key_bytes):
                self._key_bytes, pos = os.urandom(4096), 0
            self._key_pos = pos + 8
            pid, secret = _KEY.unpack_from(self._key_bytes, pos)
            key = (pid & 0x7FFFFFFF, secret & 0x7FFFFFFF)
            if key not in self.by_key:
                self.by_key[key] = client
                return key

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
            password = db.password
        else:
            password = conf.userlist.get(user)
            if password is None:
                password = client.auth_secret if client is not None and \
                    client.auth_secret else db.password
        name = key[0]
        startup: dict[str, str] = {}
        for attr, param in (("client_encoding", "client_encoding"), ("datestyle", "DateStyle"),
                            ("timezone", "TimeZone"), ("application_name", "application_name")):
            value = getattr(db, attr, None)
            if value:
                startup[param] = value
        limits = self.limits_for(db, server_user)
        host = db.host
        pool = Pool(name, server_user, host=host, port=db.port, dbname=db.dbname or name,
                    server_user=server_user, server_password=password,
                    pool_mode=conf.pool_mode_for(name, server_user), limits=limits,
                    connect_query=db.connect_query, startup=startup)
        pool.core.paused = self.control.db_paused(name)
        self.pools[key] = pool
        return pool

    # ---- finding and releasing servers --------------------------------------------------
    def _fast_fail(self, client: ClientConnection, pool: Pool) -> bool:
        """PgBouncer's check_fast_fail: while logins fail and nothing is up, refuse at once."""
        if not pool.last_login_failed or pool.core.server_count:
            return False
        if monotonic() - pool.last_login_failed >= self.settings.server_login_retry:
            return False
        client.fatal("server login has been failing, try again later (server_login_retry)",
                     pool.last_login_sqlstate)
        return True

    def request_server(self, client: ClientConnection) -> ServerConnection | None:
        """find_server: link an idle server now and return it (the caller sends what the
        client has), or queue the client, launch if allowed, and return None."""
        pool = client.pool
        assert pool is not None
        linked: ServerConnection | None = client.server
        if linked is not None:
            return linked
        if self.paused or pool.disabled:
            # NOTE: queue only; taking an idle server here would leave it active and unlinked.
            if client.client_state is not ClientState.WAITING:
                client.client_state = ClientState.WAITING
                client.wait_start = monotonic()
                pool.core.clients.discard(client)
                pool.core.waiting.append(client)
            return None
        if pool.last_login_failed and self._fast_fail(client, pool):
            return None
        server: ServerConnection | None = pool.core.find_server(client, self.now)
        if server is not None:
            self._bind(client, server, waited=False)
            return server
        self.launch_needed(pool)
        return None

    def _bind(self, client: ClientConnection, server: ServerConnection, waited: bool) -> None:
        """Link bookkeeping: counters, times, the two pointers, the client's parameters."""
        now = self.now
        stats = server.pool.stats
        stats.server_assignment_count += 1
        if waited:
            stats.wait_time += int((now - client.wait_start) * 1_000_000)
        server.link_time = now
        server.request_time = now
        client.server = server
        server.link = client
        params = client.params
        # NOTE: clients with the same startup parameters share one params dict (copied when
        # one changes), so `in_sync` spares the comparison when the server's last client had
        # the same.
        if server.in_sync is not params:
            if server.tracked != params:
                server.sync_params(params)
            server.in_sync = params
        if client.writing_paused:
            server.pause_reading()

    def link(self, client: ClientConnection, server: ServerConnection, waited: bool) -> None:
        """Hand a server to a client that waited for it, and send what the client queued."""
        self.now = monotonic()
        self._bind(client, server, waited)
        client.flush_pending(server)

    def release(self, client: ClientConnection, server: ServerConnection) -> None:
        """Unlink at the end of a transaction and give the server to the next client."""
        now = self.now
        stats = server.pool.stats
        stats.xact_count += 1
        stats.xact_time += int((now - server.link_time) * 1_000_000)
        if server.query_start:
            stats.query_time += int((now - server.query_start) * 1_000_000)
            server.query_start = 0.0
        client.server = None
        server.link = None
        server.request_time = now
        if server.reading_paused:
            server.resume_reading()
        if server.dirty or self.settings.server_reset_query_always:
            self._reset(server, rollback=False, reset=True)
        else:
            self.server_ready(server)

    def stats_xact(self, server: ServerConnection) -> None:
        server.pool.stats.xact_count += 1

    def server_ready(self, server: ServerConnection) -> None:
        """A server is clean and free: close it if it must go, else hand it on."""
        pool = server.pool
        if server.phase is not _SERVER_READY:
            return
        if server.close_needed or pool.disabled:
            server.disconnect(server.close_reason or "database configuration changed")
            return
        lifetime = self.settings.server_lifetime
        if lifetime and self.now - server.connect_time >= lifetime and not pool.core.waiting:
            server.disconnect("server lifetime over")
            return
        client = pool.core.release_server(server)
        if client is not None:
            self.link(client, server, waited=True)

    def _reset(self, server: ServerConnection, rollback: bool, reset: bool) -> None:
        """Run ROLLBACK and/or the reset query; the server is ready again when both answer."""
        pool = server.pool
        pool.core.mark_tested(server)
        if rollback:
            server.inject("ROLLBACK", after="ready")
        if reset:
            query = self.settings.server_reset_query or "DISCARD ALL"
            server.inject(query, after="ready")
            if server.stmts is not None:
                server.stmts.invalidate()
            server.forget_unreported()

    # ---- launching servers --------------------------------------------------------------
    def room(self, pool: Pool) -> tuple[int, int]:
        """How many more servers the database and user limits allow for this pool."""
        s = self.settings
        db = self.config.database(pool.name)
        db_limit = (db.max_db_connections if db and db.max_db_connections else 0) or \
            s.max_db_connections
        user_conf = self.config.users.get(pool.server_user)
        user_limit = (user_conf.max_user_connections if user_conf and
                      user_conf.max_user_connections else 0) or s.max_user_connections
        db_room = user_room = _UNLIMITED
        if db_limit:
            db_room = db_limit - sum(p.core.server_count for p in self.pools.values()
                                     if p.name == pool.name)
        if user_limit:
            user_room = user_limit - sum(p.core.server_count for p in self.pools.values()
                                         if p.server_user == pool.server_user)
        return db_room, user_room

    def launch_needed(self, pool: Pool) -> None:
        core = pool.core
        lim = core.limits
        if lim.pool_size and core.server_count >= lim.pool_size + lim.reserve_pool_size:
            return  # NOTE: the common case under load: the pool is full, nothing to compute
        if pool.last_login_failed and \
                monotonic() - pool.last_login_failed < self.settings.server_login_retry:
            return
        now = monotonic()
        want = pool.core.wanted_launches(now, _UNLIMITED, _UNLIMITED)
        if pool.welcome is None and pool.welcome_waiters and not pool.core.login:
            want = max(want, 1)  # NOTE: logged-in clients wait for the pool's first server
        db_room, user_room = self.room(pool)
        # NOTE: PgBouncer's evict_connection/evict_user_connection: when clients wait and the
        # database or user limit is what stops a launch, close the longest-idle server of
        # another pool of that database/user to make room (never for min_pool_size alone).
        evict = bool(pool.core.waiting or pool.welcome_waiters)
        while evict and min(db_room, user_room) < want and \
                self._evict_idle(pool, by_db=db_room < want):
            db_room, user_room = self.room(pool)
        n = max(0, min(want, db_room, user_room))
        if pool.last_login_failed:
            n = min(n, 1)  # NOTE: after a failure, probe with one connection
        for _ in range(n):
            self.launch_connection(pool)

    def _evict_idle(self, pool: Pool, by_db: bool) -> bool:
        """Close the longest-idle server of another pool of pool's database (by_db) or
        server user; False when there is none."""
        oldest: ServerConnection | None = None
        for other in self.pools.values():
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

    def launch_connection(self, pool: Pool) -> None:
        server = ServerConnection(self, pool)
        pool.core.add_server(server)
        self.spawn(self._connect(server))

    async def _connect(self, server: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        pool = server.pool
        host = pool.host or self.settings.unix_socket_dir or "/tmp"
        try:
            if host.startswith("/"):
                coro: Any = loop.create_unix_connection(
                    lambda: server, os.path.join(host, f".s.PGSQL.{pool.port}"))
            else:
                coro = loop.create_connection(lambda: server, host, pool.port)
            await asyncio.wait_for(coro, timeout=self.settings.server_connect_timeout or None)
        except (TimeoutError, OSError) as exc:
            reason = "connect timeout" if isinstance(exc, asyncio.TimeoutError) else \
                f"connect failed: {exc.strerror or exc}"
            server.login_failed(reason)

    def server_logged_in(self, server: ServerConnection, ready: bool) -> None:
        pool = server.pool
        pool.last_login_failed = 0.0
        if pool.welcome is None:
            pool.welcome = dict(server.params)
            pool.welcome_cache.clear()
        waiters, pool.welcome_waiters = pool.welcome_waiters, []
        for wake in waiters:
            wake(None)
        if ready:
            self.server_ready(server)
        else:
            pool.core.mark_tested(server)

    def server_login_failed(self, server: ServerConnection, message: str, sqlstate: str) -> None:
        pool = server.pool
        if server.server_state is ServerState.CLOSED:
            return
        pool.core.remove_server(server)
        pool.last_login_failed = monotonic()
        pool.last_login_sqlstate = sqlstate
        log.warning("%s closing because: %s (age=%ds)", server.prefix(),
                    message, int(monotonic() - server.connect_time))
        if pool.core.server_count:
            return
        # NOTE: nothing is up for this pool: nobody waiting may hang on it.
        waiters, pool.welcome_waiters = pool.welcome_waiters, []
        for wake in waiters:
            wake(message)
        for client in list(pool.core.waiting):
            client.fatal(message if sqlstate != "08P01" else
                         "server login has been failing, try again later (server_login_retry)",
                         sqlstate)

    def server_closed(self, server: ServerConnection, reason: str) -> None:
        pool = server.pool
        pool.core.remove_server(server)
        if self.settings.log_disconnections:
            log.info("%s closing because: %s (age=%ds)", server.prefix(), reason,
                     int(monotonic() - server.connect_time))
        client = server.link
        if client is not None:
            server.link = None
            client.server = None
            # NOTE: when the backend already told the client why (a FATAL of its own, such as
            # an administrator's pg_terminate_backend), a second error would confuse drivers.
            client.disconnect(reason, notify=not server.fatal_sent)
        if pool.core.waiting:
            self.launch_needed(pool)

    # ---- clients leaving ----------------------------------------------------------------
    def client_closed(self, client: ClientConnection, reason: str) -> None:
        self.clients.discard(client)
        if self.by_key.get(client.cancel_key) is client:
            del self.by_key[client.cancel_key]
        if self.settings.log_disconnections and client.user:
            log.info("%s closing because: %s (age=%ds)", client.prefix(), reason,
                     int(monotonic() - client.connect_time))
        pool = client.pool
        if pool is None:
            return
        server = client.server
        pool.core.remove_client(client)
        if server is not None:
            client.server = None
            server.link = None
            self._server_left(server)

    def _server_left(self, server: ServerConnection) -> None:
        """Its client went away: make the server clean for the next one, or close it."""
        if server.phase is not ServerPhase.READY:
            return
        ls = server.link_state
        if server.swallow or not ls.idle:
            server.disconnect("client disconnect while server was not ready")
            return
        server.resume_reading()
        rollback = ls.status != 73
        reset = server.dirty or self.settings.server_reset_query_always or (
            server.pool.pool_mode == "session" and bool(self.settings.server_reset_query))
        if rollback or reset:
            self._reset(server, rollback=rollback, reset=reset)
        else:
            self.server_ready(server)

    # ---- cancel -------------------------------------------------------------------------
    def cancel(self, pid: int, key: int) -> None:
        """Route a CancelRequest to the server running that client's query; wrong keys are
        ignored, as PostgreSQL does."""
        client = self.by_key.get((pid, key))
        if client is None or client.server is None:
            return
        server = client.server
        self.spawn(self._send_cancel(server.pool, server.pid, server.key))

    async def _send_cancel(self, pool: Pool, pid: int, key: int) -> None:
        host = pool.host or self.settings.unix_socket_dir or "/tmp"
        try:
            if host.startswith("/"):
                _, writer = await asyncio.open_unix_connection(
                    os.path.join(host, f".s.PGSQL.{pool.port}"))
            else:
                _, writer = await asyncio.open_connection(host, pool.port)
            writer.write(m.cancel_request(pid, key))
            await writer.drain()
            writer.close()
        except OSError as exc:
            log.warning("cancel request to %s:%d failed: %s", host, pool.port, exc)

    # ---- periodic work ------------------------------------------------------------------
    def _janitor_tick(self) -> None:
        try:
            self.janitor()
        except Exception:  # noqa: BLE001 - the janitor must keep running
            log.exception("janitor failed")
        loop = asyncio.get_event_loop()
        self._janitor = loop.call_later(JANITOR_PERIOD, self._janitor_tick)

    def janitor(self) -> None:
        from pgmux.pool.janitor import run_janitor

        run_janitor(self, monotonic())

    # ---- control (admin) ----
    @functools.cached_property
    def control(self) -> Control:
        """Pause/disable/shutdown state and the operator's verbs (proxy/control.py)."""
        from pgmux.proxy.control import Control

        return Control(self)

    def signal_handlers(self, stop: asyncio.Event, reload_fn: Callable[[], Config] | None
                        ) -> dict[int, Callable[[], None]]:
        """PgBouncer's signals; app.serve installs what this returns."""
        return self.control.signal_handlers(stop, reload_fn)
