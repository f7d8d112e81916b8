"""The server side of the proxy: one asyncio.Protocol per PostgreSQL backend connection, which
logs in, then forwards the backend's bytes to the linked client cut-through.

Owns: the transport, the login exchange (`login_step`), the scanner, what the backend reported
(`params`, `tracked`), and the answers of queries pgmux injected (`swallow`). Its pool state
(`server_state`) is written by the pool core alone, its link and reset state (`link`,
`dirty`, `close_needed`, `in_sync`) by proxy/link.py alone; the login's outcome goes to
proxy/launch.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from typing import TYPE_CHECKING, Final, cast

from pgmux.auth import ANSWER_FAILED, AuthError, ServerLogin
from pgmux.pool.core import ServerState
from pgmux.protocol import messages as m
from pgmux.protocol.framing import BackendScanner, Framer
from pgmux.protocol.prepared import ANSWER_TYPES, ServerStatements
from pgmux.protocol.session import LinkState
from pgmux.protocol.state import EMPTY, canonical_values
from pgmux.proxy import tls
from pgmux.proxy.flow import FlowControlled
from pgmux.proxy.sockopts import tune_server

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
monotonic: Final = time.monotonic

_Z: Final = m.B_READY
_S: Final = m.B_PARAMETER_STATUS
_G: Final = m.B_COPY_IN
_E: Final = m.B_ERROR
_N: Final = m.B_NOTICE
_A: Final = m.B_NOTIFICATION
_D: Final = m.B_DATA_ROW
_ANSWER: Final = m.byte_table(ANSWER_TYPES)
_IDLE: Final = 73  # ReadyForQuery status 'I': no transaction open


def transient_error(sqlstate: str) -> bool:
    """A server's login error that passes by itself: insufficient resources (53xxx, such as
    53300 too many connections) or the server starting or shutting down (57P01-57P03)."""
    return sqlstate.startswith("53") or sqlstate in ("57P01", "57P02", "57P03")


class LoginStep(Enum):
    """Where a server in state LOGIN is in its login."""

    CONNECTING = "connecting"
    TLS = "tls"               # SSLRequest sent, or handshake in progress
    STARTUP = "startup"       # startup packet sent: authentication, parameters, key


# NOTE: on Python 3.11 an Enum member lookup goes through EnumType.__getattr__ (4x a plain
# attribute); the hot path uses these module constants.
_ACTIVE: Final = ServerState.ACTIVE
_LOGIN: Final = ServerState.LOGIN
_CLOSED: Final = ServerState.CLOSED


class ServerConnection(FlowControlled):
    """One connection to PostgreSQL, owned by a pool."""

    # NOTE: slots: attribute access on the hot path is a fixed offset.
    __slots__ = ("_login_auth", "_login_framer", "after_swallow", "asked", "capture",
                 "checked_at", "close_needed", "close_reason", "connect_time", "dirty",
                 "fatal_sent", "ident", "in_sync", "key",
                 "link", "link_state", "link_time", "local_port", "login_step", "params", "pid",
                 "pool", "pooler", "query_start", "recheck", "request_time", "scanner",
                 "server_state", "session", "stmts", "swallow", "swallow_error", "tls",
                 "tracked", "withheld", "xact_start", "host", "port")

    def __init__(self, pooler: Pooler, pool: Pool) -> None:
        self.pooler = pooler
        self.pool = pool
        self.ident = pooler.next_ident()  # SHOW SERVERS `id`
        self.server_state = ServerState.CLOSED  # NOTE: the pool core's to write
        self.login_step = LoginStep.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.link: ClientConnection | None = None
        self.params: dict[str, str] = {}
        self.tracked: dict[str, str] = {}
        # NOTE: reported parameters pgmux set with set_config, until the injected query is
        # done: then what the server made of them is known (pool.canonical).
        self.asked: dict[str, str] | None = None
        # NOTE: a client params dict `tracked` was last found to agree with; None after any
        # change to `tracked`.
        self.in_sync: dict[str, str] | None = None
        self.pid = 0
        self.key = 0
        now = monotonic()
        self.connect_time = now
        self.request_time = now   # last time it was handed out or used
        self.link_time = now
        self.query_start = 0.0  # when the query now running began; 0 when none runs
        # NOTE: when the transaction now open began (transaction_timeout, SHOW STATS); 0 when
        # none is open
        self.xact_start = 0.0
        self.checked_at = 0.0     # last server_check_query while idle
        # NOTE: the host (of a host= list) and port this server connects to, chosen by
        # proxy/launch.py; its log prefix and cancel requests use them.
        self.host = pool.host
        self.port = pool.port
        self.link_state = LinkState()
        # NOTE: with prepared statements tracked, their answers ('1', '3', 'E') are watched too.
        self.stmts: ServerStatements | None = pooler.new_server_statements(pool)
        self.scanner = BackendScanner(bytes((_Z, _S, _G, _E)) +
                                      (ANSWER_TYPES if self.stmts else b""))
        self.fatal_sent = False   # the backend sent the client a FATAL error of its own
        self.swallow = 0          # ReadyForQuery answers of injected queries still to drop
        self.swallow_error: m.ErrorFields | None = None
        self.after_swallow: str | None = None  # what to do when swallowing ends unlinked
        self.dirty = False        # untracked session state: reset before anyone else gets it
        self.recheck = False      # the client may have changed tracked state: read it back
        self.session = EMPTY      # the session state this server holds (protocol/state.py)
        self.capture: list[bytes] | None = None  # DataRows of an injected read-back
        self.withheld = b""       # the client's ReadyForQuery, held until a read-back is done
        self.close_needed = ""    # why to close it once it is free; "" to keep it
        self.close_reason = ""    # why it was closed
        self.writing_paused = False
        self.reading_paused = False
        self.frozen = False
        self._login_framer: Framer | None = Framer()
        self._login_auth: object | None = None
        self.local_port = 0
        self.tls = False

    # ---- naming for logs ----------------------------------------------------------------
    def prefix(self) -> str:
        p = self.pool
        return (f"S-{id(self):#x}: {p.name}/{p.server_user}@{self.host or 'unix'}:{self.port}")

    # ---- asyncio callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # NOTE: uvloop's transports are not asyncio.Transport subclasses; same interface.
        self.transport = cast(asyncio.Transport, transport)
        if self.server_state is _CLOSED:
            self.transport.abort()  # NOTE: given up on (connect timeout) while connecting
            return
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple):
            self.local_port = int(sock[1])
        if self.local_port:
            tune_server(transport, self.pooler.settings)
        if self.pooler.server_tls is not None and self.local_port:
            self.login_step = LoginStep.TLS
            self.transport.write(m.ssl_request())
        else:
            self._send_startup()
        if self.pooler.settings.log_connections:
            log.info("%s new connection to server (from %s)", self.prefix(),
                     f"127.0.0.1:{self.local_port}" if self.local_port else "unix")

    def data_received(self, data: bytes) -> None:
        state = self.server_state
        if state is not _ACTIVE:
            if state is _LOGIN:
                self._login_received(data)
                return
            if state is _CLOSED:
                return
        self.pooler.now = monotonic()
        try:
            out, events = self.scanner.feed(data)
        except m.ProtocolError as exc:
            self.disconnect(f"server sent an invalid message: {exc}")
            return
        client = self.link
        release = False
        if events:
            if self.swallow:
                events = self._drop_injected(events)
                if not self.swallow and self.after_swallow is not None:
                    self._swallow_done()  # NOTE: may unlink (a reset or read-back is done)
                    client = self.link
                    if self.server_state is _CLOSED:
                        return
                if client is None:
                    self._unlinked_events(events)
                    return
                out, release = self._events(b"", events, client, whole=True)
            elif (self.stmts is not None and self.stmts.pending) or (
                    client is not None and client.sql_prepared):
                out, release = self._events(out, events, client, whole=False)
            else:
                # NOTE: the hot path: nothing to rewrite; usually one ReadyForQuery.
                for t, msg, _ in events:
                    if t == _Z:
                        release = self.ready(msg[5])
                    else:
                        self._note(t, msg)
        if client is None:
            if out and sum(len(msg) for t, msg, _ in events if t == _S) != len(out):
                # NOTE: an idle server may report new parameter values (PostgreSQL reloaded
                # its configuration); anything else it says unasked means it is going away.
                self.disconnect("idle server got dirty")
            return
        if release and self.scanner.at_boundary and self.link is client:
            self.pooler.links.transaction_end(client, self, out)
        elif out:
            client.send(out)

    def _unlinked_events(self, events: list[tuple[int, bytes, int]]) -> None:
        """What an unlinked server said after the answers pgmux swallowed (a reset running)."""
        for t, msg, _ in events:
            if t == _S:
                self._param(msg)
            elif t != _N:
                self.disconnect("idle server got dirty")
                return

    def _events(self, out: bytes, events: list[tuple[int, bytes, int]],
                client: ClientConnection | None, whole: bool) -> tuple[bytes, bool]:
        """The general case of data_received: answers to rewritten prepared-statement messages
        are replaced, errors explained, and in whole mode (after injected queries) the kept
        messages are joined. Returns the bytes for the client and whether the link may be
        released."""
        stmts = self.stmts
        release = False
        pieces: list[bytes] | None = [] if whole else None
        last = 0
        for t, msg, pos in events:
            reply = None
            if stmts is not None and stmts.pending and _ANSWER[t]:
                reply = stmts.feed(t, msg)
            if t == _E and client is not None and client.sql_prepared:
                reply = client.explain_error(msg if reply is None else reply) or reply
            if reply is not None:
                if pieces is None:
                    pieces = []
                if not whole:
                    pieces.append(out[last:pos])
                    pieces.append(reply)
                    last = pos + len(msg)
                msg = reply
            if whole:
                assert pieces is not None
                pieces.append(msg)
            if t == _Z:
                release = self.ready(msg[5])
            else:
                self._note(t, msg)
        if pieces is not None:
            if not whole:
                pieces.append(out[last:])
            out = b"".join(pieces)
        return out, release

    def ready(self, status: int) -> bool:
        """ReadyForQuery from the server, counted as PgBouncer counts: a query per
        ReadyForQuery, its time since the query began; a transaction when the status is back
        to idle, its time (idle in transaction included) since it began. True when the link
        may be released."""
        stats = self.pool.stats
        stats.query_count += 1
        now = self.pooler.now
        release = self.link_state.ready(status)
        if self.query_start:
            stats.query_time += int((now - self.query_start) * 1_000_000)
            # NOTE: a pipelined query still outstanding runs from now (query_timeout too).
            self.query_start = now if self.link_state.outstanding else 0.0
        if status == _IDLE and self.xact_start:
            stats.xact_count += 1
            stats.xact_time += int((now - self.xact_start) * 1_000_000)
            self.xact_start = 0.0
        return release

    def _note(self, t: int, msg: bytes) -> None:
        """What a watched message other than ReadyForQuery tells about this server."""
        if t == _S:
            self._param(msg)
        elif t == _G:
            self.link_state.copy_in_started()
        elif t == _E and msg.startswith(b"SFATAL\x00", 5):
            self.fatal_sent = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server_state is _CLOSED:
            return
        reason = self.close_reason or ("server conn crashed?" if exc is None else
                                       f"server conn crashed? ({exc})")
        self._closed(reason)

    def peer(self) -> FlowControlled | None:
        return self.link

    # ---- reading and writing ------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.pooler.post(self.transport, data)

    # ---- injected queries whose answers the client must not see --------------------------
    def inject(self, sql: str, after: str | None = None) -> None:
        """Send a simple query and drop its answer (ParameterStatus is still recorded). When
        every injected answer is in: after="ready", the server is handed on (proxy/link.py:
        reset_done); "replay", a failure ends the linked client (replay_failed); "readback",
        the captured DataRows go to readback_done."""
        self.swallow += 1
        self.scanner.whole = True
        self.after_swallow = after
        self.send(m.query(sql))

    def assume(self, values: dict[str, str]) -> None:
        """Values just sent with set_config: taken as applied, so a quick re-link does not
        send them twice; the server's ParameterStatus answers overwrite them with the
        canonical spelling."""
        self.tracked.update(values)
        self.in_sync = None
        reported = {k: v for k, v in values.items() if k in self.params}
        if reported:
            if self.asked is None:
                self.asked = reported
            else:
                self.asked.update(reported)

    def _drop_injected(self, events: list[tuple[int, bytes, int]]
                       ) -> list[tuple[int, bytes, int]]:
        """Drop messages until the injected queries' ReadyForQuery; keep what follows."""
        keep: list[tuple[int, bytes, int]] = []
        for t, msg, pos in events:
            if self.swallow:
                if t == _Z:
                    self.swallow -= 1
                    if not self.swallow:
                        self.scanner.whole = False
                        if self.asked is not None:
                            self._learn_canonical()
                elif t == _S:
                    self._param(msg)
                elif t == _D and self.capture is not None:
                    self.capture.append(msg)
                elif t == _E:
                    self.swallow_error = m.parse_error(msg[5:])
                    log.warning("%s injected query failed: %s", self.prefix(), self.swallow_error)
                continue
            keep.append((t, msg, pos))
        return keep

    def _learn_canonical(self) -> None:
        """The SETs pgmux sent are done: the values the server holds now are the canonical
        spellings of the asked ones, for this server, its client and the pool."""
        asked, self.asked = self.asked, None
        if asked is None or self.swallow_error is not None:
            return
        learnt = canonical_values(asked, self.params)
        self.pool.learn_canonical(learnt)
        link = self.link
        for (name, _), value in learnt.items():
            self.tracked[name] = value
            if link is not None:
                link.server_param(name, value)
        self.in_sync = None

    def _swallow_done(self) -> None:
        action, self.after_swallow = self.after_swallow, None
        error, self.swallow_error = self.swallow_error, None
        links = self.pooler.links
        if action == "readback":
            rows, self.capture = self.capture or [], None
            links.readback_done(self, rows, error)
        elif action == "replay":
            if error is not None:
                links.replay_failed(self, error.message)
        elif error is not None:
            self.disconnect(f"reset query failed: {error.message}")
        elif action == "ready":
            self.link_state.reset()
            links.reset_done(self)

    def forget_unreported(self) -> None:
        """After a reset, values this server never reported are unknown again."""
        for name in [k for k in self.tracked if k not in self.params]:
            del self.tracked[name]
        self.in_sync = None

    def _param(self, msg: bytes) -> None:
        name, value = m.parse_parameter_status(msg[5:])
        self.params[name] = value
        if name in self.pooler.tracked_params:
            self.tracked[name] = value
            self.in_sync = None
            if self.link is not None:
                self.link.server_param(name, value)

    # ---- login --------------------------------------------------------------------------
    def _send_startup(self) -> None:
        self.login_step = LoginStep.STARTUP
        self.send(m.startup_message(self.pool.startup_params()))

    def _tls_answer(self, data: bytes) -> None:
        """The server's one-byte answer to SSLRequest."""
        mode = self.pooler.settings.server_tls_sslmode
        answer = tls.ssl_answer(data, mode)
        if answer == tls.SSL_PLAIN:
            self._send_startup()
            return
        if answer != tls.SSL_UPGRADE:
            self.login_failed(answer)
            return
        context = self.pooler.server_tls
        assert context is not None and self.transport is not None
        transport = self.transport
        hostname = self.host if mode == "verify-full" else None

        async def upgrade() -> None:
            new, error = await tls.upgrade_server(transport, self, context, hostname)
            if error:
                self.login_failed(error)
                return
            if self.server_state is not _LOGIN or new is None:
                return
            self.transport = new
            self.tls = True
            self._send_startup()

        self.pooler.spawn(upgrade())

    def _login_received(self, data: bytes) -> None:
        if self.login_step is LoginStep.TLS:
            self._tls_answer(data)
            return
        framer = self._login_framer
        if framer is None:
            return
        rest: bytes | None = None
        try:
            chunk, msgs = framer.feed(data)
            for t, start, end in msgs:
                body = chunk[start + 5:end]
                if t == m.B_AUTH:
                    self._auth(body)
                elif t == m.B_PARAMETER_STATUS:
                    name, value = m.parse_parameter_status(body)
                    self.params[name] = value
                elif t == m.B_BACKEND_KEY:
                    self.pid, self.key = m.INT32.unpack_from(body, 0)[0], m.INT32.unpack_from(
                        body, 4)[0]
                elif t == m.B_ERROR:
                    err = m.parse_error(body)
                    self.login_failed(err.message, sqlstate=err.sqlstate,
                                      transient=transient_error(err.sqlstate))
                    return
                elif t == m.B_READY:
                    rest = chunk[end:] + bytes(framer._buf)
                    break
                # NoticeResponse and NegotiateProtocolVersion during login are ignored.
        except AuthError as exc:
            # NOTE: pgmux cannot answer this server (a password of the wrong kind, a method
            # it does not speak): PgBouncer's log line, and its text for the clients.
            log.warning("%s %s", self.prefix(), exc)
            self.login_failed(exc.client_message or ANSWER_FAILED)
            return
        except Exception as exc:  # noqa: BLE001 - what the server sends ends this login only
            self.login_failed(f"server login failed: {exc}")
            return
        if rest is None:
            return
        # NOTE: outside the handler above: the login's outcome serves waiting clients, and a
        # client's failure must never pass for this server's.
        self._login_done()
        if rest:
            self.data_received(rest)

    def _auth(self, body: bytes) -> None:
        if self._login_auth is None:
            self._login_auth = ServerLogin(self.pool.server_user, self.pool.server_password,
                                           scram_keys=self.pool.scram_keys)
        assert isinstance(self._login_auth, ServerLogin)
        reply = self._login_auth.receive(body)
        if reply:
            self.send(reply)

    def _login_done(self) -> None:
        self._login_framer = None
        self._login_auth = None
        tracked = self.pooler.tracked_params
        self.tracked = {k: v for k, v in self.params.items() if k in tracked}
        self.in_sync = None
        connect_query = self.pool.connect_query
        if connect_query:
            self.inject(connect_query, after="ready")
        self.pooler.launcher.logged_in(self, ready=not connect_query)

    def login_failed(self, message: str, sqlstate: str = "08P01", transient: bool = False
                     ) -> None:
        """The login failed; transient when the server was unreachable or not ready yet."""
        if self.server_state is not _LOGIN:
            return
        self.close_reason = message
        if self.transport is not None:
            self.transport.abort()
        self.pooler.launcher.login_failed(self, message, sqlstate, transient)

    # ---- closing ------------------------------------------------------------------------
    def disconnect(self, reason: str, notify: bool = True) -> None:
        """Close this server; every close carries a reason."""
        if self.server_state is _CLOSED:
            return
        self.close_reason = reason
        transport = self.transport
        if transport is not None:
            self.pooler.flush_outbox()  # NOTE: what was posted goes before the close
            if self.server_state is not _LOGIN and self.link is None:
                transport.write(m.terminate())
                transport.close()
            else:
                transport.abort()
        self._closed(reason)

    def _closed(self, reason: str) -> None:
        if self.server_state is _LOGIN:
            # NOTE: the connection went away during the login: the server restarts or is
            # gone; worth retrying soon.
            self.pooler.launcher.login_failed(self, reason or "server login failed", "08P01",
                                              transient=True)
            return
        self.pooler.links.server_gone(self, reason)
