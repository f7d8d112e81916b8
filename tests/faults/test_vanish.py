"""Clients that vanish (RST or FIN, no Terminate) at every point of a transaction: afterwards
PostgreSQL holds no row they did not commit, no lock, no backend idle in transaction, and the
next client of the same server sees none of their session state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.faults import wire as w
from tests.faults.conftest import SharedMux

pytestmark = pytest.mark.timeout(120)

TABLE = "faults_vanish"
SETTLE = 5.0  # seconds PostgreSQL may take to see a backend's client gone


def ok(c: w.WireClient, sql: str) -> None:
    got = c.run(sql)
    assert not w.errors(got), (sql, got)


def session_state(c: w.WireClient) -> None:
    """Session state that must never reach another client: set outside any transaction
    (in session mode it lives until the client goes; in transaction mode each statement
    leaves its server dirty). Lock keys are backend pids, so clients that vanish together do
    not queue for one lock."""
    for sql in ("SET statement_timeout = '4321s'", "SET faults.marker = 'leaked'",
                "LISTEN faults_leak", "CREATE TEMP TABLE leak_tmp (x int)",
                "PREPARE leak AS SELECT 1", "SELECT pg_advisory_lock(pg_backend_pid())"):
        ok(c, sql)


def in_transaction(c: w.WireClient) -> None:
    """A transaction with a row, a session-level lock and a prepared statement in it (the
    last two outlive a ROLLBACK)."""
    for sql in ("BEGIN", f"INSERT INTO {TABLE} VALUES (1)",
                "SELECT pg_advisory_lock(pg_backend_pid())", "PREPARE leak2 AS SELECT 2"):
        ok(c, sql)


def _idle(c: w.WireClient) -> None:
    session_state(c)


def _after_begin(c: w.WireClient) -> None:
    session_state(c)
    in_transaction(c)


def _after_error(c: w.WireClient) -> None:
    in_transaction(c)
    assert [e.sqlstate for e in w.errors(c.run("SELECT 1/0"))] == ["22012"]


def _mid_query(c: w.WireClient) -> None:
    in_transaction(c)
    c.send(w.query("SELECT pg_sleep(0.3)"))
    time.sleep(0.05)


def _pipelined(c: w.WireClient) -> None:
    c.send(w.query("BEGIN") + w.query(f"INSERT INTO {TABLE} VALUES (1)") +
           w.query("SELECT pg_advisory_lock(pg_backend_pid()), pg_sleep(0.2)"))
    time.sleep(0.05)


def _mid_message_commit(c: w.WireClient) -> None:
    in_transaction(c)
    c.send(w.query("COMMIT")[:-3])
    time.sleep(0.05)


def _mid_message_execute_commit(c: w.WireClient) -> None:
    # NOTE: the bytes of COMMIT's Execute but its last; a proxy that forwards partial
    # messages lets whatever comes next (a Terminate) complete it.
    in_transaction(c)
    c.send(w.parse("", "COMMIT") + w.bind() + w.execute()[:-1])
    time.sleep(0.05)


def _copy_in(c: w.WireClient, begin: bool) -> None:
    if begin:
        in_transaction(c)
    c.send(w.query(f"COPY {TABLE} FROM STDIN"))
    assert c.read().type == b"G"
    c.send(w.copy_data(b"2\n3\n"))


def _mid_copy(c: w.WireClient) -> None:
    _copy_in(c, begin=True)
    time.sleep(0.05)


def _mid_copy_autocommit(c: w.WireClient) -> None:
    _copy_in(c, begin=False)
    time.sleep(0.05)


def _mid_copy_message(c: w.WireClient) -> None:
    _copy_in(c, begin=False)
    c.send(w.copy_data(b"4\n5\n")[:-2])
    time.sleep(0.05)


def _after_parse_before_sync(c: w.WireClient) -> None:
    c.send(w.parse("", f"INSERT INTO {TABLE} VALUES (1)") + w.bind() + w.execute())
    time.sleep(0.05)


def _after_parse_before_sync_in_transaction(c: w.WireClient) -> None:
    in_transaction(c)
    c.send(w.parse("s1", f"INSERT INTO {TABLE} VALUES (2)") + w.bind("s1") + w.execute())
    time.sleep(0.05)


def _after_flush(c: w.WireClient) -> None:
    # NOTE: the INSERT ran in the implicit transaction that only a Sync commits.
    c.send(w.parse("", f"INSERT INTO {TABLE} VALUES (1)") + w.bind() + w.execute() + w.flush())
    assert [m.type for m in (c.read(), c.read(), c.read())] == [b"1", b"2", b"C"]


POINTS: dict[str, Callable[[w.WireClient], None]] = {
    "idle_with_session_state": _idle,
    "after_begin": _after_begin,
    "after_an_error_in_the_transaction": _after_error,
    "mid_query": _mid_query,
    "pipelined_transaction": _pipelined,
    "mid_message_commit": _mid_message_commit,
    "mid_message_execute_commit": _mid_message_execute_commit,
    "mid_copy": _mid_copy,
    "mid_copy_autocommit": _mid_copy_autocommit,
    "mid_copy_message": _mid_copy_message,
    "after_parse_before_sync": _after_parse_before_sync,
    "after_parse_before_sync_in_transaction": _after_parse_before_sync_in_transaction,
    "after_flush_before_sync": _after_flush,
}


@pytest.fixture(scope="module")
def table(pg: EmbeddedPostgres) -> Iterator[str]:
    pg.execute(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (x int)")
    yield TABLE
    pg.execute(f"DROP TABLE IF EXISTS {TABLE}")


@pytest.fixture(autouse=True)
def clean_after(pg: EmbeddedPostgres, table: str) -> Iterator[None]:
    """A failing case must not fail the next ones: end what it left and empty the table."""
    yield
    pg.execute(f"""
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
           AND (state <> 'idle' OR pid IN (SELECT pid FROM pg_locks
                                            WHERE locktype = 'advisory'));
        DELETE FROM {table}""")


def left_behind(pg: EmbeddedPostgres, rows: int = 0) -> dict[str, int]:
    """What PostgreSQL still holds for clients that are gone, polled until it is nothing (but
    `rows` committed rows) or SETTLE seconds have passed (a backend busy in a query sees its
    client gone late)."""
    sql = f"""
        SELECT (SELECT count(*) FROM {TABLE}),
               (SELECT count(*) FROM pg_locks l
                 WHERE l.pid <> pg_backend_pid()
                   AND (l.relation = '{TABLE}'::regclass OR l.locktype = 'advisory')),
               (SELECT count(*) FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
                   AND state <> 'idle')"""
    deadline = time.monotonic() + SETTLE
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        while True:
            row = conn.execute(sql).fetchone()
            assert row is not None
            found = {"rows": row[0], "locks": row[1], "busy_backends": row[2]}
            if found == {"rows": rows, "locks": 0, "busy_backends": 0} or \
                    time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def next_client_sees(port: int) -> list[str | None]:
    """Through pgmux, on the pool's one server: the session state a new client finds."""
    with w.connect(port) as c:
        return c.rows(
            "SELECT current_setting('statement_timeout'),"
            " coalesce(current_setting('faults.marker', true), ''),"
            " (SELECT count(*) FROM pg_prepared_statements),"
            " (SELECT count(*) FROM pg_listening_channels()),"
            " to_regclass('pg_temp.leak_tmp') IS NULL,"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'),"
            f" (SELECT count(*) FROM {TABLE})")[0]


