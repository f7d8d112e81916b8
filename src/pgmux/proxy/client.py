"""The client side of the proxy: one asyncio.Protocol per client connection, which frames what
the client sends and forwards whole messages to its linked server.

Owns: the client's transport, framer, phase and the messages queued while it has no server
(read no further than PENDING_LIMIT bytes ahead). The login (proxy/login.py) drives its
startup phases through `begin_auth`, `await_welcome` and `ready`; proxy/link.py alone links and
unlinks it (`server`); the pool core alone moves it between ACTIVE and WAITING.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, cast

from pgmux.pool.core import ClientState
from pgmux.protocol import messages as m
from pgmux.protocol.framing import FRONTEND_TYPES, MAX_MESSAGE, Framer
from pgmux.protocol.prepared import ClientStatements, rewrite
from pgmux.protocol.sql import changes_session, changes_session_cached
from pgmux.protocol.state import EMPTY
from pgmux.proxy.flow import FlowControlled

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.pooler import Pooler
    from pgmux.proxy.server import ServerConnection

log = logging.getLogger("pgmux")
monotonic: Final = time.monotonic

# NOTE: a client that keeps sending while it waits for a server is read no further than this
# many bytes ahead (PgBouncer stops reading when its packet buffer is full): a pipelining
# client cannot grow the pooler's memory without bound. Reading resumes once it is served.
PENDING_LIMIT: Final = 65536

_P: Final = m.F_PARSE
_X: Final = m.F_TERMINATE
_STATUS_IDLE: Final = 73  # ord("I"): ReadyForQuery outside a transaction
_NEEDS_SERVER: Final = m.byte_table(m.NEEDS_SERVER)
# What _forward looks at in a message: 1 Query, 2 Parse, 3 Bind, 4 Describe or Close, 5 any
# other message a client may send once logged in; 0 is not a frontend message type.
_KIND: Final = m.byte_table({**{t: 5 for t in b"EHSFXdcf"}, m.F_QUERY: 1, m.F_PARSE: 2,
                             m.F_BIND: 3, m.F_DESCRIBE: 4, m.F_CLOSE: 4})
# The shortest well-formed message of each type whose body _forward reads: Query ("" NUL),
# Parse (name NUL, text NUL, int16), Bind (2 NULs, 3 int16), Describe/Close ('S'|'P', NUL).
_MIN_LEN: Final = m.byte_table({m.F_QUERY: 6, m.F_PARSE: 9, m.F_BIND: 13, m.F_DESCRIBE: 7,
                                m.F_CLOSE: 7})
# CopyData, CopyDone, CopyFail: PostgreSQL ignores them outside COPY (a client may still send
# them after its COPY failed); with no server linked they are dropped.
_COPY_MESSAGE: Final = m.byte_table(b"dcf")
_AUTH_OK: Final = m.auth_ok()
_READY_IDLE: Final = m.ready_for_query(b"I")
# First bytes of a query that may be PREPARE/DEALLOCATE (or start with blanks).
_MAYBE_PREPARE: Final = m.byte_table(b"PpDd \t\r\n(/-")
_S_KIND: Final = ord("S")
# NOTE: disable_pqexec: the framer of a pool client takes this table, so a simple Query ends
# the connection in the framer (no test per message); PgBouncer's reason for it.
_NO_QUERY_TYPES: Final = bytes(0 if t == m.F_QUERY else ok
                               for t, ok in enumerate(FRONTEND_TYPES))
_QUERY_REFUSED: Final = f"invalid frontend message type {m.F_QUERY}"


class Phase(Enum):
    STARTUP = "startup"
    TLS = "tls"           # TLS handshake in progress
    AUTH = "auth"
    WELCOME = "welcome"   # authenticated, waiting for the pool's first server login
    READY = "ready"
    CLOSED = "closed"


# Phases before the client may send queries (client_login_timeout applies).
LOGIN_PHASES: Final = frozenset((Phase.STARTUP, Phase.TLS, Phase.AUTH, Phase.WELCOME))

# NOTE: on Python 3.11 an Enum member lookup goes through EnumType.__getattr__ (4x a plain
# attribute); the hot paths use these module constants.
_READY: Final = Phase.READY
_CLOSED: Final = Phase.CLOSED
_WAITING: Final = ClientState.WAITING


def _invalid(t: int) -> str:
    """PostgreSQL's words for a message it would refuse (08P01)."""
    if not _KIND[t]:
        return f"invalid frontend message type {t}"
    return f"invalid message format (message type {chr(t)!r})"


