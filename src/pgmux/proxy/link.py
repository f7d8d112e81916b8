"""The only owner of the client<->server binding: find a server for a client, bind them,
bring the server to the client's parameters, release at the end of a transaction, reset,
and what happens to one side when the other goes.

Every verdict comes from the pure functions of protocol/session.py (after_ready, client_gone,
when_free); this module carries them out. It alone writes `client.server`, `server.link` and
the server's reset state (`dirty`, `close_needed`, `in_sync`, `link_time`, `request_time`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pgmux.pool.core import ServerState
from pgmux.protocol import session
from pgmux.protocol.session import CLOSE, HAND_ON, KEEP, RELEASE, RESET
from pgmux.protocol.sql import set_config_query

if TYPE_CHECKING:
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler
    from pgmux.proxy.server import ServerConnection

log = logging.getLogger("pgmux")
monotonic = time.monotonic

# NOTE: module constants for the Enum members the hot path compares (see server.py).
_CLOSED = ServerState.CLOSED


class Links:
    """Binds clients to servers for one pooler."""

    __slots__ = ("pooler",)

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler

    # ---- finding a server ---------------------------------------------------------------
    def request_server(self, client: ClientConnection) -> ServerConnection | None:
        """find_server: link an idle server now and return it (the caller sends what the
        client has), or queue the client, launch if allowed, and return None."""
        linked = client.server
        if linked is not None:
            return linked
        pool = client.pool
        assert pool is not None
        pooler = self.pooler
        if pool.last_login_failed and pooler.launcher.fast_fail(client, pool):
            return None
        server: ServerConnection | None = pool.core.find_server(client, pooler.now)
        if server is not None:
            self.bind(client, server, waited=False)
            return server
        pooler.launcher.launch_needed(pool)
        return None

    def bind(self, client: ClientConnection, server: ServerConnection, waited: bool) -> None:
        """Link bookkeeping: counters, times, the two pointers, the client's parameters."""
        now = self.pooler.now
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
                self._sync_params(server, params)
            server.in_sync = params
        if client.writing_paused:
            server.pause_reading()

    def _sync_params(self, server: ServerConnection, wanted: dict[str, str]) -> None:
        """Apply a client's parameters that differ on this server, in the same write as its
        first message (the answers are swallowed)."""
        diff = {k: v for k, v in wanted.items() if server.tracked.get(k) != v}
        if any(k not in server.params for k in diff):
            # NOTE: a value the server won't report back can't be compared later: reset the
            # server before anyone else gets it.
            server.dirty = True
        if diff:
            server.inject(set_config_query(diff))
            server.assume(diff)

    def hand_over(self, client: ClientConnection, server: ServerConnection) -> None:
        """Give a server to a client that waited for it, and send what the client queued."""
        self.pooler.now = monotonic()
        self.bind(client, server, waited=True)
        client.flush_pending(server)

    # ---- the end of a transaction -------------------------------------------------------
    def transaction_end(self, client: ClientConnection, server: ServerConnection,
                        out: bytes) -> None:
        """The server answered everything and is idle; `out` ends with its ReadyForQuery."""
        d = session.after_ready(client.pool_mode, server.link_state.status, server.dirty,
                                self.pooler.settings.server_reset_query_always)
        action = d.action
        if action == RELEASE:
            client.send(out)
            self.release(client, server, d.discard)
        elif action == KEEP:
            client.send(out)
        else:  # REFUSE
            # NOTE: the client must read the refusal as the answer to its BEGIN, so the
            # ReadyForQuery that ends `out` is replaced by the error.
            client.send(out[:-6])
            server.pool.stats.xact_count += 1
            client.disconnect(d.reason)

    def release(self, client: ClientConnection, server: ServerConnection, discard: bool) -> None:
        """Unlink at the end of a transaction and give the server to the next client."""
        now = self.pooler.now
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
        if discard:
            self.reset(server, rollback=False, discard=True)
        else:
            self.server_ready(server)

    def server_ready(self, server: ServerConnection) -> None:
        """A server is clean and free: close it if it must go, else hand it on."""
        pool = server.pool
        if server.server_state is _CLOSED:
            return
        lifetime = self.pooler.settings.server_lifetime
        d = session.when_free(server.close_needed or None,
                              bool(lifetime) and self.pooler.now - server.connect_time >= lifetime,
                              bool(pool.core.waiting))
        if d.action == CLOSE:
            server.disconnect(d.reason)
            return
        client = pool.core.release_server(server)
        if client is not None:
            self.hand_over(client, server)

    def reset(self, server: ServerConnection, rollback: bool, discard: bool) -> None:
        """Run ROLLBACK and/or the reset query; the server is ready again when both answer."""
        server.pool.core.mark_tested(server)
        if rollback:
            server.inject("ROLLBACK", after="ready")
        if discard:
            query = self.pooler.settings.server_reset_query or "DISCARD ALL"
            server.inject(query, after="ready")
            if server.stmts is not None:
                server.stmts.invalidate()
            server.forget_unreported()

    def reset_done(self, server: ServerConnection) -> None:
        """The injected reset (or connect_query) answered without error."""
        server.dirty = False
        self.server_ready(server)

    # ---- session state --------------------------------------------------------------------
    def session_changed(self, server: ServerConnection) -> None:
        """The client changed session state on its server (SET, temp tables, ...): the server
        is reset before anyone else gets it."""
        server.dirty = True

    def retire(self, server: ServerConnection, reason: str) -> None:
        """Close this server as soon as it is free (RECONNECT, a changed database, a pool over
        its size)."""
        server.close_needed = reason

    # ---- one side goes --------------------------------------------------------------------
    def client_gone(self, client: ClientConnection) -> None:
        """The client closed: leave its pool, and make its server clean for the next one, or
        close it."""
        pool = client.pool
        if pool is None:
            return
        server = client.server
        pool.core.remove_client(client)
        if server is None:
            return
        client.server = None
        server.link = None
        if server.server_state is _CLOSED:
            return
        ls = server.link_state
        settings = self.pooler.settings
        d = session.client_gone(ls.idle, bool(server.swallow), ls.status, server.pool.pool_mode,
                                server.dirty, settings.server_reset_query_always,
                                settings.server_reset_query)
        if d.action == CLOSE:
            server.disconnect(d.reason)
            return
        server.resume_reading()
        if d.action == RESET:
            self.reset(server, d.rollback, d.discard)
        else:
            assert d.action == HAND_ON
            self.server_ready(server)

    def client_broke(self, client: ClientConnection, server: ServerConnection | None,
                     reason: str) -> None:
        """The client's input broke the protocol half-way through a batch: what its server
        was told is unknown, so the server is closed, and the client ends with the reason."""
        if server is not None and client.server is server:
            client.server = None
            server.link = None
            server.disconnect(f"client sent an invalid message: {reason}")
        if self.pooler.settings.log_pooler_errors:
            log.warning("%s pooler error: %s", client.prefix(), reason)
        client.fatal(reason)

    def server_gone(self, server: ServerConnection, reason: str) -> None:
        """The server closed: leave its pool; its client, if any, goes with it."""
        pool = server.pool
        pool.core.remove_server(server)
        if self.pooler.budget is not None:
            self.pooler.budget.release(server)
        if self.pooler.settings.log_disconnections:
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
            self.pooler.launcher.launch_needed(pool)
