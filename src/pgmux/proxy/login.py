"""A client's way in: the startup packet (TLS answer, cancel requests, startup parameters and
`options`), authentication (auth_file, auth_query), the per-client limits, the welcome, and
cancel keys.

Owns the cancel keys (`by_key`) and the welcome cache of each pool; moves a client through
its login phases with the client's own methods (begin_auth, await_welcome, ready).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import sys
from typing import TYPE_CHECKING

from pgmux.auth import (
    REPLICATION_LOGICAL,
    REPLICATION_NONE,
    REPLICATION_PHYSICAL,
    AuthError,
    ClientAuthenticator,
    parse_replication,
)
from pgmux.config import DatabaseConfig
from pgmux.protocol import messages as m
from pgmux.protocol.state import state
from pgmux.proxy import limits, tls
from pgmux.proxy.client import Phase as ClientPhase
from pgmux.proxy.clientauth import CONFIG_ERROR, NO_METHOD, ClientAuth, Method
from pgmux.proxy.replication import ReplicationLink

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")

# Startup parameters accepted without ignore_startup_parameters (lower-case).
STARTUP_ALLOWED = {"user", "database", "replication"}
# The setting a client asks for its own session with (`options=-c pgmux.pool_mode=session`).
SESSION_REQUEST = "pgmux.pool_mode"
_KEY = struct.Struct("!II")
# PgBouncer's words for a client's replication kind in its "login attempt" line.
_LOG_REPLICATION = {REPLICATION_NONE: "no", REPLICATION_LOGICAL: "database",
                    REPLICATION_PHYSICAL: "yes"}


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


# NOTE: the startup parameters of most clients: one shared dict (never changed in place).
_NO_STARTUP: dict[str, str] = {}

class Login:
    """Logs clients in for one pooler."""

    __slots__ = ("pooler", "auth", "by_key", "_key_bytes", "_key_pos")

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self.auth = ClientAuth(pooler)
        self.by_key: dict[tuple[int, int], ClientConnection] = {}  # cancel key -> client
        self._key_bytes = b""  # random bytes for cancel keys, drawn 4 KiB at a time
        self._key_pos = 0

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
        context = self.pooler.client_tls
        if isinstance(packet, m.SSLRequest) and context is not None and not client.tls:
            client.transport.write(b"S")
            client.start_tls(context)
        else:
            client.transport.write(b"N")

    def client_startup(self, client: ClientConnection, params: dict[str, str]) -> None:
        s = self.pooler.settings
        if s.client_tls_sslmode in tls.REQUIRED and not client.tls and client.addr != "unix":
            client.fatal("SSL required", "28000")
            return
        replication = params.get("replication")
        if replication is not None:
            kind = parse_replication(replication)
            if kind is None:
                # NOTE: PostgreSQL's words for a value it does not take.
                client.fatal(f'invalid value for parameter "replication": "{replication}"',
                             "22023")
                return
            if kind != REPLICATION_NONE:
                # NOTE: its server is its own: every startup parameter goes to it as sent
                # (proxy/replication.py), none is checked or tracked here.
                client.replication = kind
                self.pooler.replication[client] = params
                self._user_and_db(client, params, {})
                return
        ignored = {p.lower() for p in s.ignore_startup_parameters}
        # NOTE: with session_state = track, any other setting (in `options` or as a startup
        # parameter) becomes part of the client's session and is applied on every server it
        # gets; otherwise PgBouncer's rule: tracked parameters only, the rest refused unless
        # ignore_startup_parameters lists them (or "options").
        track = self.pooler.config.pgmux.session_state == "track"
        tracked = self.pooler.tracked_canonical
        startup: dict[str, str] = {}
        gucs: dict[str, str] = {}
        for key, value in params.items():
            low = key.lower()
            if low in STARTUP_ALLOWED:
                continue
            if low == "options":
                settings = startup_options(value)
                if settings is None:
                    self.refuse(client, "unsupported options startup parameter: only "
                                "'-c config=val' and '--config=val' are allowed",
                                why=f"unsupported options startup parameter: {value}")
                    return
                for name, setting in settings:
                    if name.lower() in tracked:
                        startup[tracked[name.lower()]] = setting
                    elif name.lower() == SESSION_REQUEST:
                        client.wants_session = setting.lower() == "session"
                    elif name.lower() in ignored or "options" in ignored:
                        continue
                    elif track:
                        gucs[name.lower()] = setting
                    else:
                        self.refuse(client,
                                    f"unsupported startup parameter in options: {name}",
                                    why=f"unsupported startup parameter in options: "
                                        f"{name}={setting}")
                        return
                continue
            if low in tracked:
                startup[tracked[low]] = value
            elif low == SESSION_REQUEST:
                client.wants_session = value.lower() == "session"
            elif low in ignored:
                continue
            elif track and not low.startswith("_pq_."):
                gucs[low] = value
            else:
                self.refuse(client, f"unsupported startup parameter: {key}",
                            why=f"unsupported startup parameter: {key}={value}")
                return
        if gucs:
            client.startup_state = client.session = state(gucs)
        self._user_and_db(client, params, startup)

    def _user_and_db(self, client: ClientConnection, params: dict[str, str],
                     startup: dict[str, str]) -> None:
        """The rest of the startup packet: who, which database, and may they come in."""
        s = self.pooler.settings
        user = params.get("user", "")
        if not user:
            client.fatal("no username supplied")
            return
        dbname = params.get("database") or user
        # NOTE: interned, so thousands of clients of one pool share two strings (mortal
        # interning: a name no client uses any more is freed).
        client.user, client.dbname = sys.intern(user), sys.intern(dbname)
        client.startup = startup or _NO_STARTUP
        # NOTE: checked here, after the startup packet, as PgBouncer does (not at accept):
        # an ErrorResponse sent at accept lands in the client's SSLRequest exchange, and
        # libpq then reports only "server sent an error response during SSL exchange".
        # The admin console is exempt, as in PgBouncer.
        if len(self.pooler.clients) > s.max_client_conn and dbname != "pgbouncer":
            client.fatal(limits.MAX_CLIENT_CONN, limits.REFUSAL_SQLSTATE)
            return
        refusal = self.pooler.control.refuse_login(dbname)
        if refusal is not None:
            self.refuse(client, *refusal)
            return
        if dbname == "pgbouncer" and self.pooler.admin_factory is not None:
            if client.replication != REPLICATION_NONE:
                client.fatal("replication connections are not allowed to the admin console")
                return
            self._authenticate(client, None, admin=True)
            return
        # NOTE: as in PgBouncer, an unknown database is refused only after the client has
        # authenticated (so a wrong password is answered the same for every database).
        self._authenticate(client, self.pooler.config.database(dbname), admin=False)

    def refuse(self, client: ClientConnection, message: str, sqlstate: str = "08P01",
               why: str | None = None) -> None:
        """End a login with PgBouncer's words; `why` goes to the log first (the error itself
        is logged as a pooler error, and the close with its reason)."""
        if why:
            log.info("%s %s", client.prefix(), why)
        client.fatal(message, sqlstate)

    def _authenticate(self, client: ClientConnection, db: DatabaseConfig | None,
                      admin: bool) -> None:
        """Choose the method and find the secret (asking auth_query when the user is not in
        auth_file), then check the login."""
        auth = self.auth
        if admin and client.transport is not None and \
                client.transport.get_extra_info("peername") in ("", None) and \
                self.pooler.control.is_own_user(client):
            # NOTE: PgBouncer lets a same-uid peer in as `pgbouncer` over the Unix socket.
            self.client_authenticated(client, admin)
            return
        how = auth.method(client, admin)
        if how is None:
            self.refuse(client, NO_METHOD)
            return
        secret = auth.known_secret(client, db)
        if secret is None and how.name not in ("any", "reject"):
            target = auth.query_database(db, admin)
            if isinstance(target, str):
                self.refuse(client, target)
                return
            if target is not None:
                assert db is not None
                # NOTE: not in auth_file: ask the server (auth_user + auth_query), then go on.
                client.begin_auth(None, b"")
                self.pooler.spawn(self._lookup_then_check(client, db, target, admin, how))
                return
        self._check(client, db, admin, how, secret)

    async def _lookup_then_check(self, client: ClientConnection, db: DatabaseConfig,
                                 auth_db: DatabaseConfig, admin: bool, how: Method) -> None:
        try:
            secret = await self.auth.query_secret(db, auth_db, client.user)
        except Exception as exc:  # noqa: BLE001 - any failure refuses this login only
            log.warning("%s auth_query failed: %s", client.prefix(), exc)
            if client.phase is ClientPhase.AUTH:
                self.refuse(client, CONFIG_ERROR)
            return
        if client.phase is not ClientPhase.AUTH:
            return
        client.auth_secret = secret
        self._check(client, db, admin, how, secret)

    def _check(self, client: ClientConnection, db: DatabaseConfig | None, admin: bool,
               how: Method, secret: str | None) -> None:
        """Log in without a password (trust, any, cert, peer) or start the exchange."""
        verdict = self.auth.decide(client, db, admin, how, known=secret is not None)
        if verdict.exchange is None:
            if verdict.ok:
                if verdict.log:
                    log.debug("%s %s", client.prefix(), verdict.log)
                self.client_authenticated(client, admin)
            else:
                self.refuse(client, verdict.error, why=verdict.log)
            return
        exchange = ClientAuthenticator(verdict.exchange, client.user, secret,
                                       scram_iterations=self.pooler.settings.scram_iterations)
        if secret is None:
            log.info("%s no such user: %s", client.prefix(), client.user)
        client.begin_auth((exchange, admin), exchange.start())

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
            client.auth = None  # NOTE: the exchange's state is not needed after the login
            self.client_authenticated(client, admin)

    def client_authenticated(self, client: ClientConnection, admin: bool) -> None:
        if self.pooler.settings.log_connections:
            log.info("%s login attempt: db=%s user=%s tls=%s replication=%s", client.prefix(),
                     client.dbname, client.user, "yes" if client.tls else "no",
                     _LOG_REPLICATION.get(client.replication, "no"))
        if admin:
            assert self.pooler.admin_factory is not None
            client.admin = self.pooler.admin_factory(self.pooler, client)
            if client.phase is ClientPhase.CLOSED:
                return  # NOTE: the console refused this user ("not allowed")
            client.ready(m.parameter_status_block(client.admin.welcome()),
                         self.new_key(client))
            return
        db = self.pooler.config.database(client.dbname)
        if db is None:
            self.refuse(client, f"no such database: {client.dbname}",
                        why=f"login failed: db={client.dbname} user={client.user}")
            return
        if db.from_fallback:
            self.pooler.register_autodb(client, db.name)
        if not self._within_client_limits(client, db):
            return
        pool = self.pooler.get_pool(db, client.user, client)
        if client.scram_keys is not None and pool.scram_keys is None and not db.user:
            # NOTE: PgBouncer's SCRAM pass-through: the client's keys log us into the server.
            pool.scram_keys = client.scram_keys
        client.pool = pool
        if client.replication != REPLICATION_NONE:
            self._replicate(client, pool)
            return
        # NOTE: `-c pgmux.pool_mode=session`: a client that needs a real session gets one.
        client.adopt_mode("session" if client.wants_session else pool.pool_mode)
        if pool.welcome is not None:
            self._welcome(client, pool)
            return
        if self.pooler.launcher.fast_fail(client, pool):
            return
        client.await_welcome()
        pool.welcome_waiters.append(lambda error: self._welcome_or_fail(client, pool, error))
        # NOTE: the first login obeys max_db_connections/max_user_connections too (evicting
        # another pool's idle server if need be); when no room can be made now, the janitor
        # tries again while welcome_waiters is not empty.
        self.pooler.launcher.launch_needed(pool)

    def _within_client_limits(self, client: ClientConnection, db: DatabaseConfig) -> bool:
        """max_db_client_connections and max_user_client_connections ([databases] and
        [users] override [pgbouncer]); refuses the client with PgBouncer's words if over.

        NOTE: the counts are the logged-in clients of the registry (those with a pool), so a
        client that leaves, or is closed because its pool's server login failed, stops
        counting when it leaves the registry; nothing to release by hand."""
        s = self.pooler.settings
        user_conf = self.pooler.config.users.get(client.user)
        db_limit = int(limits.effective(db.max_db_client_connections,
                                        s.max_db_client_connections))
        user_limit = int(limits.effective(
            user_conf.max_user_client_connections if user_conf else None,
            s.max_user_client_connections))
        if not db_limit and not user_limit:
            return True
        db_n, user_n = self.pooler.client_counts(client.dbname, client.user)
        refusal = limits.client_refusal(db_n, db_limit, user_n, user_limit)
        if refusal is None:
            return True
        client.fatal(refusal, limits.REFUSAL_SQLSTATE)
        return False

    def _replicate(self, client: ClientConnection, pool: Pool) -> None:
        """A replication client: session mode, and a server of its own, logged in with its
        startup parameters; the welcome is that server's."""
        params = self.pooler.replication.get(client)
        if not isinstance(params, dict):
            client.fatal("replication login lost its startup parameters")
            return
        client.adopt_mode("session")
        client.await_welcome()
        link = ReplicationLink(self.pooler, client, pool, params)
        self.pooler.replication[client] = link
        link.start()

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
            # NOTE: the spelling the server reports for a value, once a server has said it
            # ("ISO" -> "ISO, MDY"), as PostgreSQL's own welcome would.
            canonical = pool.canonical
            welcome.update({k: canonical.get((k, v), v) for k, v in client.startup.items()})
            params = {k: v for k, v in welcome.items() if k in self.pooler.tracked_params}
            cached = (m.parameter_status_block(welcome), params)
            if len(pool.welcome_cache) < 256:
                pool.welcome_cache[key] = cached
        block, params = cached
        client.params = params  # NOTE: shared, never changed in place (copy on write)
        if client.pool_mode != "session" and self.pooler.settings.max_prepared_statements > 0:
            client.tracks_stmts = True  # NOTE: its ClientStatements at its first named one
        pool.core.add_client(client)
        client.ready(block, self.new_key(client))

    def new_key(self, client: ClientConnection) -> tuple[int, int]:
        while True:
            # NOTE: one getrandom() per 512 connections instead of one per connection.
            pos = self._key_pos
            if pos + 8 > len(self._key_bytes):
                self._key_bytes, pos = os.urandom(4096), 0
            self._key_pos = pos + 8
            pid, secret = _KEY.unpack_from(self._key_bytes, pos)
            key = (pid & 0x7FFFFFFF, secret & 0x7FFFFFFF)
            if self.pooler.cancel_router is not None:
                key = self.pooler.cancel_router.stamp(key)  # NOTE: names worker and peer
            if key not in self.by_key:
                self.by_key[key] = client
                return key

    def forget_key(self, client: ClientConnection) -> None:
        """The client is gone: its cancel key no longer cancels anything."""
        if self.by_key.get(client.cancel_key) is client:
            del self.by_key[client.cancel_key]

    def cancel(self, pid: int, key: int) -> None:
        """Route a CancelRequest to the server running that client's query; wrong keys are
        ignored, as PostgreSQL does."""
        if self.pooler.cancel_router is not None:
            routed = self.pooler.cancel_router.route(pid, key)
            if routed is None:
                return  # NOTE: another worker's or peer's client (pgmux/workers/cancel.py)
            pid, key = routed
        client = self.by_key.get((pid, key))
        if client is None:
            return
        if client.server is None:
            link = self.pooler.replication.get(client)
            if isinstance(link, ReplicationLink) and link.server.pid:
                # NOTE: a replication client's own server, as PgBouncer forwards it too.
                self.pooler.spawn(self._send_cancel(link.server.host, link.pool.port,
                                                    link.server.pid, link.server.key))
            return
        server = client.server
        # NOTE: the host the server is connected to (one of a host= list), not the list.
        self.pooler.spawn(self._send_cancel(server.host, server.port, server.pid, server.key))

    async def _send_cancel(self, host: str | None, port: int, pid: int, key: int) -> None:
        host = host or self.pooler.settings.unix_socket_dir or "/tmp"
        try:
            if host.startswith("/"):
                _, writer = await asyncio.open_unix_connection(
                    os.path.join(host, f".s.PGSQL.{port}"))
            else:
                _, writer = await asyncio.open_connection(host, port)
            writer.write(m.cancel_request(pid, key))
            await writer.drain()
            writer.close()
        except OSError as exc:
            log.warning("cancel request to %s:%d failed: %s", host, port, exc)
