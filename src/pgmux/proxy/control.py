"""The operator's verbs over a running pooler (pause, suspend, resume, disable, reconnect, kill,
wait_close, shutdown, reload) and the Unix signals that trigger them.

Owns the pause state (`paused`, `paused_dbs`; each pool core's `paused` is derived from them
by sync_pause, its only writer), the disabled databases, the shutdown mode and pending waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgmux import sdnotify
from pgmux.config import POOL_SIZE_AUTO, Config, ConfigError, diff, load_config
from pgmux.config.reload import NOT_RELOADABLE
from pgmux.config.settings import convert
from pgmux.log import reopen_logfile
from pgmux.proxy import tls
from pgmux.proxy.autosize import size_auto_pools
from pgmux.proxy.clientauth import peer_credentials

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")

ADMIN_DB = "pgbouncer"

IMMEDIATE = "IMMEDIATE"
WAIT_FOR_SERVERS = "WAIT_FOR_SERVERS"
WAIT_FOR_CLIENTS = "WAIT_FOR_CLIENTS"

# PgBouncer's reasons, as they appear in the logs.
R_PAUSE = "pause mode"
R_KILLED = "database removed"
R_CHANGED = "database configuration changed"
R_CLOSE_NEEDED = "close_needed"
R_TOO_MANY = "too many servers in the pool"
R_KILL_CLIENT = "admin forced disconnect"
R_SHUTDOWN = "server shutting down"

Done = Callable[[], None]


class ControlError(Exception):
    """An operation refused; the message is the text PgBouncer answers with."""

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


class Control:
    """Pause/disable/shutdown state of one pooler and the operations that change it.

    Pause state lives here once: `paused` (everything) and `paused_dbs`; each pool core's
    `paused` flag is derived from them by sync_pause. The janitor calls tick() every few
    hundredths of a second; it returns at once unless something is pending.
    """

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self.paused = False  # PAUSE, KILL (of everything), SHUTDOWN WAIT_FOR_SERVERS
        self.paused_dbs: set[str] = set()
        self.suspended = False  # SUSPEND: no socket but the console's is read until RESUME
        self.suspend_deadline = 0.0  # suspend_timeout: a socket not flushed by then is dropped
        self.disabled_dbs: set[str] = set()
        self.shutdown_mode: str | None = None
        self.stop: asyncio.Event | None = None
        self.reload_fn: Callable[[], Config] | None = None
        self._waits: list[tuple[Callable[[], bool], Done]] = []

    # ---- questions the pooler asks ------------------------------------------------------
    def db_paused(self, dbname: str) -> bool:
        return self.paused or dbname in self.paused_dbs

    def sync_pause(self, pool: Pool) -> None:
        """The one writer of a pool core's `paused` flag: derived from the pause state."""
        pool.core.paused = self.db_paused(pool.name)

    def is_own_user(self, client: ClientConnection) -> bool:
        """PgBouncer's special login: user `pgbouncer` over the Unix socket, same uid as us."""
        creds = peer_credentials(client.transport)
        return client.user == "pgbouncer" and creds is not None and creds[1] == os.getuid()

    def refuse_login(self, dbname: str) -> tuple[str, str] | None:
        """(message, sqlstate) when a new client of dbname must be turned away."""
        if dbname == ADMIN_DB:
            return None
        if self.shutdown_mode is not None:
            return R_SHUTDOWN, "57P01"
        if dbname in self.disabled_dbs:
            return f"database does not allow connections: {dbname}", "08P01"
        return None

    # ---- helpers ------------------------------------------------------------------------
    def _pools(self, dbname: str | None) -> list[Pool]:
        return [p for p in self.pooler.pools.values() if dbname is None or p.name == dbname]

    def _check_db(self, dbname: str, admin_text: str) -> None:
        if dbname == ADMIN_DB:
            raise ControlError(admin_text % dbname)
        if self.pooler.config.database(dbname) is None and not self._pools(dbname):
            raise ControlError(f"no such database: {dbname}")

    def _when(self, done_yet: Callable[[], bool], on_done: Done | None) -> None:
        """Call on_done once done_yet() holds: now, or from the ticker."""
        if done_yet():
            if on_done is not None:
                on_done()
            return
        self._waits.append((done_yet, on_done or (lambda: None)))

    def _busy(self) -> bool:
        return bool(self._waits or self.paused or self.paused_dbs or self.shutdown_mode)

    def tick(self) -> None:
        """Periodic work while something is pending (the janitor calls it): close what a
        pause releases, finish shutdowns, answer waits whose condition now holds."""
        if not self._busy():
            return
        p = self.pooler
        for pool in list(p.pools.values()):
            if pool.core.paused:
                self._close_unused(pool, R_PAUSE)
        if self.shutdown_mode == WAIT_FOR_SERVERS:
            for pool in list(p.pools.values()):
                for client in list(pool.core.waiting):
                    client.fatal(R_SHUTDOWN, "57P01")
            if not any(pool.core.server_count for pool in p.pools.values()):
                self._exit("all servers released")
        elif self.shutdown_mode == WAIT_FOR_CLIENTS and not p.clients:
            self._exit("all clients disconnected")
        waits, self._waits = self._waits, []
        for done_yet, on_done in waits:
            if done_yet():
                on_done()
            else:
                self._waits.append((done_yet, on_done))

    def _close_unused(self, pool: Pool, reason: str) -> None:
        core = pool.core
        for server in list(core.idle) + list(core.used):
            server.disconnect(reason)

    def _exit(self, why: str) -> None:
        sdnotify.stopping()
        if self.stop is not None and not self.stop.is_set():
            log.info("shutdown: %s, exiting", why)
            self.stop.set()

    # ---- PAUSE / RESUME -----------------------------------------------------------------
    def pause(self, dbname: str | None = None, on_done: Done | None = None) -> None:
        """Stop handing out servers; on_done runs once every server of the target is released
        and closed (PgBouncer answers PAUSE only then)."""
        if self.paused or self.suspended:
            raise ControlError("already suspended/paused")
        if dbname is None:
            log.info("PAUSE command issued")
            self.paused = True
        else:
            log.info("PAUSE '%s' command issued", dbname)
            self._check_db(dbname, "cannot pause admin db: %s")
            self.paused_dbs.add(dbname)
        pools = self._pools(dbname)
        for pool in pools:
            self.sync_pause(pool)
            self._close_unused(pool, R_PAUSE)
        self._when(lambda: self._released(dbname), on_done)

    def _released(self, dbname: str | None) -> bool:
        for pool in self._pools(dbname):
            core = pool.core
            self._close_unused(pool, R_PAUSE)
            # NOTE: logins in flight finish first (their clients wait on them), then close.
            if core.active or core.tested or core.login:
                return False
        return True

    # ---- SUSPEND ------------------------------------------------------------------------
    def suspend(self, on_done: Done | None = None) -> None:
        """PgBouncer's SUSPEND: stop reading every client and server socket (console sessions
        excepted; new connections are accepted but not read), and call on_done once every
        socket's outgoing buffer is empty. Links stay as they are; RESUME carries on."""
        if self.paused or self.paused_dbs or self.suspended:
            raise ControlError("already suspended/paused")
        if self.shutdown_mode is not None:
            raise ControlError("pooler is shutting down")
        log.info("SUSPEND command issued")
        self.suspended = True
        timeout = self.pooler.settings.suspend_timeout
        self.suspend_deadline = time.monotonic() + timeout if timeout > 0 else 0.0
        for end in self._socket_ends():
            end.freeze()
        self._when(self._flushed, on_done)

    def _socket_ends(self) -> list[Any]:
        """Every client (console sessions excepted) and server of this pooler."""
        p = self.pooler
        ends: list[Any] = [c for c in p.clients if c.admin is None]
        for pool in p.pools.values():
            ends.extend(pool.core.servers())
        return ends

    def _flushed(self) -> bool:
        """Every outgoing buffer empty; past suspend_timeout, the sockets still holding data
        are dropped (PgBouncer's reason `suspend_timeout`)."""
        late = bool(self.suspend_deadline) and time.monotonic() > self.suspend_deadline
        for end in self._socket_ends():
            t = end.transport
            if t is not None and not t.is_closing() and t.get_write_buffer_size():
                if not late:
                    return False
                end.disconnect("suspend_timeout")
        return True

    def client_connected(self, client: ClientConnection) -> None:
        """A new client while suspended is not read until RESUME (PgBouncer leaves it in the
        listening socket's queue)."""
        if self.suspended:
            # NOTE: on the next turn of the loop: asyncio (3.11) starts reading a new
            # transport only after connection_made, which would undo a pause made in it.
            asyncio.get_running_loop().call_soon(self._freeze_new, client)

    def _freeze_new(self, client: ClientConnection) -> None:
        if self.suspended and client in self.pooler.clients:
            client.freeze()

    def _unsuspend(self) -> None:
        log.info("RESUME command issued")
        self.suspended = False
        for end in self._socket_ends():
            end.thaw()
        for client in list(self.pooler.clients):
            client.thaw()  # NOTE: a client that began its login as a console session

    def resume(self, dbname: str | None = None) -> None:
        p = self.pooler
        if dbname is None and self.suspended:
            self._unsuspend()
            self._answer_waits()
            return
        if dbname is None:
            log.info("RESUME command issued")
            if self.shutdown_mode is not None:
                raise ControlError("pooler is shutting down")
            if not self.paused and not self.paused_dbs:
                raise ControlError("pooler is not paused/suspended")
            self.paused = False
            self.paused_dbs.clear()
        else:
            log.info("RESUME '%s' command issued", dbname)
            if p.config.database(dbname) is None and not self._pools(dbname):
                raise ControlError(f"no such database: {dbname}")
            if dbname not in self.paused_dbs:
                raise ControlError(f"database {dbname} is not paused")
            self.paused_dbs.discard(dbname)
        for pool in self._pools(dbname):
            self.sync_pause(pool)
            if not pool.core.paused:
                self._wake(pool)
        self._answer_waits()

    def _answer_waits(self) -> None:
        # NOTE: a PAUSE (or SUSPEND) still waiting is answered now; there is nothing to wait for.
        waits, self._waits = self._waits, []
        for _, on_done in waits:
            on_done()

    def _wake(self, pool: Pool) -> None:
        """Give idle servers to the clients that queued during the pause, launch the rest."""
        core = pool.core
        for server in list(core.idle):
            if not core.waiting:
                break
            self.pooler.links.server_ready(server)
        if core.waiting:
            self.pooler.launcher.launch_needed(pool)

    # ---- DISABLE / ENABLE ---------------------------------------------------------------
    def disable(self, dbname: str) -> None:
        if not dbname:
            raise ControlError("a database is required")
        log.info("DISABLE '%s' command issued", dbname)
        self._check_db(dbname, "cannot disable admin db: %s")
        self.disabled_dbs.add(dbname)

    def enable(self, dbname: str) -> None:
        if not dbname:
            raise ControlError("a database is required")
        log.info("ENABLE '%s' command issued", dbname)
        self._check_db(dbname, "cannot enable admin db: %s")
        self.disabled_dbs.discard(dbname)

    # ---- RECONNECT / WAIT_CLOSE ---------------------------------------------------------
    def reconnect(self, dbname: str | None = None) -> None:
        """Close every server of the target once it is released; idle ones at once."""
        if dbname is None:
            log.info("RECONNECT command issued")
        else:
            log.info("RECONNECT '%s' command issued", dbname)
            self._check_db(dbname, "cannot reconnect admin db: %s")
        for pool in self._pools(dbname):
            self._tag_dirty(pool)

    def _tag_dirty(self, pool: Pool) -> None:
        for server in list(pool.core.servers()):
            self.pooler.links.retire(server, R_CLOSE_NEEDED)
        for server in list(pool.core.idle):
            server.disconnect(R_CHANGED)

    def wait_close(self, dbname: str | None = None, on_done: Done | None = None) -> None:
        if dbname is None:
            log.info("WAIT_CLOSE command issued")
        else:
            log.info("WAIT_CLOSE '%s' command issued", dbname)
            self._check_db(dbname, "cannot wait in admin db: %s")

        def closed() -> bool:
            return not any(s.close_needed for pool in self._pools(dbname)
                           for s in pool.core.servers())

        self._when(closed, on_done)

    # ---- KILL / KILL_CLIENT -------------------------------------------------------------
    def kill(self, dbname: str | None = None) -> None:
        """Drop every client and server of the target now; it stays paused until RESUME."""
        p = self.pooler
        if self.paused:
            raise ControlError("already suspended/paused")
        if dbname is None:
            log.info("KILL command issued")
            names = {pool.name for pool in p.pools.values()}
            names.update(n for n in p.config.databases if n != "*")
        else:
            log.info("KILL '%s' command issued", dbname)
            self._check_db(dbname, "cannot kill admin db: %s")
            names = {dbname}
        self.paused_dbs.update(names)
        for pool in self._pools(dbname):
            self.sync_pause(pool)
            self.kill_pool(pool, R_KILLED)

    def kill_pool(self, pool: Pool, reason: str) -> None:
        for client in [c for c in self.pooler.clients if c.pool is pool]:
            client.disconnect(reason)
        for server in list(pool.core.servers()):
            server.disconnect(reason)

    def kill_client(self, arg: str) -> None:
        """Disconnect the client whose SHOW CLIENTS `id` (or `ptr`) is arg, and its server."""
        target: Any = None
        try:
            if arg.lower().startswith("0x"):
                ptr = int(arg, 16)
                target = next((c for c in self.pooler.clients if id(c) == ptr), None)
            else:
                ident = int(arg)
                target = next((c for c in self.pooler.clients if c.ident == ident), None)
        except ValueError:
            raise ControlError("invalid client pointer supplied") from None
        if target is None or target not in self.pooler.clients:
            raise ControlError("client not found")
        server = target.server
        target.disconnect(R_KILL_CLIENT)
        if server is not None:
            server.disconnect(R_KILL_CLIENT)

    # ---- SHUTDOWN -----------------------------------------------------------------------
    def shutdown(self, mode: str = IMMEDIATE) -> None:
        p = self.pooler
        if mode == IMMEDIATE:
            log.info("SHUTDOWN command issued")
            self.shutdown_mode = IMMEDIATE
            self._exit("immediate shutdown")
            return
        log.info("SHUTDOWN %s command issued", mode)
        sdnotify.stopping()
        self.shutdown_mode = mode
        if mode == WAIT_FOR_SERVERS:
            self.paused = True
            for pool in p.pools.values():
                self.sync_pause(pool)
        # NOTE: the Unix socket stays, for the admin console only.
        p.listener.close_tcp()

    # ---- RELOAD and SET -----------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the configuration; a bad file keeps the old one (logged). True if applied."""
        reopen_logfile()
        try:
            if self.reload_fn is not None:
                new = self.reload_fn()
            elif self.pooler.config.path:
                new = load_config(self.pooler.config.path)
            else:
                raise ConfigError("no configuration file to reload")
        except (ConfigError, OSError, ValueError) as exc:
            log.error("%s", exc)
            log.error("RELOAD failed, keeping the old configuration")
            return False
        for warning in new.warnings:
            log.warning("%s", warning)
        self.apply_config(new)
        return True

    def apply_config(self, new: Config) -> None:
        """Make new the running configuration: settings, then each existing pool's limits,
        mode and server identity; clients stay connected."""
        p = self.pooler
        old = p.config
        d = diff(old, new)
        for message in d.ignored_messages():
            log.warning("%s", message)
        settings = new.settings
        if d.not_reloadable:
            keep = {name: getattr(old.settings, name) for name in d.not_reloadable}
            settings = dataclasses.replace(settings, **keep)
        new = dataclasses.replace(new, settings=settings)
        p.config = new
        p.settings = settings
        p.apply_settings()
        p.listener.tune()
        p.login.auth.load_files()
        server_tls_changed = tls.server_settings(old.settings) != tls.server_settings(settings)
        try:
            p.client_tls = tls.client_context(settings)
            p.server_tls = tls.server_context(settings)
        except (OSError, ValueError) as exc:
            log.error("RELOAD: TLS settings not applied: %s", exc)
            server_tls_changed = False
        for pool in list(p.pools.values()):
            self._reconfigure(pool)
            if server_tls_changed:
                # NOTE: as PgBouncer: servers made with the old TLS settings are closed (idle
                # ones now, linked ones when released) and new ones use the new settings.
                self._tag_dirty(pool)
        if server_tls_changed and p.pools:
            log.info("server TLS settings changed: reconnecting all server connections")
        if any(db.pool_size == POOL_SIZE_AUTO for db in new.databases.values()):
            # NOTE: pool_size=auto is read from the server again on every RELOAD.
            p.spawn(self._resize_auto_pools())
        for hook in list(p.on_reload):
            hook(new)

    async def _resize_auto_pools(self) -> None:
        p = self.pooler
        p.auto_sizes = await size_auto_pools(p)
        conf = p.config
        for pool in list(p.pools.values()):
            db = conf.database(pool.name)
            if db is not None and \
                    conf.pool_size_for(pool.name, pool.server_user) == POOL_SIZE_AUTO:
                pool.core.limits.pool_size = p.limits_for(db, pool.server_user).pool_size
                self.trim(pool)

    def _reconfigure(self, pool: Pool) -> None:
        conf = self.pooler.config
        db = conf.database(pool.name)
        if db is None or (db.user and db.user != pool.server_user):
            if pool.core.server_count or any(c.pool is pool for c in self.pooler.clients):
                log.info("database %s removed or its user changed: closing its pool",
                         pool.name)
            self.kill_pool(pool, R_KILLED)
            return
        if db.user:
            password = db.password or conf.userlist.get(db.user)
        else:
            password = conf.userlist.get(pool.server_user)
            if password is None:
                password = db.password
        where = (db.host, db.port, db.dbname or pool.name, password)
        if where != (pool.host, pool.port, pool.dbname, pool.server_password):
            pool.host, pool.port, pool.dbname, pool.server_password = where
            self._tag_dirty(pool)
        pool.connect_query = db.connect_query
        lim = pool.core.limits
        new = self.pooler.limits_for(db, pool.server_user)
        # NOTE: an auto-sized pool keeps its size until the server's limits are read again.
        if conf.pool_size_for(pool.name, pool.server_user) != POOL_SIZE_AUTO:
            lim.pool_size = new.pool_size
        lim.reserve_pool_size = new.reserve_pool_size
        lim.reserve_pool_timeout = new.reserve_pool_timeout
        lim.min_pool_size = new.min_pool_size
        lim.server_lifetime = new.server_lifetime
        pool.round_robin = db.load_balance_hosts == "round-robin"
        mode = conf.pool_mode_for(pool.name, pool.server_user)
        if mode != pool.pool_mode:
            log.info("pool %s/%s: pool_mode %s -> %s", pool.name, pool.user, pool.pool_mode,
                     mode)
            pool.pool_mode = mode
            for client in self.pooler.clients:
                # NOTE: a client holding a server keeps its mode until it lets go of it; a
                # session must not lose its server mid-way.
                if client.pool is pool and client.server is None:
                    client.adopt_mode(mode)
        self.trim(pool)

    def trim(self, pool: Pool) -> None:
        """Servers above pool_size + reserve_pool_size: close idle ones now, mark the rest to
        close when released (PgBouncer's check_pool_size)."""
        core = pool.core
        cap = core.limits.pool_size + core.limits.reserve_pool_size
        keep = [s for s in core.servers() if not s.close_needed]
        excess = len(keep) - cap
        if excess <= 0:
            return
        for server in list(core.used) + list(core.idle):
            if excess <= 0:
                return
            server.disconnect(R_TOO_MANY)
            excess -= 1
        for server in list(core.login) + list(core.tested) + list(core.active):
            if excess <= 0:
                return
            if not server.close_needed:
                self.pooler.links.retire(server, R_TOO_MANY)
                excess -= 1

    def set_setting(self, key: str, value: str) -> None:
        """SET key = value on the console; raises ControlError("SET failed") when refused."""
        settings = self.pooler.settings
        fields = {f.name: f for f in dataclasses.fields(settings)}
        name = key.lower()
        f = fields.get(name)
        if f is None or name in NOT_RELOADABLE or name == "conffile":
            log.error("SET: %s", "unknown parameter" if f is None else
                      f"parameter {name} cannot be changed at run time")
            raise ControlError("SET failed")
        try:
            converted = convert(f, value)
        except ValueError as exc:
            log.error("SET %s: %s", name, exc)
            raise ControlError("SET failed") from None
        new_settings = dataclasses.replace(settings, **{name: converted})
        self.apply_config(dataclasses.replace(self.pooler.config, settings=new_settings))

    # ---- signals ------------------------------------------------------------------------
    def signal_handlers(self, stop: asyncio.Event, reload_fn: Callable[[], Config] | None
                        ) -> dict[int, Callable[[], None]]:
        """PgBouncer's signals: HUP reload, INT/TERM safe shutdowns (a second one, or QUIT,
        exits at once), USR1 pause, USR2 resume."""
        self.stop = stop
        self.reload_fn = reload_fn
        return {
            signal.SIGHUP: self._on_hup,
            signal.SIGINT: lambda: self._on_shutdown_signal("SIGINT", WAIT_FOR_SERVERS),
            signal.SIGTERM: lambda: self._on_shutdown_signal("SIGTERM", WAIT_FOR_CLIENTS),
            signal.SIGQUIT: self._on_quit,
            signal.SIGUSR1: self._on_usr1,
            signal.SIGUSR2: self._on_usr2,
        }

    def _on_hup(self) -> None:
        log.info("got SIGHUP, re-reading config")
        sdnotify.reloading()
        self.reload()
        sdnotify.ready()

    def _on_shutdown_signal(self, name: str, mode: str) -> None:
        if self.shutdown_mode is not None:
            log.info("got %s while shutting down, fast exit", name)
            self.shutdown(IMMEDIATE)
            return
        if mode == WAIT_FOR_SERVERS:
            log.info("got %s, shutting down, waiting for all servers connections to be "
                     "released", name)
        else:
            log.info("got %s, shutting down, waiting for all clients to disconnect", name)
        self.shutdown(mode)

    def _on_quit(self) -> None:
        log.info("got SIGQUIT, fast exit")
        self.shutdown(IMMEDIATE)

    def _on_usr1(self) -> None:
        log.info("got SIGUSR1, pausing all activity")
        try:
            self.pause()
        except ControlError as exc:
            log.warning("SIGUSR1 ignored: %s", exc.message)

    def _on_usr2(self) -> None:
        log.info("got SIGUSR2, continuing")
        try:
            self.resume()
        except ControlError as exc:
            log.warning("SIGUSR2 ignored: %s", exc.message)


def wall_clock(monotonic_time: float) -> float:
    """A time.monotonic() stamp as a Unix time, for the admin console's timestamps."""
    return time.time() - (time.monotonic() - monotonic_time)
