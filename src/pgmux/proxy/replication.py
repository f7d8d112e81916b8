"""Replication connections (startup parameter `replication`): each such client gets a server
connection of its own, logged in with the client's `replication` value and startup parameters,
and the two are joined as a byte pipe until either ends.

As PgBouncer 1.23+: a replication client is served in session mode whatever the pool's mode, and
its server is never pooled: it is not handed to any other client and closes with its client (and
the client with it). Whether the role may replicate is the server's to say: its refusal reaches
the client as the server sent it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final, cast

from pgmux.auth import ANSWER_FAILED, AuthError, ServerLogin
from pgmux.protocol import messages as m
from pgmux.protocol.framing import Framer
from pgmux.proxy import limits, tls
from pgmux.proxy.client import Phase
from pgmux.proxy.launch import open_server

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
monotonic: Final = time.monotonic

# Startup parameters that are pgmux's to set on the server login, not the client's.
_OWN_PARAMS: Final = frozenset(("user", "database", "replication"))
_TERMINATE: Final = m.terminate()


def server_startup(pool_params: dict[str, str], client_params: dict[str, str]) -> dict[str, str]:
    """The startup parameters of a replication server login: the pool's (user, database and
    its [databases] settings), then every parameter the client sent (options included, which
    a walsender may need), then `replication` exactly as the client spelt it."""
    params = dict(pool_params)
    for key, value in client_params.items():
        if key.lower() not in _OWN_PARAMS:
            params[key] = value
    params["replication"] = client_params.get("replication", "")
    return params


class ReplicationLink:
    """One replication client and its own server connection."""

    def __init__(self, pooler: Pooler, client: ClientConnection, pool: Pool,
                 params: dict[str, str]) -> None:
        self.pooler = pooler
        self.client = client
        self.pool = pool
        self.server = _ServerSide(self)
        self.client_side = _ClientSide(self)
        self.startup = server_startup(pool.startup_params(), params)
        self.closed = False
        self.logged_in = False

    def prefix(self) -> str:
        p = self.pool
        host = self.server.host or "unix"
        return f"S-{id(self.server):#x}: {p.name}/{p.server_user}@{host}:{p.port}"

    def start(self) -> None:
        self.pooler.spawn(self._connect())

    async def _connect(self) -> None:
        """Connect to the pool's host, or with host=a,b,c to the one load_balance_hosts
        picks, moving to the next host when a connect fails (each host tried once)."""
        pool = self.pool
        hosts, pool.host_counter = limits.hosts_in_order(pool.host, pool.host_counter,
                                                         pool.round_robin, pool.host_failed)
        reason = ""
        for host in hosts:
            self.server.host = host
            reason = await open_server(self.server, host, pool.port, self.pooler.settings)
            if not reason or self.closed:
                return
        self.login_failed(reason)

    # ---- the login's outcome ---------------------------------------------------------------
    def login_failed(self, message: str, raw_error: bytes = b"") -> None:
        """The server login failed: the client gets the server's own ErrorResponse when there
        is one (a role without REPLICATION, no replication line in pg_hba.conf), else
        PgBouncer's kind of pooler error."""
        if self.closed:
            return
        self.closed = True
        log.warning("%s closing because: %s (age=%ds)", self.prefix(), message,
                    int(monotonic() - self.server.connect_time))
        self.server.close()
        client = self.client
        if raw_error and client.transport is not None:
            self.pooler.flush_outbox()
            client.transport.write(raw_error)
            client.disconnect(message, notify=False)
        else:
            client.fatal(message)

    def login_done(self, params: dict[str, str], rest: bytes) -> None:
        """The server is ready: welcome the client with what the server reported, join the
        two, and pass on what either side already sent."""
        client = self.client
        transport = client.transport
        if self.closed or transport is None:
            self.close("client went away during the replication login")
            return
        self.logged_in = True
        # NOTE: from now on the client's bytes go to the pipe, not to the pooling code.
        transport.set_protocol(self.client_side)
        self.client_side.transport = transport
        client.phase = Phase.READY
        client.params = {k: v for k, v in params.items() if k in self.pooler.tracked_params}
        key = self.pooler.login.new_key(client)
        client.cancel_key = key
        transport.write(b"".join((b"" if client.auth_ok_sent else m.auth_ok(),
                                  m.parameter_status_block(params), m.backend_key_data(*key),
                                  m.ready_for_query(b"I"))))
        early, client.early = client.early, None
        client.pending_bytes = 0
        if client.reading_paused:
            client.reading_paused = False
            transport.resume_reading()
        for data in early or ():
            self.client_side.data_received(data)
        if rest:
            self.server.data_received(rest)

    # ---- the pipe ------------------------------------------------------------------------
    def to_server(self, data: bytes) -> None:
        self.client.request_time = monotonic()
        self.pool.stats.bytes_received += len(data)  # NOTE: SHOW STATS counts it, as any
        if self.server.transport is not None:
            self.server.transport.write(data)

    def to_client(self, data: bytes) -> None:
        self.pool.stats.bytes_sent += len(data)
        transport = self.client_side.transport
        if transport is not None:
            transport.write(data)

    def close(self, reason: str, client_gone: bool = False) -> None:
        """End both sides (the client's close is the pooler's to log); client_gone: the
        client has already closed."""
        if self.closed:
            return
        self.closed = True
        if self.pooler.settings.log_disconnections and self.logged_in:
            log.info("%s closing because: %s (age=%ds)", self.prefix(), reason,
                     int(monotonic() - self.server.connect_time))
        self.server.close()
        if not client_gone:
            # NOTE: the server already told the client why when it ended the stream itself.
            self.client.disconnect(reason, notify=False)