CLEAN = ["0", "", "0", "0", "t", "0", "0"]


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_vanish(shared_mux: SharedMux, pg: EmbeddedPostgres, table: str, pool_mode: str,
                point: str) -> None:
    mux = shared_mux(pool_mode=pool_mode, default_pool_size=1)
    for rst in (True, False):
        c = w.WireClient(mux.port)
        c.login()
        POINTS[point](c)
        c.vanish(rst=rst)
        how = "RST" if rst else "FIN"
        assert left_behind(pg) == {"rows": 0, "locks": 0, "busy_backends": 0}, how
        assert next_client_sees(mux.port) == CLEAN, how


def test_committed_work_survives_a_vanish(shared_mux: SharedMux, pg: EmbeddedPostgres,
                                          table: str) -> None:
    """The other side of the rule: what a client committed before it vanished stays."""
    mux = shared_mux(pool_mode="transaction", default_pool_size=1)
    c = w.WireClient(mux.port)
    c.login()
    for sql in ("BEGIN", f"INSERT INTO {TABLE} VALUES (7)", "COMMIT", "BEGIN",
                f"INSERT INTO {TABLE} VALUES (8)"):
        ok(c, sql)
    c.vanish(rst=True)
    assert left_behind(pg, rows=1) == {"rows": 1, "locks": 0, "busy_backends": 0}
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        assert conn.execute(f"SELECT x FROM {TABLE}").fetchall() == [(7,)]
