"""The console session over bytes, without a network: simple and extended protocol, binary
results, access levels, PAUSE answered only once servers are gone."""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

import pytest

from pgmux.admin import show
from pgmux.admin.session import AdminSession, numeric_binary
from pgmux.config import Config, DatabaseConfig
from pgmux.config.settings import Settings
from pgmux.pool.core import ServerState
from pgmux.protocol import messages as m
from pgmux.protocol.framing import Framer
from pgmux.proxy.pooler import Pooler


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


class FakeClient:
    """The little of ClientConnection the console uses."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.transport = FakeTransport()
        self.out = bytearray()
        self.closed_with: str | None = None

    def send(self, data: bytes) -> None:
        self.out += data

    def disconnect(self, reason: str, notify: bool = True, sqlstate: str = "08P01") -> None:
        self.closed_with = reason
        self.transport.closed = True

    def fatal(self, message: str, sqlstate: str = "08P01") -> None:
        self.disconnect(message, sqlstate=sqlstate)

    def take(self) -> list[tuple[str, bytes]]:
        """The messages sent so far, as (type, body)."""
        framer = Framer()
        chunk, msgs = framer.feed(bytes(self.out))
        self.out.clear()
        return [(chr(t), chunk[s + 5:e]) for t, s, e in msgs]


def pooler() -> Pooler:
    return Pooler(Config(settings=Settings(admin_users=("admin",), stats_users=("stats",),
                                           auth_type="trust")))


def session(user: str = "admin") -> tuple[AdminSession, FakeClient, Pooler]:
    p = pooler()
    c = FakeClient(user)
    return AdminSession(p, c), c, p  # type: ignore[arg-type]


def feed(s: AdminSession, *messages: bytes) -> None:
    data = b"".join(messages)
    framer = Framer()
    chunk, msgs = framer.feed(data)
    s.handle(chunk, msgs)


def q(text: str) -> bytes:
    return m.query(text)


def parse_msg(name: str, query: str, oids: tuple[int, ...] = ()) -> bytes:
    return m.message(m.F_PARSE, m.cstr(name) + m.cstr(query) + struct.pack(
        f"!h{len(oids)}i", len(oids), *oids))


def bind_msg(portal: str, name: str, params: tuple[bytes, ...] = (),
             result_formats: tuple[int, ...] = ()) -> bytes:
    body = m.cstr(portal) + m.cstr(name) + struct.pack("!h", 0)
    body += struct.pack("!h", len(params)) + b"".join(
        struct.pack("!i", len(p)) + p for p in params)
    body += struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats)
    return m.message(m.F_BIND, body)


def describe_msg(kind: str, name: str) -> bytes:
    return m.message(m.F_DESCRIBE, kind.encode() + m.cstr(name))


def execute_msg(portal: str = "") -> bytes:
    return m.message(m.F_EXECUTE, m.cstr(portal) + struct.pack("!i", 0))


SYNC = m.message(m.F_SYNC)


def columns_of(body: bytes) -> list[tuple[str, int, int]]:
    """(name, type oid, format) of each column in a RowDescription body."""
    n = struct.unpack_from("!h", body)[0]
    pos, out = 2, []
    for _ in range(n):
        end = body.index(b"\x00", pos)
        name = body[pos:end].decode()
        _, _, oid, _, _, fmt = struct.unpack_from("!ihihih", body, end + 1)
        out.append((name, oid, fmt))
        pos = end + 1 + 18
    return out


def values_of(body: bytes) -> list[bytes | None]:
    n = struct.unpack_from("!h", body)[0]
    pos, out = 2, []
    for _ in range(n):
        size = struct.unpack_from("!i", body, pos)[0]
        pos += 4
        if size < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + size])
            pos += size
    return out


def error_of(body: bytes) -> m.ErrorFields:
    return m.parse_error(body)


def test_simple_show_version() -> None:
    from pgmux.cli.main import version_line

    s, c, _ = session()
    feed(s, q("SHOW VERSION;"))
    msgs = c.take()
    assert [t for t, _ in msgs] == ["T", "D", "C", "Z"]
    assert columns_of(msgs[0][1]) == [("version", 25, 0)]
    assert values_of(msgs[1][1]) == [version_line().encode()]
    assert msgs[2][1] == b"SHOW\x00"


def test_every_show_describes_its_columns() -> None:
    s, c, _ = session()
    for name, spec in show.SHOWS.items():
        feed(s, q(f"SHOW {name}"))
        msgs = c.take()
        assert msgs[0][0] == "T", name
        assert [n for n, _, _ in columns_of(msgs[0][1])] == [col.name for col in spec.columns]
        assert msgs[-1][0] == "Z"


def test_unknown_command_is_pgbouncers_error() -> None:
    s, c, _ = session()
    feed(s, q("FROBNICATE"), q("SHOW NOTHING"))
    msgs = c.take()
    assert [t for t, _ in msgs] == ["E", "Z", "E", "Z"]
    err = error_of(msgs[0][1])
    assert err.message == "invalid command 'FROBNICATE', use SHOW HELP;"
    assert err.sqlstate == "08P01"
    assert error_of(msgs[2][1]).message == "invalid command 'SHOW NOTHING', use SHOW HELP;"


def test_empty_query_and_help_notice() -> None:
    s, c, _ = session()
    feed(s, q(""), q("SHOW HELP"))
    msgs = c.take()
    assert [t for t, _ in msgs] == ["I", "Z", "N", "C", "Z"]
    assert b"Console usage" in msgs[2][1] and b"KILL_CLIENT" in msgs[2][1]


def test_stats_user_may_only_show() -> None:
    s, c, _ = session("stats")
    feed(s, q("SHOW POOLS"), q("PAUSE"), q("SET default_pool_size = 3"),
         q("SET client_encoding = 'UTF8'"))
    msgs = c.take()
    kinds = [t for t, _ in msgs]
    assert kinds[:4] == ["T", "D", "C", "Z"]
    errors = [error_of(b).message for t, b in msgs if t == "E"]
    assert errors == ["admin access needed", "admin access needed"]
    assert kinds[-3:] == ["N", "C", "Z"]  # the fake SET is answered with a notice


def test_other_users_are_not_allowed() -> None:
    _, c, _ = session("mallory")
    assert c.closed_with == "not allowed"


def test_extended_protocol_text_and_binary() -> None:
    s, c, _ = session()
    feed(s, parse_msg("st", "SHOW STATS_TOTALS"), describe_msg("S", "st"), SYNC)
    msgs = c.take()
    assert [t for t, _ in msgs] == ["1", "t", "T", "Z"]
    assert columns_of(msgs[2][1])[1] == ("server_assignment_count", 1700, 0)
    # asyncpg asks for binary results; numbers come back in PostgreSQL's binary formats.
    feed(s, bind_msg("", "st", result_formats=(1,)), execute_msg(), SYNC)
    msgs = c.take()
    assert [t for t, _ in msgs] == ["2", "D", "C", "Z"]
    values = values_of(msgs[1][1])
    assert values[0] == b"pgbouncer" and values[1] == numeric_binary(0)
    # psycopg: unnamed statement, text results, Describe of the portal.
    feed(s, parse_msg("", "SHOW POOLS"), bind_msg("", ""), describe_msg("P", ""),
         execute_msg(), SYNC)
    msgs = c.take()
    assert [t for t, _ in msgs] == ["1", "2", "T", "D", "C", "Z"]
    assert values_of(msgs[3][1])[:2] == [b"pgbouncer", b"pgbouncer"]


def test_extended_protocol_parameters_and_errors() -> None:
    s, c, _ = session()
    feed(s, parse_msg("", "KILL_CLIENT $1"), describe_msg("S", ""),
         bind_msg("", "", params=(b"999",)), execute_msg(), parse_msg("", "SHOW VERSION"),
         SYNC, q("SHOW STATE"))
    msgs = c.take()
    kinds = [t for t, _ in msgs]
    # NoData for a command; the error skips everything up to Sync.
    assert kinds[:5] == ["1", "t", "n", "2", "E"]
    assert error_of(msgs[4][1]).message == "client not found"
    assert kinds[5] == "Z"
    assert kinds[6:] == ["T", "D", "D", "D", "C", "Z"]


def test_extended_unknown_command_fails_at_parse() -> None:
    s, c, _ = session()
    feed(s, parse_msg("", "BEGIN"), bind_msg("", ""), execute_msg(), SYNC)
    msgs = c.take()
    assert [t for t, _ in msgs] == ["E", "Z"]


@pytest.mark.parametrize("n", [0, 1, 9999, 10000, 123456789, 10**20])
def test_numeric_binary_round_trip(n: int) -> None:
    raw = numeric_binary(n)
    ndigits, weight, sign, dscale = struct.unpack_from("!hhhh", raw)
    digits = struct.unpack_from(f"!{ndigits}h", raw, 8)
    value = sum(Decimal(d) * Decimal(10000) ** (weight - i) for i, d in enumerate(digits))
    assert (sign, dscale) == (0, 0)
    assert value == n


class FakeServer:
    """A server in a pool core: disconnect takes it out, as the pooler would."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.server_state = ServerState.CLOSED
        self.close_needed = ""
        self.close_reason = ""
        self.closed_with: str | None = None

    def disconnect(self, reason: str) -> None:
        self.closed_with = reason
        self.pool.core.remove_server(self)