class _ClientSide(asyncio.Protocol):
    """The client's transport once the pipe is joined: bytes go to the server unchanged."""

    def __init__(self, link: ReplicationLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def data_received(self, data: bytes) -> None:
        if data.endswith(_TERMINATE):
            self.link.client.close_reason = "client close request"
        self.link.to_server(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # NOTE: the client's own close: logged, counted, and its server closed by the
        # pooler (Pooler.client_closed -> ReplicationLink.close).
        self.link.client.connection_lost(exc)

    def pause_writing(self) -> None:
        server = self.link.server.transport
        if server is not None:
            server.pause_reading()

    def resume_writing(self) -> None:
        server = self.link.server.transport
        if server is not None:
            server.resume_reading()


class _ServerSide(asyncio.Protocol):
    """The replication client's own server connection: its login, then the pipe's far end."""

    def __init__(self, link: ReplicationLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.connect_time = monotonic()
        self.host: str | None = None  # the host connected to (one of a host= list)
        self.ident = link.pooler.next_ident()  # SHOW SERVERS `id`
        self.pid = 0  # the backend's, for SHOW SERVERS `remote_pid` and cancel requests
        self.key = 0
        self._framer: Framer | None = Framer()
        self._auth: ServerLogin | None = None
        self._tls_wait = False
        self._params: dict[str, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.link.closed:
            self.transport.abort()
            return
        pooler = self.link.pooler
        if pooler.server_tls is not None and self.host and not self.host.startswith("/"):
            self._tls_wait = True
            self.transport.write(m.ssl_request())
        else:
            self.transport.write(m.startup_message(self.link.startup))

    def data_received(self, data: bytes) -> None:
        link = self.link
        if link.logged_in:
            link.to_client(data)
            return
        if self._tls_wait:
            self._tls_answer(data)
            return
        self._login_received(data)

    def _tls_answer(self, data: bytes) -> None:
        link = self.link
        mode = link.pooler.settings.server_tls_sslmode
        self._tls_wait = False
        answer = tls.ssl_answer(data, mode)
        if answer == tls.SSL_PLAIN:
            assert self.transport is not None
            self.transport.write(m.startup_message(link.startup))
            return
        if answer != tls.SSL_UPGRADE:
            link.login_failed(answer)
            return
        context = link.pooler.server_tls
        assert context is not None and self.transport is not None
        transport = self.transport
        hostname = self.host if mode == "verify-full" else None

        async def upgrade() -> None:
            new, error = await tls.upgrade_server(transport, self, context, hostname)
            if error:
                link.login_failed(error)
                return
            if link.closed or new is None:
                return
            self.transport = new
            new.write(m.startup_message(link.startup))

        link.pooler.spawn(upgrade())

    def _login_received(self, data: bytes) -> None:
        framer = self._framer
        if framer is None:
            return
        link = self.link
        try:
            chunk, msgs = framer.feed(data)
            for t, start, end in msgs:
                body = chunk[start + 5:end]
                if t == m.B_AUTH:
                    self._answer_auth(body)
                elif t == m.B_PARAMETER_STATUS:
                    name, value = m.parse_parameter_status(body)
                    self._params[name] = value
                elif t == m.B_ERROR:
                    link.login_failed(m.parse_error(body).message, chunk[start:end])
                    return
                elif t == m.B_READY:
                    rest = chunk[end:] + bytes(framer._buf)
                    self._framer = None
                    self._auth = None
                    link.login_done(self._params, rest)
                    return
                elif t == m.B_BACKEND_KEY:
                    self.pid = m.INT32.unpack_from(body, 0)[0]
                    self.key = m.INT32.unpack_from(body, 4)[0]
                # NOTE: the client gets pgmux's own cancel key; notices are dropped.
        except AuthError as exc:
            log.warning("%s %s", link.prefix(), exc)
            link.login_failed(exc.client_message or ANSWER_FAILED)
        except m.ProtocolError as exc:
            link.login_failed(f"server login failed: {exc}")

    def _answer_auth(self, body: bytes) -> None:
        pool = self.link.pool
        if self._auth is None:
            self._auth = ServerLogin(pool.server_user, pool.server_password,
                                     scram_keys=pool.scram_keys)
        reply = self._auth.receive(body)
        if reply and self.transport is not None:
            self.transport.write(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        link = self.link
        if not link.logged_in:
            link.login_failed("server conn crashed?" if exc is None else
                              f"server conn crashed? ({exc})")
            return
        link.close("server closed the replication connection" if exc is None else
                   f"server conn crashed? ({exc})")

    def pause_writing(self) -> None:
        client = self.link.client_side.transport
        if client is not None:
            client.pause_reading()

    def resume_writing(self) -> None:
        client = self.link.client_side.transport
        if client is not None:
            client.resume_reading()

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self.link.logged_in:
                transport.write(_TERMINATE)
                transport.close()
            else:
                transport.abort()
