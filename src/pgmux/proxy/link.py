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
from typing import TYPE_CHECKING, Final

from pgmux.pool.core import ServerState
from pgmux.protocol import messages as m
from pgmux.protocol.session import (
    CLOSE,
    HAND_ON,
    KEEP,
    LIFETIME_OVER,
    RELEASE,
    RESET,
    STATUS_IDLE,
    after_ready,
    when_free,
)
from pgmux.protocol.session import client_gone as gone_verdict
from pgmux.protocol.sql import TRACKED, set_config_query
from pgmux.protocol.state import (
    EMPTY,
    READBACK,
    SessionState,
    merge_startup,
    parse_readback,
    pin_undo,
    replay,
)
from pgmux.proxy.limits import life_over

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler
    from pgmux.proxy.server import ServerConnection

log = logging.getLogger("pgmux")
monotonic: Final = time.monotonic

# NOTE: module constants for the Enum members the hot path compares (see server.py).
_CLOSED: Final = ServerState.CLOSED
_READY_TAIL: Final = b"\x00\x00\x00\x05" + b"I"  # what a ReadyForQuery(idle) ends with


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
        server.query_start = server.xact_start = 0.0  # NOTE: nothing of a previous client's
        client.server = server
        server.link = client
        if self.pooler.debug:
            log.debug("%s linked to %s", client.prefix(), server.prefix())
        params = client.params
        sql: list[str] = []
        # NOTE: clients with the same startup parameters share one params dict (copied when
        # one changes), so `in_sync` spares the comparison when the server's last client had
        # the same; a client's session state is one immutable object, compared the same way.
        if server.in_sync is not params:
            if server.tracked != params:
                self._sync_params(server, params, sql)
            server.in_sync = params
        want = client.session
        if server.session is not want:
            step = replay(server.session, want)
            if step is not None:
                sql.append(step)
                stats.session_replays += 1
            server.session = want
        if sql:
            query = "; ".join(sql)
            if self.pooler.debug:
                log.debug("%s %s", server.prefix(), query)
            # NOTE: in the same write as the client's first message; a failure ends the
            # client (replay_failed), since its state is not there.
            server.inject(query, after="replay")
        if client.writing_paused:
            server.pause_reading()

    def _sync_params(self, server: ServerConnection, wanted: dict[str, str],
                     sql: list[str]) -> None:
        """The client's reported parameters that differ on this server."""
        diff = {k: v for k, v in wanted.items() if server.tracked.get(k) != v}
        if any(k not in server.params for k in diff):
            # NOTE: a value the server won't report back can't be compared later: reset the
            # server before anyone else gets it.
            server.dirty = True
        if diff:
            sql.append(set_config_query(diff))
            server.assume(diff)

    def replay_failed(self, server: ServerConnection, message: str) -> None:
        """The statements that bring a server to its client's state failed: the client's
        session cannot be what it set, so it ends, and the server (state unknown) closes."""
        client = server.link
        server.disconnect(f"session state replay failed: {message}")
        if client is not None:
            client.fatal(f"pgmux could not restore this session's state on a server: "
                         f"{message}")

    def hand_over(self, client: ClientConnection, server: ServerConnection) -> None:
        """Give a server to a client that waited for it, and send what the client queued."""
        self.pooler.now = monotonic()
        self.bind(client, server, waited=True)
        client.flush_pending(server)

    # ---- the end of a transaction -------------------------------------------------------
    def transaction_end(self, client: ClientConnection, server: ServerConnection,
                        out: bytes) -> None:
        """The server answered everything and is idle; `out` ends with its ReadyForQuery."""
        if server.fatal_sent:
            # NOTE: the backend sent a FATAL error in the same read as its ReadyForQuery
            # (PostgreSQL shutting down): it is going away, so it is never handed on (the
            # next client would lose its query without a word); the client has read why.
            client.send(out)
            server.disconnect("server sent a FATAL error")
            return
        status = server.link_state.status
        if (server.recheck or self.check_always(client)) and status == STATUS_IDLE and \
                client.pool_mode != "session":
            self._read_back(client, server, out)
            return
        self._decide(client, server, out, status)

    def check_always(self, client: ClientConnection) -> bool:
        """session_check = always: read the session back after every transaction."""
        return self.pooler.check_always and client.watch_session

    def _decide(self, client: ClientConnection, server: ServerConnection, out: bytes,
                status: int) -> None:
        d = after_ready(client.pool_mode, status, server.dirty, self.pooler.reset_always,
                        pinned=bool(client.session.pins))
        action = d.action
        if action == RELEASE:
            if out:
                client.send(out)
            self.release(client, server, d.discard)
        elif action == KEEP:
            if out:
                client.send(out)
        else:  # REFUSE
            # NOTE: the client must read the refusal as the answer to its BEGIN, so the
            # ReadyForQuery that ends `out` is replaced by the error.
            client.send(out[:-6])
            server.pool.stats.xact_count += 1
            client.disconnect(d.reason)

    # ---- session state: read back, pin, unpin ----------------------------------------------
    def _read_back(self, client: ClientConnection, server: ServerConnection,
                   out: bytes) -> None:
        """Ask the server what the session holds now; the client's ReadyForQuery waits for
        the answer (readback_done), so nothing it does next can overtake it."""
        if out.endswith(_READY_TAIL) and out[-6:-5] == b"Z":
            client.send(out[:-6])
            server.withheld = out[-6:]
        else:
            client.send(out)
        server.recheck = False
        server.capture = []
        server.pool.stats.session_readbacks += 1
        server.inject(READBACK, after="readback")

    def readback_done(self, server: ServerConnection, rows: list[bytes],
                      error: m.ErrorFields | None) -> None:
        """The read-back answered: the client's state is what the server holds; pin or unpin
        it, bring the server back to the startup settings a RESET removed, answer the client
        and decide as at any transaction's end."""
        client = server.link
        withheld, server.withheld = server.withheld, b""
        if client is None:
            return
        pool = server.pool
        read = None
        if error is None and len(rows) == 1:
            try:
                values = m.parse_data_row(rows[0][5:])
                text = values[0] if values else None
                if text is not None:
                    read = parse_readback(text.decode(), pool.server_user,
                                          self.pooler.tracked_params)
            except ValueError as exc:
                log.warning("%s session read-back not understood: %s", server.prefix(), exc)
        if read is None:
            # NOTE: the state is unknown: the server is reset before anyone else gets it, and
            # the client keeps what it had (as with session_state = reset).
            log.warning("%s session read-back failed: %s", server.prefix(),
                        error.message if error is not None else "no answer")
            server.dirty = True
            self._decide(client, server, withheld, server.link_state.status)
            return
        notice = b""
        if pin_undo(read.pins) and not client.session.pins and not self._may_pin(client):
            notice = self._refuse_pin(client, server, read)
            read = read.movable()
        want = merge_startup(client.startup_state, read)
        self._note_pins(client, client.session.pins, want.pins)
        server.session = read
        step = replay(read, want)
        if step is not None:
            server.inject(step, after="replay")
        client.session = want if want != client.session else client.session
        server.session = client.session
        if notice:
            client.send(notice)
        self._decide(client, server, withheld, server.link_state.status)

    def _pin_cap(self, pool: Pool) -> int:
        """max_pinned_servers, or by default the pool size minus one (at least one): a
        server stays for everyone else. -1: no cap (pool_size 0 is unlimited)."""
        cap = self.pooler.config.pgmux.max_pinned_servers
        if cap:
            return cap
        size = pool.core.limits.pool_size
        return max(1, size - 1) if size else -1

    def _may_pin(self, client: ClientConnection) -> bool:
        """Whether one more of this pool's servers may be pinned."""
        pool = client.pool
        if pool is None:
            return False
        cap = self._pin_cap(pool)
        if cap < 0:
            return True
        pinned = sum(1 for c in pool.core.clients if c.session.pins and c is not client)
        return pinned < cap

    def _refuse_pin(self, client: ClientConnection, server: ServerConnection,
                    read: SessionState) -> bytes:
        """The statement just run would pin one server too many: undo what pins (the client
        sees an error after its statement's result) and say why."""
        undo = pin_undo(read.pins)
        if undo:
            server.inject(undo, after="replay")
        pool = server.pool
        cap = self._pin_cap(pool)
        reasons = ", ".join(read.pins)
        log.warning("%s pin refused (%s): max_pinned_servers %d reached", client.prefix(),
                    reasons, cap)
        return m.error_response(
            f"pgmux: too many pinned server connections in pool {pool.name}/{pool.user} "
            f"(max_pinned_servers = {cap}): {reasons} cannot be kept and was undone",
            "53400")

    def _note_pins(self, client: ClientConnection, before: tuple[str, ...],
                   after: tuple[str, ...]) -> None:
        if before == after:
            return
        if after:
            log.info("%s pinned to its server: %s", client.prefix(), ", ".join(after))
        else:
            log.info("%s unpinned: %s gone", client.prefix(), ", ".join(before))

    def release(self, client: ClientConnection, server: ServerConnection, discard: bool) -> None:
        """Unlink at the end of a transaction and give the server to the next client."""
        now = self.pooler.now
        # NOTE: transactions and queries are counted at their ReadyForQuery (server.ready).
        server.query_start = server.xact_start = 0.0
        client.server = None
        server.link = None
        server.request_time = now
        if self.pooler.debug:
            log.debug("%s released %s", client.prefix(), server.prefix())
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
        now = self.pooler.now
        lim = pool.core.limits
        lifetime = lim.server_lifetime
        over = bool(lifetime) and life_over(now - server.connect_time, lifetime, lim.pool_size,
                                            now - pool.last_lifetime_close)
        d = when_free(server.close_needed or None, over, bool(pool.core.waiting))
        if d.action == CLOSE:
            if d is LIFETIME_OVER:
                pool.last_lifetime_close = now
            server.disconnect(d.reason)
            return
        client = pool.core.release_server(server)
        if client is not None:
            self.hand_over(client, server)

    def reset(self, server: ServerConnection, rollback: bool, discard: bool) -> None:
        """Run ROLLBACK and/or the reset query; the server is ready again when both answer."""
        server.pool.core.mark_tested(server)
        if self.pooler.debug:
            log.debug("%s reset:%s%s", server.prefix(), " ROLLBACK" if rollback else "",
                      " reset query" if discard else "")
        if rollback:
            server.inject("ROLLBACK", after="ready")
        if discard:
            query = self.pooler.settings.server_reset_query or "DISCARD ALL"
            server.inject(query, after="ready")
            if server.stmts is not None:
                server.stmts.invalidate()
            server.forget_unreported()
            server.session = EMPTY
            server.recheck = False

    def reset_done(self, server: ServerConnection) -> None:
        """The injected reset (or connect_query) answered without error."""
        server.dirty = False
        self.server_ready(server)

    def refresh_idle(self, server: ServerConnection) -> None:
        """An idle server still carries its last client's application_name: give it back
        the pool's own (its answer swallowed, the server idle again after it)."""
        name = server.pool.extra_startup.get("application_name", "")
        server.pool.core.mark_tested(server)
        server.inject(set_config_query({"application_name": name}), after="ready")
        server.assume({"application_name": name})

    def check(self, server: ServerConnection, query: str, now: float) -> None:
        """server_check_query on an idle server (the janitor found it idle longer than
        server_check_delay): its answer swallowed, the server handed on after it, or closed
        if it fails. "<empty>" sends an empty query, as PgBouncer 1.24+ does."""
        server.checked_at = now
        server.pool.core.mark_tested(server)
        if self.pooler.debug:
            log.debug("%s P: checking: %s", server.prefix(), query)
        server.inject("" if query == "<empty>" else query, after="ready")

    # ---- session state --------------------------------------------------------------------
    def session_changed(self, server: ServerConnection, kind: int) -> None:
        """The client may have changed its session (protocol/sql.py changes_session): with
        session_state = track, what pgmux can read back is read back after the transaction;
        the rest (and everything in reset mode) resets the server before anyone else."""
        if kind == TRACKED and self.pooler.tracking:
            server.recheck = True
        else:
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
        # NOTE: what cannot move (locks, channels, temp tables) or is unknown (a read-back
        # not done) is discarded; settings and prepared statements stay, the next client's
        # link replays the difference. The mode is the one the client used the server in.
        dirty = server.dirty or server.recheck or bool(server.session.pins)
        d = gone_verdict(ls.idle, bool(server.swallow), ls.status, client.pool_mode,
                                dirty, settings.server_reset_query_always,
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
