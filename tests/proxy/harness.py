"""Client and server Protocols of the proxy on fake transports: no sockets, no loop, no
PostgreSQL. The test plays both peers: the client's bytes in, the server's answers back."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from pgmux.config import Config, DatabaseConfig
from pgmux.config.settings import PgmuxSettings, Settings
from pgmux.pool.core import ServerState
from pgmux.protocol import messages as m
from pgmux.proxy.client import ClientConnection, Phase
from pgmux.proxy.pooler import Pooler
from pgmux.proxy.server import ServerConnection

WELCOME = {"client_encoding": "UTF8", "DateStyle": "ISO, MDY", "TimeZone": "UTC",
           "application_name": "", "standard_conforming_strings": "on",
           "IntervalStyle": "postgres", "server_version": "18.6"}


class FakeTransport:
    """Records what is written; knows whether it was closed or paused."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 5555)) -> None:
        self.data = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.peer = peer

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.data += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name in ("peername", "sockname") else default

    def take(self) -> list[tuple[str, bytes]]:
        """The messages written since the last take, as (type, body)."""
        out: list[tuple[str, bytes]] = []
        data = bytes(self.data)
        self.data.clear()
        pos = 0
        while pos + 5 <= len(data):
            t, length = m.HEADER.unpack_from(data, pos)
            out.append((chr(t), data[pos + 5:pos + 1 + length]))
            pos += 1 + length
        return out


def readback_answer(gucs: dict[str, str] | None = None, **fields: object) -> bytes:
    """What PostgreSQL answers pgmux's session read-back (protocol/state.py READBACK)."""
    import json

    body: dict[str, object] = {"gucs": gucs or {}, "role": "none", "session_user": "u",
                               "prepared": {}, "advisory": 0, "listen": 0, "temp": 0,
                               "cursors": 0}
    body.update(fields)
    text = json.dumps(body).encode()
    row = m.message(m.B_DATA_ROW, m.INT16.pack(1) + m.INT32.pack(len(text)) + text)
    return (m.row_description([("json_build_object", 114)]) + row +
            m.command_complete("SELECT 1") + ready())


def ready(status: bytes = b"I") -> bytes:
    return m.ready_for_query(status)


def answer(tag: str = "SELECT 1", status: bytes = b"I") -> bytes:
    return m.command_complete(tag) + ready(status)


class Harness:
    """A Pooler with one database `app`, servers made by hand, clients logged in by hand."""

    def __init__(self, mode: str = "transaction", pool_size: int = 2,
                 pgmux: dict[str, Any] | None = None, **settings: Any) -> None:
        db = DatabaseConfig("app", host="127.0.0.1", port=5432, dbname="app")
        s = Settings(pool_mode=mode, default_pool_size=pool_size, log_connections=False,
                     log_disconnections=False, **settings)
        self.pooler = Pooler(Config(settings=s, databases=MappingProxyType({"app": db}),
                                    pgmux=PgmuxSettings(**(pgmux or {}))))
        # NOTE: no loop runs: the test flushes the outbox where the loop would.
        self.pooler.schedule_flush = lambda: None
        self.pool = self.pooler.get_pool(db, "u")
        self.pool.welcome = dict(WELCOME)
        self.servers: list[ServerConnection] = []

    def flush(self) -> None:
        self.pooler.flush_outbox()

    def server(self) -> ServerConnection:
        """A logged-in server, idle in the pool (or handed to a waiting client)."""
        server = ServerConnection(self.pooler, self.pool)
        server.transport = FakeTransport()  # type: ignore[assignment]
        self.pool.core.add_server(server)
        server.params = dict(WELCOME)
        server.tracked = {k: v for k, v in WELCOME.items() if k in self.pooler.tracked_params}
        self.pooler.links.server_ready(server)
        self.servers.append(server)
        self.flush()
        return server

    def client(self) -> ClientConnection:
        """A client past its login, in the pool."""
        client = ClientConnection(self.pooler)
        client.connection_made(FakeTransport())  # type: ignore[arg-type]
        client.user, client.dbname = "u", "app"
        client.pool = self.pool
        client.adopt_mode(self.pool.pool_mode)
        self.pooler.login._welcome(client, self.pool)
        assert client.phase is Phase.READY
        out(client).data.clear()
        return client

    def send(self, client: ClientConnection, *msgs: bytes) -> None:
        client.data_received(b"".join(msgs))
        self.flush()

    def reply(self, server: ServerConnection, *msgs: bytes) -> None:
        server.data_received(b"".join(msgs))
        self.flush()


def out(conn: ClientConnection | ServerConnection) -> FakeTransport:
    transport = conn.transport
    assert isinstance(transport, FakeTransport)
    return transport


def state(server: ServerConnection) -> ServerState:
    return server.server_state
