"""Replication connections through pgmux (PgBouncer 1.23+): pg_basebackup, pg_receivewal,
pg_recvlogical and a psycopg walsender connection, each on a server of its own that is never
pooled; a role without REPLICATION gets the server's own refusal."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests import unprivileged
from tests.integration.adminutil import rows as admin_rows
from tests.integration.adminutil import wait_for
from tests.integration.conftest import Pgmux, PgmuxFactory

_HBA = [
    "host replication postgres 127.0.0.1/32 trust",
    "host replication norepl 127.0.0.1/32 trust",
    "host all norepl 127.0.0.1/32 trust",
]


@pytest.fixture(scope="module")
def repl_pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of its own with wal_level=logical and replication lines in pg_hba.conf."""
    server = EmbeddedPostgres(max_connections=20, hba_lines=_HBA, settings={
        "wal_level": "logical", "max_wal_senders": "10", "max_replication_slots": "10"})
    try:
        server.start()
        server.execute("CREATE ROLE norepl LOGIN")
        server.execute("CREATE TABLE repl_t (id int primary key, v text)")
        yield server
    finally:
        server.cleanup()


def _start(pgmux_factory: PgmuxFactory, repl_pg: EmbeddedPostgres, **settings: object
           ) -> tuple[Pgmux, str]:
    mux = pgmux_factory(
        {"pool_mode": "transaction", "default_pool_size": 2, **settings},
        databases={"postgres": f"host=127.0.0.1 port={repl_pg.port} dbname=postgres"},
        userlist={"postgres": "", "norepl": ""}, target=repl_pg)
    return mux, f"host=127.0.0.1 port={mux.port} user=postgres dbname=postgres"


