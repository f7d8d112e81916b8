"""Protocol-level prepared statements with max_prepared_statements > 0, against PgBouncer 1.25's
documented behaviour: the LRU lowered by RELOAD, names reused without Close, DEALLOCATE ALL and
DISCARD ALL from a client, Describe of an unknown statement, and an error inside a pipeline."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import pq

from pgmux.embedded import EmbeddedPostgres
from tests.faults import wire
from tests.integration.adminutil import admin, wait_for
from tests.integration.conftest import Pgmux, PgmuxFactory

_SQLSTATE = pq.DiagnosticField.SQLSTATE


def _count_on_server(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert row is not None
    return int(row[0])


def _reload_with(px: Pgmux, old: str, new: str) -> None:
    px.ini.write_text(px.ini.read_text().replace(old, new))
    with admin(px) as console:
        console.execute("RELOAD")


def test_lowered_limit_evicts_lazily_after_reload(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"max_prepared_statements": 5, "default_pool_size": 1})
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        pgconn = conn.pgconn
        for k in range(5):
            assert pgconn.prepare(f"s{k}".encode(), f"select {k}".encode()).status == \
                pq.ExecStatus.COMMAND_OK
        assert _count_on_server(conn) == 5
        _reload_with(px, "max_prepared_statements = 5", "max_prepared_statements = 2")
        # Nothing is closed by the RELOAD itself: the server's LRU shrinks at its next Parse.
        assert _count_on_server(conn) == 5
        assert pgconn.prepare(b"s5", b"select 5").status == pq.ExecStatus.COMMAND_OK
        assert _count_on_server(conn) == 2
        # Every statement still answers: the evicted ones are prepared again, within the limit.
        for k in range(6):
            res = pgconn.exec_prepared(f"s{k}".encode(), [])
            assert res.status == pq.ExecStatus.TUPLES_OK and res.get_value(0, 0) == \
                str(k).encode()
            assert _count_on_server(conn) <= 2


def test_name_reused_and_unknown_names_are_errors_logged_as_pgbouncer(px_logs: Pgmux) -> None:
    with psycopg.connect(px_logs.dsn(), autocommit=True) as conn:
        pgconn = conn.pgconn
        assert pgconn.prepare(b"dup", b"select 1").status == pq.ExecStatus.COMMAND_OK
        res = pgconn.prepare(b"dup", b"select 2")
        assert res.status == pq.ExecStatus.FATAL_ERROR
        assert res.error_field(_SQLSTATE) == b"42P05"
        res = pgconn.describe_prepared(b"ghost")
        assert res.status == pq.ExecStatus.FATAL_ERROR
        assert res.error_field(_SQLSTATE) == b"26000"
        assert b'prepared statement "ghost" does not exist' in (res.error_message or b"")
        # The name stays the first statement's, and the connection stays usable.
        assert pgconn.exec_prepared(b"dup", []).get_value(0, 0) == b"1"
        described = pgconn.describe_prepared(b"dup")
        assert described.status == pq.ExecStatus.COMMAND_OK and described.nfields == 1
    wait_for(lambda: "prepared statement 'ghost' not found" in px_logs.logs())
    assert "prepared statement 'dup' was already prepared" in px_logs.logs()


@pytest.fixture
def px_logs(pgmux_factory: PgmuxFactory) -> Pgmux:
    return pgmux_factory({"default_pool_size": 1})


@pytest.mark.parametrize("reset", ["DISCARD ALL", "DEALLOCATE ALL", "deallocate prepare all"])
def test_reset_clears_only_the_senders_statements(pgmux_factory: PgmuxFactory,
                                                  reset: str) -> None:
    """PgBouncer: DEALLOCATE ALL and DISCARD ALL clear the statements tracked for the client
    that sends them. Another client sharing the server keeps its own, prepared again."""
    px = pgmux_factory({"default_pool_size": 1})
    with psycopg.connect(px.dsn(), autocommit=True) as a, \
            psycopg.connect(px.dsn(), autocommit=True) as b:
        for conn in (a, b):
            assert conn.pgconn.prepare(b"same", b"select 'same'").status == \
                pq.ExecStatus.COMMAND_OK
        b.execute(reset)  # NOTE: the extended protocol (an unnamed Parse), as drivers send it
        res = b.pgconn.exec_prepared(b"same", [])
        assert res.error_field(_SQLSTATE) == b"26000"
        assert b.pgconn.prepare(b"same", b"select 'again'").status == pq.ExecStatus.COMMAND_OK
        assert b.pgconn.exec_prepared(b"same", []).get_value(0, 0) == b"again"
        assert a.pgconn.exec_prepared(b"same", []).get_value(0, 0) == b"same"


def _pipeline(client: wire.WireClient) -> list[tuple[bytes, str]]:
    """Parse ok, Parse failing, then messages the server skips, one Sync; then what each name
    means afterwards. Returns (type, sqlstate) of every answer."""
    client.send(wire.parse("ok", "select 1") + wire.parse("bad", "select from nowhere_x") +
                wire.bind("ok") + wire.execute() + wire.parse("late", "select 3") +
                wire.describe("S", "ok") + wire.sync())
    got = client.until_ready()
    for name in ("ok", "bad", "late"):
        client.send(wire.bind(name) + wire.execute() + wire.sync())
        got += client.until_ready()
    client.send(wire.parse("bad", "select 2") + wire.bind("bad") + wire.execute() +
                wire.sync())
    got += client.until_ready()
    return [(m.type, m.sqlstate) for m in got if m.type != b"N"]


def test_error_inside_a_pipeline_matches_postgres(pg: EmbeddedPostgres,
                                                  pgmux_factory: PgmuxFactory) -> None:
    """What the server skips after an error before Sync is not prepared through pgmux either:
    the same answers, message for message, as from PostgreSQL itself."""
    px = pgmux_factory({"default_pool_size": 1})
    direct = wire.WireClient(pg.port)
    through = wire.WireClient(px.port)
    try:
        direct.login()
        through.login()
        want = _pipeline(direct)
        assert (b"E", "42P01") in want and (b"E", "26000") in want
        assert _pipeline(through) == want
    finally:
        direct.sock.close()
        through.sock.close()
