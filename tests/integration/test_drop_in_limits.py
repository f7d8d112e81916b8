"""PgBouncer 1.25's limits, timers, auto-databases and host lists through a real pgmux in front
of the real PostgreSQL (issue 11, areas 3, 4 and 8), written from PgBouncer's documentation:
its refusal texts, log lines and notices are what operators grep for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.integration.adminutil import admin, rows, wait_for
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(60)


def _entry(pg: EmbeddedPostgres, app: str, extra: str = "", dbname: str = "testdb",
           host: str = "127.0.0.1") -> str:
    return f"host={host} port={pg.port} dbname={dbname} application_name={app} {extra}"


def _direct(pg: EmbeddedPostgres, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def _backends(pg: EmbeddedPostgres, app: str) -> list[tuple[Any, ...]]:
    """(pid, state, query) of the client backends with this application_name."""
    return _direct(pg, "select pid, state, query from pg_stat_activity "
                       "where application_name = %s and backend_type = 'client backend'", app)


def _db_row(mux: Pgmux, name: str) -> dict[str, Any] | None:
    return next((r for r in rows(mux, "SHOW DATABASES") if r["name"] == name), None)


def _in_threads(*jobs: Callable[[], object]) -> list[object]:
    """Run the jobs at once, each on its own thread; their results (or exceptions) in order."""
    out: list[object] = [None] * len(jobs)

    def run(i: int, job: Callable[[], object]) -> None:
        try:
            out[i] = job()
        except Exception as exc:  # noqa: BLE001 - the caller looks at each outcome
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


# ---- max_db_client_connections / max_user_client_connections: the counts ----------------

def test_client_counts_follow_clients_and_failed_server_logins(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"max_user_client_connections": 3, "server_login_retry": 0.2},
                        databases={
                            "cnt": _entry(pg, "dl_cnt", "max_db_client_connections=2"),
                            "other": _entry(pg, "dl_cnt", dbname="postgres"),
                            "gone": _entry(pg, "dl_gone", "max_db_client_connections=1",
                                           dbname="no_such_database_here"),
                        })
    a = psycopg.connect(mux.dsn(dbname="cnt"), autocommit=True)
    b = psycopg.connect(mux.dsn(dbname="cnt"), autocommit=True)
    try:
        # SHOW DATABASES / SHOW USERS read the real counts.
        row = _db_row(mux, "cnt")
        assert row is not None and row["current_client_connections"] == 2
        assert row["max_client_connections"] == 2
        user = next(r for r in rows(mux, "SHOW USERS") if r["name"] == "postgres")
        assert user["current_client_connections"] == 2
        assert user["max_user_client_connections"] == 3
        with pytest.raises(psycopg.OperationalError,
                           match=r"client connections exceeded \(max_db_client_connections\)"):
            psycopg.connect(mux.dsn(dbname="cnt"), connect_timeout=5)
        # A client that leaves is no longer counted.
        b.close()
        wait_for(lambda: (_db_row(mux, "cnt") or {}).get("current_client_connections") == 1)
        b = psycopg.connect(mux.dsn(dbname="cnt"), autocommit=True)
        assert b.execute("select 1").fetchone() == (1,)
        # The user limit counts across databases: a third client is the user's last.
        with pytest.raises(psycopg.OperationalError, match="max_user_client_connections"):
            c = psycopg.connect(mux.dsn(dbname="other"), autocommit=True)
            try:
                psycopg.connect(mux.dsn(dbname="other"), connect_timeout=5)
            finally:
                c.close()
    finally:
        a.close()
        b.close()
    # A server login that fails closes its clients, and they stop counting: each new try gets
    # the server's own error, never the client limit.
    for _ in range(3):
        with pytest.raises(psycopg.OperationalError) as err:
            psycopg.connect(mux.dsn(dbname="gone"), connect_timeout=5)
        assert "no_such_database_here" in str(err.value), err.value
        assert "max_db_client_connections" not in str(err.value)
        time.sleep(0.3)
    row = _db_row(mux, "gone")
    assert row is not None and row["current_client_connections"] == 0


# ---- reserve_pool_size / reserve_pool_timeout ----------------------------------------------

def _two_sleepers(mux: Pgmux, dbname: str, seconds: float) -> list[object]:
    def sleep() -> object:
        with psycopg.connect(mux.dsn(dbname=dbname), autocommit=True, connect_timeout=10) as c:
            return c.execute("select pg_sleep(%s)", (seconds,)).fetchone()
    return _in_threads(sleep, sleep)


def test_reserve_pool_from_users_section_logs_pgbouncers_line(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1, "reserve_pool_timeout": 0.3},
                        databases={"rp": _entry(pg, "dl_rp")},
                        users={"postgres": "reserve_pool_size=1"})
    with psycopg.connect(mux.dsn(dbname="rp")) as conn:
        conn.execute("select 1")
    results = _two_sleepers(mux, "rp", 1.0)
    assert all(isinstance(r, tuple) for r in results), results
    assert "taking connection from reserve_pool" in mux.logs()
    pool = next(r for r in rows(mux, "SHOW POOLS") if r["database"] == "rp")
    assert pool["sv_idle"] + pool["sv_active"] + pool["sv_used"] == 2


def test_reserve_pool_timeout_zero_disables_the_reserve(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1, "reserve_pool_timeout": 0},
                        databases={"rp0": _entry(pg, "dl_rp0", "reserve_pool_size=2")})
    with psycopg.connect(mux.dsn(dbname="rp0")) as conn:
        conn.execute("select 1")
    results = _two_sleepers(mux, "rp0", 0.6)
    assert all(isinstance(r, tuple) for r in results), results
    assert "taking connection from reserve_pool" not in mux.logs()
    assert len(_backends(pg, "dl_rp0")) == 1


# ---- the '*' auto-database -----------------------------------------------------------------

def test_fallback_database_registers_applies_its_options_and_is_dropped_when_idle(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    # NOTE: as in PgBouncer, an auto-database is in use while its pools have servers, idle
    # ones too: server_idle_timeout closes them first.
    mux = pgmux_factory({"autodb_idle_timeout": 1, "server_idle_timeout": 0.5,
                         "log_connections": 1},
                        databases={"*": _entry(pg, "dl_auto", "pool_size=3", dbname="testdb")})
    with psycopg.connect(mux.dsn(dbname="anyname"), autocommit=True) as conn:
        # The '*' entry's options apply: its dbname and application_name, its pool_size.
        assert conn.execute("select current_database()").fetchone() == ("testdb",)
        assert _backends(pg, "dl_auto")
        row = _db_row(mux, "anyname")
        assert row is not None and row["pool_size"] == 3
        assert row["current_client_connections"] == 1
    assert "registered new auto-database: anyname" in mux.logs()
    # Unused for autodb_idle_timeout: dropped, with PgBouncer's line.
    wait_for(lambda: "dropping database 'anyname' as it does not exist anymore or "
                     "inactive auto-database" in mux.logs(), timeout=8)
    assert _db_row(mux, "anyname") is None
    # Asked for again, it is registered again.
    with psycopg.connect(mux.dsn(dbname="anyname")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert mux.logs().count("registered new auto-database: anyname") == 2


# ---- host lists and load_balance_hosts -----------------------------------------------------

@pytest.mark.parametrize("balance", ["disable", "round-robin"])
def test_host_list_with_a_bad_first_host(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
                                         balance: str) -> None:
    # NOTE: PostgreSQL listens on 127.0.0.1 only; 127.0.0.2 is loopback too and refuses.
    mux = pgmux_factory({"log_connections": 1, "default_pool_size": 2},
                        databases={"hl": _entry(pg, "dl_hosts", f"load_balance_hosts={balance}",
                                                host="127.0.0.2,127.0.0.1")})
    with psycopg.connect(mux.dsn(dbname="hl"), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        # A cancel request goes to the host the server is connected to.
        result = _in_threads(lambda: conn.execute("select pg_sleep(20)"),
                             lambda: (time.sleep(0.5), conn.cancel()))
        assert isinstance(result[0], psycopg.errors.QueryCanceled), result
    logs = mux.logs()
    assert "trying the next host" in logs
    # The server's log prefix names the host it is connected to, not the list.
    assert f"/postgres@127.0.0.1:{pg.port} new connection to server" in logs
    assert "127.0.0.2,127.0.0.1:" not in logs


# ---- transaction_timeout -------------------------------------------------------------------

def test_transaction_timeout_closes_a_long_transaction(pg: EmbeddedPostgres,
                                                       pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"transaction_timeout": 0.8},
                        databases={"xt": _entry(pg, "dl_xt")})
    # Short transactions are not affected, however many.
    with psycopg.connect(mux.dsn(dbname="xt"), autocommit=True) as conn:
        for _ in range(3):
            with conn.transaction():
                conn.execute("select pg_sleep(0.3)")
    # A transaction whose statements are each short but which lasts too long is closed.
    conn = psycopg.connect(mux.dsn(dbname="xt"))
    try:
        conn.execute("select 1")
        with pytest.raises(psycopg.OperationalError, match="transaction timeout"):
            for _ in range(10):
                conn.execute("select pg_sleep(0.2)")
    finally:
        conn.close()
    # One long statement is a long transaction too.
    with psycopg.connect(mux.dsn(dbname="xt"), autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="transaction timeout"):
            conn.execute("select pg_sleep(10)")
        assert time.monotonic() - started < 5
    # The pool goes on.
    with psycopg.connect(mux.dsn(dbname="xt")) as conn:
        assert conn.execute("select 2").fetchone() == (2,)


# ---- server_lifetime per pool --------------------------------------------------------------

def test_database_server_lifetime_overrides_the_global_one(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1, "server_lifetime": 3600},
                        databases={"short": _entry(pg, "dl_short", "server_lifetime=0.5"),
                                   "long": _entry(pg, "dl_long")})

    def pid(dbname: str) -> int:
        with psycopg.connect(mux.dsn(dbname=dbname)) as conn:
            row = conn.execute("select pg_backend_pid()").fetchone()
            assert row is not None
            return int(row[0])

    short, long_ = pid("short"), pid("long")
    wait_for(lambda: not _backends(pg, "dl_short"), timeout=5)
    assert pid("short") != short
    assert pid("long") == long_


# ---- query_wait_notify -----------------------------------------------------------------------

def test_query_wait_notify_tells_a_waiting_client(pg: EmbeddedPostgres,
                                                  pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1, "query_wait_notify": 0.5},
                        databases={"qn": _entry(pg, "dl_qn")})
    notices: list[str] = []
    holder = psycopg.connect(mux.dsn(dbname="qn"))
    waiter = psycopg.connect(mux.dsn(dbname="qn"), autocommit=True)
    waiter.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    # NOTE: joined before the close: the waiter may be served (the server released at the
    # COMMIT) before the timer's thread has read the COMMIT's answer.
    release = threading.Timer(1.5, holder.commit)
    try:
        holder.execute("select 1")  # holds the only server in its transaction
        release.start()
        assert waiter.execute("select 7").fetchone() == (7,)
        assert notices == ["No server connection available in postgres backend, "
                           "client being queued"]
        # A client that gets a server at once hears nothing.
        notices.clear()
        assert waiter.execute("select 8").fetchone() == (8,)
        assert notices == []
    finally:
        if release.is_alive():
            release.join(10)
        holder.close()
        waiter.close()


# ---- server_check_query / server_check_delay -------------------------------------------------

def test_idle_servers_are_checked_after_server_check_delay(pg: EmbeddedPostgres,
                                                           pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"server_check_query": "select 'pgmux_check'",
                         "server_check_delay": 0.5},
                        databases={"chk": _entry(pg, "dl_chk")})
    with psycopg.connect(mux.dsn(dbname="chk")) as conn:
        conn.execute("select 'client query'")
    # The idle server's last query becomes the check, and the server stays usable.
    wait_for(lambda: [b for b in _backends(pg, "dl_chk") if b[2] == "select 'pgmux_check'"],
             timeout=5)
    with psycopg.connect(mux.dsn(dbname="chk")) as conn:
        assert conn.execute("select 3").fetchone() == (3,)


def test_server_check_query_empty_disables_the_check(pg: EmbeddedPostgres,
                                                     pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"server_check_query": "", "server_check_delay": 0.2},
                        databases={"nochk": _entry(pg, "dl_nochk")})
    with psycopg.connect(mux.dsn(dbname="nochk"), autocommit=True) as conn:
        conn.execute("select 'client query'")
    time.sleep(1.0)
    assert [b[2] for b in _backends(pg, "dl_nochk")] == ["select 'client query'"]


# ---- server_fast_close ---------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False])
def test_server_fast_close_ends_sessions_after_reconnect(pg: EmbeddedPostgres,
                                                         pgmux_factory: PgmuxFactory,
                                                         fast: bool) -> None:
    mux = pgmux_factory({"pool_mode": "session", "server_fast_close": int(fast)},
                        databases={"fc": _entry(pg, "dl_fc")})
    conn = psycopg.connect(mux.dsn(dbname="fc"))
    try:
        conn.execute("select 1")  # a transaction is open: it is let finish
        with admin(mux) as console:
            console.execute("RECONNECT fc")
        time.sleep(0.6)
        assert conn.execute("select 2").fetchone() == (2,)
        conn.commit()
        if fast:
            # Once the transaction is over, the server goes, and its client with it.
            time.sleep(0.6)
            with pytest.raises(psycopg.OperationalError,
                               match="database configuration changed"):
                conn.execute("select 3")
        else:
            # Without it, the session keeps its server until it ends.
            time.sleep(0.6)
            assert conn.execute("select 3").fetchone() == (3,)
    finally:
        conn.close()