def _run(pg: EmbeddedPostgres, tool: str, *args: str, timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(pg.bin_dir / tool), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _lsn(pg: EmbeddedPostgres) -> str:
    return str(pg.query("SELECT pg_current_wal_insert_lsn()")[0][0])


def test_pg_basebackup_through_pgmux(pgmux_factory: PgmuxFactory, repl_pg: EmbeddedPostgres,
                                     tmp_path: Path) -> None:
    mux, conninfo = _start(pgmux_factory, repl_pg)
    target = tmp_path / "backup"
    # NOTE: -X stream opens a second replication connection beside the base backup's.
    done = _run(repl_pg, "pg_basebackup", "-d", conninfo, "-D", str(target), "-X", "stream",
                "-c", "fast", "--no-sync", "--no-manifest")
    assert done.returncode == 0, done.stderr
    assert (target / "PG_VERSION").exists()
    assert (target / "backup_label").exists()
    # Replication servers are not pooled: none is left once the clients are gone, and normal
    # clients still get a normal server.
    assert repl_pg.query("SELECT count(*) FROM pg_stat_replication")[0][0] == 0
    # SHOW STATS counts what went through, as for any client (a base backup: megabytes).
    stats = [r for r in admin_rows(mux, "SHOW STATS") if r["database"] == "postgres"]
    assert stats and stats[0]["total_sent"] > 1_000_000
    with psycopg.connect(mux.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


def test_pg_receivewal_streams_a_segment(pgmux_factory: PgmuxFactory,
                                         repl_pg: EmbeddedPostgres, tmp_path: Path) -> None:
    _, conninfo = _start(pgmux_factory, repl_pg)
    target = tmp_path / "wal"
    target.mkdir()
    end = _lsn(repl_pg)
    # NOTE: WAL past the end position, flushed, so that pg_receivewal stops at once.
    repl_pg.execute("SET synchronous_commit = on; "
                    "INSERT INTO repl_t VALUES (1, 'wal') ON CONFLICT DO NOTHING")
    done = _run(repl_pg, "pg_receivewal", "-d", conninfo, "-D", str(target), "-n",
                "--no-sync", "-s", "1", "-E", end, timeout=30)
    assert done.returncode == 0, done.stderr
    assert any(f.name.endswith(".partial") or len(f.name) == 24 for f in target.iterdir())


def test_pg_recvlogical_decodes_changes(pgmux_factory: PgmuxFactory,
                                        repl_pg: EmbeddedPostgres) -> None:
    _, conninfo = _start(pgmux_factory, repl_pg)
    slot = ["-d", conninfo, "--slot", "pgmux_slot"]
    made = _run(repl_pg, "pg_recvlogical", *slot, "--create-slot", "-P", "test_decoding")
    assert made.returncode == 0, made.stderr
    try:
        repl_pg.execute("INSERT INTO repl_t VALUES (42, 'through pgmux')")
        # NOTE: decoding stops at the first transaction at or past the end position.
        repl_pg.execute("INSERT INTO repl_t VALUES (43, 'after')")
        end = _lsn(repl_pg)
        got = _run(repl_pg, "pg_recvlogical", *slot, "--start", "-E", end, "-f", "-",
                   "--no-loop", timeout=30)
        assert got.returncode == 0, got.stderr
        assert "table public.repl_t: INSERT: id[integer]:42 v[text]:'through pgmux'" in got.stdout
    finally:
        dropped = _run(repl_pg, "pg_recvlogical", *slot, "--drop-slot")
        assert dropped.returncode == 0, dropped.stderr


def test_walsender_session_with_psycopg(pgmux_factory: PgmuxFactory,
                                        repl_pg: EmbeddedPostgres) -> None:
    """A logical walsender connection as a subscriber opens it: IDENTIFY_SYSTEM and SQL on one
    server of its own (its backend pid stays), shown as such in SHOW CLIENTS."""
    mux, conninfo = _start(pgmux_factory, repl_pg, log_connections=1)
    with psycopg.connect(conninfo + " replication=database", autocommit=True) as conn:
        # NOTE: PgBouncer's words: replication=no|database|yes.
        assert "login attempt: db=postgres user=postgres tls=no replication=database" in \
            mux.logs()
        ident = conn.execute("IDENTIFY_SYSTEM").fetchone()
        assert ident is not None and ident[1] == 1  # timeline
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == pid
        kinds = repl_pg.query("SELECT backend_type FROM pg_stat_activity "
                              f"WHERE pid = {pid[0] if pid else 0}")
        assert kinds == [("walsender",)]
        rows = admin_rows(mux, "SHOW CLIENTS")
        assert [r["replication"] for r in rows if r["database"] == "postgres"] == ["logical"]
        servers = [r for r in admin_rows(mux, "SHOW SERVERS") if r["replication"] != "none"]
        assert [(s["replication"], s["state"], s["remote_pid"]) for s in servers] == \
            [("logical", "active", pid[0] if pid else 0)]
    assert repl_pg.query("SELECT count(*) FROM pg_stat_activity "
                         "WHERE backend_type = 'walsender'")[0][0] == 0


def test_role_without_replication_gets_the_servers_refusal(
        pgmux_factory: PgmuxFactory, repl_pg: EmbeddedPostgres) -> None:
    _, conninfo = _start(pgmux_factory, repl_pg)
    direct = f"host=127.0.0.1 port={repl_pg.port} user=norepl dbname=postgres replication=true"
    with pytest.raises(psycopg.OperationalError) as want:
        psycopg.connect(direct).close()
    through = conninfo.replace("user=postgres", "user=norepl") + " replication=true"
    with pytest.raises(psycopg.OperationalError) as got:
        psycopg.connect(through).close()
    # NOTE: the server's words, its DETAIL included ("permission denied to start WAL sender",
    # "Only roles with the REPLICATION attribute ...").
    assert "REPLICATION attribute" in str(got.value)
    assert str(want.value).split("FATAL:", 1)[1] == str(got.value).split("FATAL:", 1)[1]


def test_bad_replication_value_is_refused(pgmux_factory: PgmuxFactory,
                                          repl_pg: EmbeddedPostgres) -> None:
    _, conninfo = _start(pgmux_factory, repl_pg)
    with pytest.raises(psycopg.OperationalError, match='invalid value for parameter'):
        psycopg.connect(conninfo + " replication=maybe").close()


def test_hba_replication_lines(pgmux_factory: PgmuxFactory, repl_pg: EmbeddedPostgres,
                               tmp_path: Path) -> None:
    """auth_type = hba: a physical replication login matches only lines whose database is
    `replication`; a logical one and an ordinary one match database names."""
    hba = tmp_path / "hba.conf"
    hba.write_text("host replication postgres 127.0.0.1/32 trust\n"
                   "host postgres postgres 127.0.0.1/32 reject\n")
    unprivileged.give_away(tmp_path)
    mux = pgmux_factory(
        {"auth_type": "hba", "auth_hba_file": str(hba)},
        databases={"postgres": f"host=127.0.0.1 port={repl_pg.port} dbname=postgres"},
        userlist={"postgres": ""}, target=repl_pg)
    conninfo = f"host=127.0.0.1 port={mux.port} user=postgres dbname=postgres"
    with psycopg.connect(conninfo + " replication=true", autocommit=True) as conn:
        # NOTE: a physical walsender takes the simple query protocol only.
        res = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
        assert res.status == psycopg.pq.ExecStatus.TUPLES_OK and res.get_value(0, 1) == b"1"
    for extra in (" replication=database", ""):
        with pytest.raises(psycopg.OperationalError, match="login rejected"):
            psycopg.connect(conninfo + extra).close()


def test_either_side_ending_ends_the_other(pgmux_factory: PgmuxFactory,
                                           repl_pg: EmbeddedPostgres, tmp_path: Path) -> None:
    """A streaming client that vanishes takes its walsender with it; a walsender terminated
    on the server ends its client."""
    mux, conninfo = _start(pgmux_factory, repl_pg)
    receiver = subprocess.Popen(
        [str(repl_pg.bin_dir / "pg_receivewal"), "-d", conninfo, "-D", str(tmp_path), "-n",
         "--no-sync"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: repl_pg.query("SELECT count(*) FROM pg_stat_replication")[0][0] == 1)
    finally:
        receiver.kill()
        receiver.wait()
    wait_for(lambda: repl_pg.query("SELECT count(*) FROM pg_stat_replication")[0][0] == 0)
    with psycopg.connect(conninfo + " replication=database", autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        repl_pg.execute(f"SELECT pg_terminate_backend({pid[0]})")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("IDENTIFY_SYSTEM")
    wait_for(lambda: not [r for r in admin_rows(mux, "SHOW CLIENTS")
                          if r["replication"] != "none"])


def test_cancel_reaches_the_walsender(pgmux_factory: PgmuxFactory,
                                      repl_pg: EmbeddedPostgres) -> None:
    _, conninfo = _start(pgmux_factory, repl_pg)
    with psycopg.connect(conninfo + " replication=database", autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(20)")
        finally:
            timer.cancel()
        assert time.monotonic() - started < 10


def test_logical_subscription_through_pgmux(pgmux_factory: PgmuxFactory,
                                            repl_pg: EmbeddedPostgres) -> None:
    """A PostgreSQL subscriber whose CONNECTION is pgmux: initial copy (a tablesync worker),
    streaming of later changes (the apply worker), and DROP SUBSCRIPTION dropping its slot."""
    _, conninfo = _start(pgmux_factory, repl_pg)
    repl_pg.execute("CREATE TABLE sub_t (id int primary key, v text); "
                    "INSERT INTO sub_t VALUES (1, 'copied'); "
                    "CREATE PUBLICATION pgmux_pub FOR TABLE sub_t")
    subscriber = EmbeddedPostgres(max_connections=20)
    try:
        subscriber.start()
        subscriber.execute("CREATE TABLE sub_t (id int primary key, v text)")
        subscriber.execute(f"CREATE SUBSCRIPTION pgmux_sub CONNECTION '{conninfo}' "
                           "PUBLICATION pgmux_pub")
        wait_for(lambda: subscriber.query("SELECT v FROM sub_t") == [("copied",)], timeout=30)
        repl_pg.execute("INSERT INTO sub_t VALUES (2, 'streamed')")
        wait_for(lambda: subscriber.query("SELECT v FROM sub_t ORDER BY id") ==
                 [("copied",), ("streamed",)], timeout=30)
        subscriber.execute("DROP SUBSCRIPTION pgmux_sub")
        assert repl_pg.query("SELECT count(*) FROM pg_replication_slots "
                             "WHERE slot_name = 'pgmux_sub'")[0][0] == 0
    finally:
        subscriber.cleanup()
        repl_pg.execute("DROP PUBLICATION IF EXISTS pgmux_pub; DROP TABLE IF EXISTS sub_t")