class ClientConnection(FlowControlled):
    """One client; linked to a server while it has work in flight (or for the session)."""

    # NOTE: slots: attribute access on the hot path is a fixed offset, and an idle client
    # costs less memory.
    __slots__ = ("_startup_buf", "addr", "admin", "auth", "auth_ok_sent", "auth_secret",
                 "cancel_key", "client_state", "close_reason", "connect_time", "dbname", "early",
                 "framer", "ident", "local_addr", "local_port", "params", "pending",
                 "pending_bytes", "pending_needs_server", "phase", "pool", "pool_mode", "pooler",
                 "port", "replication", "request_time", "scram_keys", "server", "session",
                 "sql_prepared", "startup", "startup_state", "stmts", "tls", "tracks_stmts", "user",
                 "wait_notified", "wait_start",
                 "wants_session", "watch_session")

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self.ident = pooler.next_ident()    # SHOW CLIENTS `id`: connect order, never reused
        self.phase = Phase.STARTUP
        self.client_state = ClientState.OUT
        self.wait_start = 0.0
        self.wait_notified = -1.0  # the wait_start of the wait query_wait_notify was sent for
        self.transport: asyncio.Transport | None = None
        # NOTE: max_packet_size bounds every message a client sends (PostgreSQL's 1 GB above).
        self.framer = Framer(min(pooler.settings.max_packet_size, MAX_MESSAGE), FRONTEND_TYPES)
        self._startup_buf: bytearray | None = bytearray()
        self.pool: Pool | None = None
        self.server: ServerConnection | None = None
        self.user = ""
        self.dbname = ""
        self.startup: dict[str, str] = {}
        self.params: dict[str, str] = {}    # client-visible parameters this client wants
        self.cancel_key = (0, 0)
        self.addr = "unix"
        self.port = 0
        self.local_addr = ""
        self.local_port = 0
        now = monotonic()
        self.connect_time = now
        self.request_time = now
        # whole messages (with their offsets) waiting for a server
        # NOTE: None while nothing waits (most of the time): an idle client costs less.
        self.pending: list[tuple[bytes, list[tuple[int, int, int]]]] | None = None
        self.pending_bytes = 0
        self.early: list[bytes] | None = None  # bytes that arrived before the welcome was sent
        self.pending_needs_server = False
        self.watch_session = False          # transaction/statement mode: look for SET & co
        self.pool_mode = "session"
        self.reading_paused = False
        self.frozen = False
        self.writing_paused = False
        self.auth: Any = None
        self.admin: Any = None              # the admin console session, for db "pgbouncer"
        self.close_reason = ""
        self.tls = False
        self.auth_ok_sent = False
        self.scram_keys: Any = None
        self.auth_secret: str | None = None  # looked up with auth_query
        self.stmts: ClientStatements | None = None  # named prepared statements (transaction mode)
        # NOTE: stmts is made at the first named statement (most clients never name one).
        self.tracks_stmts = False
        # NOTE: None until the first SQL PREPARE: an idle client's memory is the pooler's size.
        self.sql_prepared: set[str] | None = None  # names made with SQL PREPARE (transaction mode)
        # NOTE: session state (protocol/state.py): what the client's session holds, and what
        # its startup packet set (RESET returns there); written by login and link.
        self.session = EMPTY
        self.startup_state = EMPTY
        self.wants_session = False  # asked for session pooling for itself alone
        # NOTE: "physical"/"logical": a replication client, its server its own for its whole
        # life (proxy/replication.py); SHOW CLIENTS' `replication` column.
        self.replication = "none"

    def is_logging_in(self) -> bool:
        return self.phase in LOGIN_PHASES

    def prefix(self) -> str:
        return f"C-{id(self):#x}: {self.dbname or '(nodb)'}/{self.user or '(nouser)'}@" \
               f"{self.addr}:{self.port}"

    # ---- asyncio callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # NOTE: uvloop's transports are not asyncio.Transport subclasses; same interface.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.addr, self.port = str(peer[0]), int(peer[1])
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple) and len(sock) >= 2:
            # NOTE: interned: every client of a listener shares one string (a few listeners).
            self.local_addr, self.local_port = sys.intern(str(sock[0])), int(sock[1])
        self.pooler.client_connected(self)

    def data_received(self, data: bytes) -> None:
        if self.phase is not _READY:
            self._not_ready(data)
            return
        self.request_time = self.pooler.now = monotonic()
        try:
            chunk, msgs = self.framer.feed(data)
        except m.ProtocolError as exc:
            if self.pooler.settings.disable_pqexec and str(exc) == _QUERY_REFUSED:
                log.error('%s client used "Query" packet type', self.prefix())
                self.fatal("PQexec disallowed")
                return
            self.fatal(str(exc))
            return
        if not msgs:
            return
        if self.pool is not None:
            self.pool.stats.bytes_received += len(chunk)
        if self.admin is not None:
            self.admin.handle(chunk, msgs)
            return
        server = self.server
        try:
            if server is not None and not self.pending:
                self._forward(server, chunk, msgs)
            else:
                self._queue(chunk, msgs)
        except Exception as exc:  # noqa: BLE001 - a client's input never reaches the loop
            self._broke(exc)

    def _broke(self, exc: Exception) -> None:
        """An unexpected failure while handling this client's input: it ends this client
        alone, and the server it holds, whose state is then unknown, is closed."""
        log.error("%s closing after an internal error: %r", self.prefix(), exc,
                  exc_info=exc)
        self.pooler.links.client_broke(self, self.server, "internal error while handling "
                                       "the client's message")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase is _CLOSED:
            return
        reason = self.close_reason or "client unexpected eof"
        self._closed(reason)

    def peer(self) -> FlowControlled | None:
        return self.server

    # ---- the hot path -------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            self.pooler.post(transport, data)
            pool = self.pool
            if pool is not None:
                pool.stats.bytes_sent += len(data)

    def _forward(self, server: ServerConnection, chunk: bytes, msgs: list[tuple[int, int, int]]
                 ) -> None:
        """Send whole client messages to the linked server (renaming prepared statements
        when the client uses named ones). Malformed input ends this client alone: refused
        before anything of the batch is written, or, found by the rewrite half-way, with the
        server closed (proxy/link.py: client_broke)."""
        terminate = msgs[-1][0] == _X
        if terminate:
            # NOTE: Terminate is the last thing a client sends; it never reaches a pooled server.
            chunk, msgs = chunk[:msgs[-1][1]], msgs[:-1]
        watch = self.watch_session
        stmts = self.stmts
        server_stmts = server.stmts
        # NOTE: the rewrite is needed once the client has named statements or the server owes
        # answers to earlier rewrites; else only when this batch names a statement.
        check_names = named = False
        if server_stmts is not None and (stmts is not None or self.tracks_stmts):
            check_names = True
            named = (stmts is not None and bool(stmts.names)) or bool(server_stmts.pending)
        for t, start, end in msgs:
            kind = _KIND[t]
            if kind == 5:
                continue
            if not kind or end - start < _MIN_LEN[t]:
                # NOTE: nothing of this batch was written: the server is as it was.
                self.pooler.links.client_broke(self, None, _invalid(t))
                return
            if kind == 1:  # Query
                if watch:
                    if not server.dirty:
                        kind = changes_session(chunk[start + 5:end - 1])
                        if kind:
                            self.pooler.links.session_changed(server, kind)
                    if _MAYBE_PREPARE[chunk[start + 5]]:
                        self._note_sql_prepare(chunk, start + 5, end - 1)
                continue
            if kind == 2:  # Parse: statement name, NUL, query text, NUL, ...
                if watch and not server.dirty:
                    kind = self._parse_changes_session(chunk, start, end)
                    if kind:
                        self.pooler.links.session_changed(server, kind)
                if check_names and chunk[start + 5]:
                    named = True
            elif check_names and not named:
                if kind == 3:  # Bind: portal name, NUL, statement name, NUL, ...
                    portal_end = chunk.find(0, start + 5, end)
                    named = portal_end >= 0 and portal_end + 1 < end and \
                        chunk[portal_end + 1] != 0
                else:  # Describe or Close: 'S' or 'P', name, NUL
                    named = chunk[start + 5] == _S_KIND and chunk[start + 6] != 0
        ls = server.link_state
        if ls.client_batch(msgs):
            now = server.query_start = self.pooler.now
            if ls.status == _STATUS_IDLE or not server.xact_start:
                # NOTE: a transaction begins: transaction_timeout counts from here, and its
                # ReadyForQuery with status I ends it (SHOW STATS, server.ready)
                server.xact_start = now
        if named:
            assert server_stmts is not None
            if stmts is None:
                stmts = self.stmts = ClientStatements(self.pooler.prepared_registry)
            try:
                rw = rewrite(chunk, msgs, stmts, server_stmts)
            except m.ProtocolError as exc:
                self.pooler.links.client_broke(self, server, str(exc))
                return
            chunk = rw.data
            if rw.refused is not None:
                self._log_refused(rw.refused)
            if self.pool is not None and (rw.client_parses or rw.server_parses or rw.binds):
                st = self.pool.stats
                st.client_parse_count += rw.client_parses
                st.server_parse_count += rw.server_parses
                st.bind_count += rw.binds
        if chunk:
            server.send(chunk)
        if terminate:
            self.disconnect("client close request", notify=False)

    def _log_refused(self, refused: list[tuple[bytes, str]]) -> None:
        """PgBouncer's log lines for a statement name in use or unknown (the client gets
        PostgreSQL's error for it and stays connected)."""
        for name, sqlstate in refused:
            text = name.decode("utf-8", "replace")
            if sqlstate == "42P05":
                log.error("%s prepared statement '%s' was already prepared", self.prefix(), text)
            else:
                log.error("%s prepared statement '%s' not found", self.prefix(), text)

    def _note_sql_prepare(self, chunk: bytes, start: int, end: int) -> None:
        """Remember SQL-level PREPARE names, to explain their absence in a later transaction."""
        head = chunk[start:start + 24].lstrip()[:10].lower()
        if head.startswith(b"prepare ") or head.startswith(b"deallocate"):
            words = chunk[start:end].decode("utf-8", "replace").replace("(", " ").split()
            if len(words) >= 2:
                name = words[1].strip('"') if words[1].startswith('"') else words[1].lower()
                names = self.sql_prepared
                if words[0].lower() == "prepare":
                    if names is None:
                        names = self.sql_prepared = set()
                    names.add(name)
                elif names is None:
                    return
                elif name == "all":
                    names.clear()
                else:
                    names.discard(name)

    def explain_error(self, msg: bytes) -> bytes | None:
        """A `prepared statement "x" does not exist` for a name this client made with SQL
        PREPARE in an earlier transaction: say why, keeping the SQLSTATE."""
        if b"C26000\x00" not in msg:
            return None
        err = m.parse_error(msg[5:])
        for name in self.sql_prepared or ():
            if err.message == f'prepared statement "{name}" does not exist':
                text = (f'{err.message}: it was made with SQL PREPARE in an earlier '
                        "transaction, and in transaction pooling mode a server's session "
                        "state ends with the transaction (use protocol-level prepared "
                        "statements, which pgmux carries across servers)")
                return m.error_response(text, err.sqlstate, severity=err.severity)
        return None

    def _parse_changes_session(self, chunk: bytes, start: int, end: int) -> int:
        """Does the statement of this Parse (name, NUL, query text, NUL, ...) change session
        state? A malformed one is left for the server to refuse."""
        name_end = chunk.find(0, start + 5, end)
        q_end = chunk.find(0, name_end + 1, end) if name_end >= 0 else -1
        return changes_session_cached(chunk[name_end + 1:q_end]) if q_end >= 0 else 0

    def _queue(self, chunk: bytes, msgs: list[tuple[int, int, int]]) -> None:
        """No server: keep the messages; ask for one when they need it."""
        needs = False
        only_copy = not self.pending
        for t, start, end in msgs:
            if t == _X:
                self.disconnect("client close request", notify=False)
                return
            kind = _KIND[t]
            if not kind or end - start < _MIN_LEN[t]:
                self.pooler.links.client_broke(self, None, _invalid(t))
                return
            if _NEEDS_SERVER[t]:
                needs = True
            if not _COPY_MESSAGE[t]:
                only_copy = False
        if only_copy:
            return  # NOTE: leftovers of a failed COPY, with nothing in flight to belong to
        if needs and not self.pending and self.client_state is not _WAITING:
            # NOTE: the hot path: an idle server is linked at once and the chunk goes straight
            # through, without the pending list.
            server = self.pooler.links.request_server(self)
            if server is not None:
                self._forward(server, chunk, msgs)
                return
            if self.phase is not _CLOSED:
                self._hold(chunk, msgs)
                self.pending_needs_server = True
            return
        self._hold(chunk, msgs)
        if needs:
            self.pending_needs_server = True
        if self.pending_needs_server and self.server is None and \
                self.client_state is not _WAITING:
            server = self.pooler.links.request_server(self)
            if server is not None:
                self.flush_pending(server)

    def _hold(self, chunk: bytes, msgs: list[tuple[int, int, int]]) -> None:
        if self.pending is None:
            self.pending = []
        self.pending.append((chunk, msgs))
        self.pending_bytes += len(chunk)
        if self.pending_bytes > PENDING_LIMIT:
            self.pause_reading()

    def flush_pending(self, server: ServerConnection) -> None:
        """Linked to server: send what waited for it, in order, and read on."""
        pending, self.pending = self.pending, None
        self.pending_bytes = 0
        self.pending_needs_server = False
        if self.reading_paused and not server.writing_paused:
            self.resume_reading()
        try:
            for chunk, msgs in pending or ():
                self._forward(server, chunk, msgs)
                if self.server is not server:
                    return
        except Exception as exc:  # noqa: BLE001 - never into the server's handler
            self._broke(exc)

    def server_param(self, name: str, value: str) -> None:
        """The linked server reported a new value (the client changed it): remember it."""
        params = self.params
        if name in params and params[name] != value:
            # NOTE: copy on write: clients with the same startup parameters share one dict.
            self.params = {**params, name: value}

    def adopt_mode(self, mode: str) -> None:
        """Serve this client in pool mode `mode` from now on (login, or a RELOAD that changed
        the pool's mode while it held no server)."""
        self.pool_mode = mode
        self.watch_session = mode != "session" and \
            self.pooler.config.pgmux.session_state != "off"
        self.framer.types = _NO_QUERY_TYPES if self.pooler.settings.disable_pqexec \
            else FRONTEND_TYPES

    # ---- startup and authentication -----------------------------------------------------
    def start_tls(self, context: ssl.SSLContext) -> None:
        """Upgrade to TLS after answering 'S' to an SSLRequest."""
        if self._startup_buf:
            # NOTE: bytes sent after SSLRequest, before the handshake, could be injected by a
            # man in the middle; PostgreSQL refuses them too.
            self.fatal("received unencrypted data after SSL request")
            return
        self.phase = Phase.TLS

        async def upgrade() -> None:
            loop = asyncio.get_running_loop()
            assert self.transport is not None
            try:
                new = await loop.start_tls(self.transport, self, context, server_side=True,
                                           ssl_handshake_timeout=15)
            except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
                self.disconnect(f"TLS handshake failed: {exc}", notify=False)
                return
            if self.phase is not Phase.TLS or new is None:
                return
            self.transport = new
            self.tls = True
            self.phase = Phase.STARTUP

        self.pooler.spawn(upgrade())

    def _not_ready(self, data: bytes) -> None:
        if self.phase is Phase.STARTUP:
            buf = self._startup_buf
            assert buf is not None
            buf += data
            try:
                while self.phase is Phase.STARTUP:
                    packet = m.take_startup_packet(buf)
                    if packet is None:
                        return
                    self.pooler.login.startup_packet(self, m.parse_startup_packet(packet))
            except m.ProtocolError as exc:
                self.fatal(str(exc))
                return
            if self.phase is not Phase.TLS:
                self._startup_buf = None  # NOTE: the login is past its startup packet
            if buf and self.phase is not _CLOSED:
                rest = bytes(buf)
                buf.clear()
                # NOTE: a client may pipeline its first query behind the startup packet; the
                # login may already be READY (trust, welcomed pool), so dispatch afresh.
                self.data_received(rest)
        elif self.phase is Phase.AUTH:
            try:
                chunk, msgs = self.framer.feed(data)
            except m.ProtocolError as exc:
                self.fatal(str(exc))
                return
            for t, start, end in msgs:
                if self.phase is not Phase.AUTH:
                    # NOTE: a client may pipeline its first query behind the password.
                    rest = chunk[start:]
                    self.framer = Framer(self.framer.max_message, self.framer.types)
                    self.data_received(rest)
                    return
                self.pooler.login.auth_message(self, t, chunk[start + 5:end])
        elif self.phase is Phase.WELCOME:
            if self.early is None:
                self.early = []
            self.early.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > PENDING_LIMIT:
                self.pause_reading()

    def begin_auth(self, auth: Any, greeting: bytes) -> None:
        """The login chose an authentication exchange: send its first message."""
        self.auth = auth
        self.phase = Phase.AUTH
        if greeting:
            assert self.transport is not None
            self.transport.write(greeting)

    def await_welcome(self) -> None:
        """Authenticated; the pool's first server login decides what the welcome says."""
        self.phase = Phase.WELCOME

    def ready(self, parameters: bytes, key: tuple[int, int]) -> None:
        """Send the welcome: AuthenticationOk, the ParameterStatus block, BackendKeyData,
        ReadyForQuery."""
        self.cancel_key = key
        self.phase = Phase.READY
        assert self.transport is not None
        self.transport.write(b"".join((b"" if self.auth_ok_sent else _AUTH_OK, parameters,
                                       m.backend_key_data(*key), _READY_IDLE)))
        early, self.early = self.early, None
        self.pending_bytes = 0
        if self.reading_paused and self.server is None:
            self.resume_reading()
        for data in early or ():
            self.data_received(data)

    # ---- closing ------------------------------------------------------------------------
    def fatal(self, message: str, sqlstate: str = "08P01") -> None:
        """Tell the client why in an ErrorResponse, then close it."""
        self.disconnect(message, sqlstate=sqlstate)

    def error(self, message: str, sqlstate: str = "08P01") -> None:
        """A non-fatal error followed by ReadyForQuery (the connection stays usable)."""
        self.send(m.error_response(message, sqlstate) + m.ready_for_query(b"I"))

    def disconnect(self, reason: str, notify: bool = True, sqlstate: str = "08P01") -> None:
        if self.phase is _CLOSED:
            return
        transport = self.transport
        if notify and self.pooler.settings.log_pooler_errors:
            # NOTE: PgBouncer logs every error it sends a client (log_pooler_errors).
            log.warning("%s pooler error: %s", self.prefix(), reason)
        if transport is not None:
            self.pooler.flush_outbox()  # NOTE: what was posted goes before the close
            if notify:
                transport.write(m.error_response(reason, sqlstate, severity="FATAL"))
            transport.close()
        self._closed(reason)

    def _closed(self, reason: str) -> None:
        self.close_reason = reason
        self.phase = Phase.CLOSED
        self.pooler.client_closed(self, reason)
