"""A raw-socket PostgreSQL v3 client for fault tests: messages built byte by byte (well-formed or
not), read back with a timeout, and sockets that can vanish with a FIN or an RST."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

PROTOCOL_V3 = 196608

# ---- frontend message builders (no validation: a test may build anything) ------------------


def msg(t: bytes | int, body: bytes = b"", length: int | None = None) -> bytes:
    """Type, length, body; `length` overrides the length field (for broken messages)."""
    tb = bytes((t,)) if isinstance(t, int) else t
    return tb + struct.pack("!I", len(body) + 4 if length is None else length & 0xFFFFFFFF) + body


def cstr(text: str | bytes) -> bytes:
    return (text.encode() if isinstance(text, str) else text) + b"\0"


def startup(user: str = "postgres", database: str = "postgres", **params: str) -> bytes:
    body = struct.pack("!I", PROTOCOL_V3)
    for k, v in {"user": user, "database": database, **params}.items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query(sql: str) -> bytes:
    return msg(b"Q", cstr(sql))


def parse(name: str, sql: str, oids: Iterable[int] = ()) -> bytes:
    types = list(oids)
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(types)) +
               b"".join(struct.pack("!I", o) for o in types))


def bind(stmt: str = "", portal: str = "", params: Iterable[bytes | None] = ()) -> bytes:
    values = list(params)
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return msg(b"B", body + struct.pack("!h", 0))


def describe(kind: str = "S", name: str = "") -> bytes:
    return msg(b"D", kind.encode() + cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return msg(b"E", cstr(portal) + struct.pack("!i", max_rows))


def close(kind: str = "S", name: str = "") -> bytes:
    return msg(b"C", kind.encode() + cstr(name))


def sync() -> bytes:
    return msg(b"S")


def flush() -> bytes:
    return msg(b"H")


def terminate() -> bytes:
    return msg(b"X")


def copy_data(data: bytes) -> bytes:
    return msg(b"d", data)


def copy_done() -> bytes:
    return msg(b"c")


def copy_fail(reason: str = "gone") -> bytes:
    return msg(b"f", cstr(reason))


def function_call(oid: int, args: Iterable[bytes] = ()) -> bytes:
    values = list(args)
    body = struct.pack("!Ih", oid, 0) + struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", len(v)) + v
    return msg(b"F", body + struct.pack("!h", 0))


def password(text: str) -> bytes:
    return msg(b"p", cstr(text))


def extended(sql: str, params: Iterable[bytes | None] = (), name: str = "") -> bytes:
    """Parse, Bind, Execute, Sync of one statement."""
    return parse(name, sql) + bind(name, params=params) + execute() + sync()


# ---- reading answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    type: bytes
    body: bytes

    def fields(self) -> dict[str, str]:
        """The fields of an ErrorResponse or NoticeResponse, by code letter."""
        return {f[:1].decode(): f[1:].decode(errors="replace")
                for f in self.body.split(b"\0") if f}

    @property
    def sqlstate(self) -> str:
        return self.fields().get("C", "")

    @property
    def text(self) -> str:
        return self.fields().get("M", "")

    @property
    def fatal(self) -> bool:
        return self.type == b"E" and self.fields().get("S") in ("FATAL", "PANIC")

    def __repr__(self) -> str:
        if self.type in (b"E", b"N"):
            f = self.fields()
            return f"<{self.type.decode()} {f.get('S')} {f.get('C')} {f.get('M')!r}>"
        return f"<{self.type.decode(errors='replace')} {self.body[:40]!r}>"


class Closed(Exception):
    """The connection ended (EOF or reset) while a message was expected."""


class Timeout(Exception):
    """Nothing complete arrived within the timeout."""


class WireClient:
    """One connection to pgmux (or PostgreSQL) on a plain socket."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # NOTE: before connect, so the window the peer sees is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    # -- sending --
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def login(self, user: str = "postgres", database: str = "postgres",
              **params: str) -> list[Message]:
        """Startup with trust auth; returns the welcome up to ReadyForQuery.
        Raises AssertionError on an error."""
        self.send(startup(user, database, **params))
        got = self.until_ready()
        errors = [m for m in got if m.type == b"E"]
        assert not errors, errors
        return got

    # -- receiving --
    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"nothing complete within the timeout; have {bytes(self.buf[:80])!r}")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            raise Timeout(f"nothing complete within the timeout; have "
                          f"{bytes(self.buf[:80])!r}") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            self.eof = True
            raise Closed(f"connection reset: {exc}") from None
        if not chunk:
            self.eof = True
            raise Closed("connection closed")
        self.buf += chunk

    def read(self, timeout: float | None = None) -> Message:
        """The next whole backend message."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 5:
                (length,) = struct.unpack_from("!I", self.buf, 1)
                if len(self.buf) >= 1 + length:
                    m = Message(bytes(self.buf[:1]), bytes(self.buf[5:1 + length]))
                    del self.buf[:1 + length]
                    return m
            self._fill(deadline)

    def until_ready(self, timeout: float | None = None) -> list[Message]:
        """Messages up to and including ReadyForQuery; stops after a FATAL error."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out: list[Message] = []
        while True:
            m = self.read(max(0.0, deadline - time.monotonic()))
            out.append(m)
            if m.type == b"Z" or m.fatal:
                return out

    def run(self, sql: str, timeout: float | None = None) -> list[Message]:
        """A simple Query; its answer up to ReadyForQuery."""
        self.send(query(sql))
        return self.until_ready(timeout)

    def rows(self, sql: str, timeout: float | None = None) -> list[list[str | None]]:
        """The rows of a simple query, as text; AssertionError on an error."""
        got = self.run(sql, timeout)
        errors = [m for m in got if m.type == b"E"]
        assert not errors, errors
        return [data_row(m.body) for m in got if m.type == b"D"]

    def scalar(self, sql: str, timeout: float | None = None) -> str | None:
        """The first column of the first row of a simple query; AssertionError on an error."""
        rows = self.rows(sql, timeout)
        return rows[0][0] if rows else None

    def outcome(self, timeout: float = 5.0) -> tuple[list[Message], str]:
        """Everything until the connection ends, a ReadyForQuery, or the timeout: the messages
        and how it ended ("closed", "ready" or "timeout")."""
        deadline = time.monotonic() + timeout
        out: list[Message] = []
        while True:
            try:
                m = self.read(max(0.0, deadline - time.monotonic()))
            except Closed:
                return out, "closed"
            except Timeout:
                return out, "timeout"
            out.append(m)
            if m.type == b"Z":
                return out, "ready"

    def closed_within(self, timeout: float) -> bool:
        """True when the peer ends the connection within timeout (anything it sends first is
        kept in self.buf)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except Closed:
                return True
            except Timeout:
                return False

    # -- going away --
    def vanish(self, rst: bool) -> None:
        """Disappear without Terminate: an RST (SO_LINGER 0) or a plain FIN."""
        if rst:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(port: int, user: str = "postgres", database: str = "postgres",
            timeout: float = 10.0, **params: str) -> WireClient:
    """A logged-in WireClient (trust auth)."""
    c = WireClient(port, timeout=timeout)
    try:
        c.login(user, database, **params)
    except BaseException:
        c.close()
        raise
    return c


def data_row(body: bytes) -> list[str | None]:
    """The columns of a DataRow body, as text (None for NULL)."""
    (n,) = struct.unpack_from("!h", body, 0)
    pos, out = 2, []
    for _ in range(n):
        (size,) = struct.unpack_from("!i", body, pos)
        pos += 4
        out.append(None if size < 0 else body[pos:pos + size].decode())
        pos += max(size, 0)
    return out


def errors(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.type == b"E"]
