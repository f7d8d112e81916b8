"""A bare transaction-mode pooler with none of pgmux's features: the ceiling a Python pooler on
asyncio.Protocol + uvloop can reach on this machine (bench/ceiling.py runs it).

It answers every client's startup at once (no authentication), logs POOL servers in as
`postgres` with trust, forwards client bytes to a server and server bytes back without framing
them, and releases a server when a read ends with ReadyForQuery 'I'. Like pgmux, it sends the
writes of one loop iteration together after the iteration's events. No Terminate handling
beyond closing, no errors, no limits, no statistics, no session-state checks, no prepared
statements: a measuring stick, not a pooler. Usage: bare_pooler.py PG_PORT LISTEN_PORT [POOL]
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections import deque

import uvloop

_SSL_REQUEST = b"\x04\xd2\x16\x2f"
_READY_IDLE = b"Z\x00\x00\x00\x05I"


def _param(name: bytes, value: bytes) -> bytes:
    return b"S" + struct.pack("!i", 4 + len(name) + len(value) + 2) + name + b"\0" + value + b"\0"


WELCOME = (b"R\x00\x00\x00\x08\x00\x00\x00\x00"
           + _param(b"server_version", b"18")
           + _param(b"client_encoding", b"UTF8")
           + _param(b"standard_conforming_strings", b"on")
           + _param(b"DateStyle", b"ISO, MDY")
           + _param(b"integer_datetimes", b"on")
           + b"K\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x01" + _READY_IDLE)


class Bare:
    """The whole pooler's state: idle servers (LIFO), clients waiting with their bytes, and
    the writes of the current loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.idle: list[Server] = []
        self.waiting: deque[tuple[Client, list[bytes]]] = deque()
        self.outbox: list[tuple[asyncio.Transport, bytes]] = []
        self.loop = loop

    def post(self, transport: asyncio.Transport | None, data: bytes) -> None:
        if transport is None:
            return
        if not self.outbox:
            self.loop.call_soon(self.flush)
        self.outbox.append((transport, data))

    def flush(self) -> None:
        outbox, self.outbox = self.outbox, []
        for transport, data in outbox:
            if not transport.is_closing():
                transport.write(data)


class Server(asyncio.Protocol):
    def __init__(self, bare: Bare) -> None:
        self.bare = bare
        self.client: Client | None = None
        self.logged_in = False
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        body = b"\x00\x03\x00\x00user\0postgres\0database\0postgres\0\0"
        self.transport.write(struct.pack("!i", len(body) + 4) + body)

    def data_received(self, data: bytes) -> None:
        if not self.logged_in:
            self.buf += data
            if self.buf.endswith(_READY_IDLE):
                self.logged_in = True
                self.release()
            return
        client = self.client
        if client is None or client.transport is None:
            return
        self.bare.post(client.transport, data)
        if data[-6] == 90 and data[-1] == 73:  # ends with ReadyForQuery 'I'
            client.server = None
            self.client = None
            self.release()

    def release(self) -> None:
        bare = self.bare
        if bare.waiting:
            client, pending = bare.waiting.popleft()
            client.server = self
            client.pending = None
            self.client = client
            self.bare.post(self.transport, b"".join(pending))
        else:
            bare.idle.append(self)


class Client(asyncio.Protocol):
    def __init__(self, bare: Bare) -> None:
        self.bare = bare
        self.server: Server | None = None
        self.started = False
        self.pending: list[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.started:
            if data[4:8] == _SSL_REQUEST:
                self.transport.write(b"N")
                return
            self.started = True
            self.transport.write(WELCOME)
            return
        if data[0] == 88:  # Terminate
            self.transport.close()
            return
        server = self.server
        if server is not None:
            self.bare.post(server.transport, data)
        elif self.pending is not None:
            self.pending.append(data)
        elif self.bare.idle:
            server = self.bare.idle.pop()
            server.client = self
            self.server = server
            self.bare.post(server.transport, data)
        else:
            self.pending = [data]
            self.bare.waiting.append((self, self.pending))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server is not None and self.server.transport is not None:
            self.server.transport.close()  # NOTE: state unknown: never reused


async def main(pg_port: int, listen_port: int, pool: int) -> None:
    loop = asyncio.get_running_loop()
    bare = Bare(loop)
    for _ in range(pool):
        await loop.create_connection(lambda: Server(bare), "127.0.0.1", pg_port)
    await loop.create_server(lambda: Client(bare), "127.0.0.1", listen_port)
    await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]),
                    int(sys.argv[3]) if len(sys.argv) > 3 else 16))