def test_pause_answers_only_when_servers_are_released() -> None:
    s, c, p = session()
    db = p.config.database("postgres") or DatabaseConfig("postgres", dbname="postgres")
    pool = p.get_pool(db, "app")
    busy, spare = FakeServer(pool), FakeServer(pool)
    for server in (busy, spare):
        pool.core.add_server(server)
        pool.core.release_server(server)          # both idle
    assert pool.core.find_server(object(), 0.0) is spare  # LIFO: spare is now active
    busy, spare = spare, busy
    feed(s, q("PAUSE"), q("SHOW VERSION"))
    assert c.take() == []                         # held: a server is still in use
    assert spare.closed_with == "pause mode"      # the idle one is closed at once
    assert pool.core.paused
    p.control.tick()
    assert c.take() == []
    pool.core.release_server(busy)                # the transaction ends
    p.control.tick()
    msgs = c.take()
    assert busy.closed_with == "pause mode"
    assert [t for t, _ in msgs] == ["C", "Z", "T", "D", "C", "Z"]
    assert msgs[0][1] == b"PAUSE\x00"
    feed(s, q("PAUSE"), q("RESUME"), q("RESUME"))
    msgs = c.take()
    assert error_of(msgs[0][1]).message == "already suspended/paused"
    assert msgs[2][1] == b"RESUME\x00"
    assert error_of(msgs[4][1]).message == "pooler is not paused/suspended"
    assert not pool.core.paused and not p.control.paused


def test_pause_db_and_admin_db_errors() -> None:
    s, c, p = session()
    feed(s, q("PAUSE pgbouncer"), q("PAUSE nosuchdb"), q("DISABLE"), q("RESUME postgres"),
         q("KILL_CLIENT abc"), q("SHUTDOWN NOW"), q("RELOAD now"))
    errors = [error_of(b).message for t, b in c.take() if t == "E"]
    assert errors == ["cannot pause admin db: pgbouncer", "no such database: nosuchdb",
                      "a database is required", "no such database: postgres",
                      "invalid client pointer supplied",
                      "invalid command 'SHUTDOWN NOW', use SHOW HELP;",
                      "invalid command 'RELOAD now', use SHOW HELP;"]
