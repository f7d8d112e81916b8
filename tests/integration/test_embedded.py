"""The embedded PostgreSQL and the shared fixtures, checked against a real server."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable

import asyncpg
import pg8000.native
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres, EmbeddedPostgresError
from pgmux.embedded.install import run_as

PgFactory = Callable[..., EmbeddedPostgres]


def test_psycopg_select_1(pg: EmbeddedPostgres) -> None:
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_asyncpg_select_1(pg: EmbeddedPostgres) -> None:
    async def main() -> object:
        conn = await asyncpg.connect(pg.url)
        try:
            return await conn.fetchval("select 1")
        finally:
            await conn.close()

    assert asyncio.run(main()) == 1


def test_pg8000_select_1(pg: EmbeddedPostgres) -> None:
    conn = pg8000.native.Connection(pg.superuser, host=pg.host, port=pg.port, database="postgres")
    try:
        assert conn.run("select 1") == [[1]]
    finally:
        conn.close()


def test_helpers_and_attributes(pg: EmbeddedPostgres) -> None:
    assert pg.host == "127.0.0.1"
    assert pg.superuser == "postgres"
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    assert pg.dsn("a b", "p@ss/:", "testdb") == (
        f"postgresql://a%20b:p%40ss%2F%3A@127.0.0.1:{pg.port}/testdb"
    )
    assert pg.version.split(".")[0].isdigit()
    assert pg.pid is not None and pg.pid > 0
    assert 20000 <= pg.port <= 32000
    assert pg.query("show max_connections") == [("40",)]
    assert pg.query("select datname from pg_database where datname = 'testdb'") == [("testdb",)]
    pg.execute("create temp table t (x int); insert into t values (1)")


@pytest.mark.parametrize(
    ("user", "method", "stored_prefix"),
    [("md5user", "md5", "md5"), ("scramuser", "scram-sha-256", "SCRAM-SHA-256$"),
     ("plainuser", "password", "SCRAM-SHA-256$")],
)  # fmt: skip
def test_password_roles(
    pg: EmbeddedPostgres, pg_roles: dict[str, str], user: str, method: str, stored_prefix: str
) -> None:
    rules = pg.query(
        "select auth_method from pg_hba_file_rules "
        f"where '{user}' = any(user_name) order by rule_number limit 1"
    )
    assert rules == [(method,)]
    stored = pg.query(f"select rolpassword from pg_authid where rolname = '{user}'")
    assert stored[0][0].startswith(stored_prefix)

    password = pg_roles[user]
    for dbname in ("postgres", "testdb"):
        with psycopg.connect(pg.dsn(user, password, dbname)) as conn:
            assert conn.execute("select current_user").fetchone() == (user,)
            conn.execute(f"create table {user}_t (x int)")  # may create in public
            conn.rollback()
    conn8 = pg8000.native.Connection(
        user, host=pg.host, port=pg.port, password=password, database="postgres"
    )
    conn8.close()

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn(user, "wrong-" + password)).close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(user)).close()


def test_restart_keeps_port_and_data(pg_factory: PgFactory) -> None:
    server: EmbeddedPostgres = pg_factory(max_connections=7)
    server.execute("create table kept (x int); insert into kept values (42)")
    port, pid = server.port, server.pid
    server.restart()
    assert server.port == port
    assert server.pid is not None and server.pid != pid
    assert server.query("select x from kept") == [(42,)]
    assert server.query("show max_connections") == [("7",)]
    server.stop()
    assert server.pid is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2).close()
    server.start()
    assert server.query("select count(*) from kept") == [(1,)]


def test_settings_and_hba_lines(pg_factory: PgFactory) -> None:
    server: EmbeddedPostgres = pg_factory(
        settings={"work_mem": "7MB"}, hba_lines=["host all nobodyhere 127.0.0.1/32 reject"]
    )
    assert server.query("show work_mem") == [("7MB",)]
    assert server.query("select min(rule_number) from pg_hba_file_rules "
                        "where 'nobodyhere' = any(user_name)") == [(1,)]  # fmt: skip


def test_cleanup_removes_data_dir() -> None:
    server = EmbeddedPostgres().start()
    data_dir = server.data_dir
    assert data_dir is not None and (data_dir / "PG_VERSION").is_file()
    assert (data_dir.stat().st_mode & 0o777) == 0o700
    server.cleanup()
    assert server.pid is None
    assert not data_dir.exists()
    assert not data_dir.parent.exists()
    server.cleanup()  # idempotent


def test_context_manager() -> None:
    with EmbeddedPostgres() as server:
        assert server.query("select 2") == [(2,)]
        data_dir = server.data_dir
    assert data_dir is not None and not data_dir.exists()


def test_start_failure_shows_server_log(pg_factory: PgFactory) -> None:
    with pytest.raises(EmbeddedPostgresError, match="shared_buffers"):
        pg_factory(settings={"shared_buffers": "not-a-size"})


def test_psql_from_bin_dir(pg: EmbeddedPostgres) -> None:
    out = subprocess.run(
        [str(pg.bin_dir / "psql"), pg.url, "-At", "-c", "select 1"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert out.stdout.strip() == "1"
    assert pg.socket_dir is not None
    via_socket = subprocess.run(
        [str(pg.bin_dir / "psql"), "-h", str(pg.socket_dir), "-p", str(pg.port),
         "-U", "postgres", "-At", "-c", "select 3"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert via_socket.stdout.strip() == "3"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to an unprivileged user")
def test_server_runs_unprivileged_and_tools_work_for_its_user(pg: EmbeddedPostgres) -> None:
    user = run_as()
    assert user.uid not in (None, 0)
    assert pg.pid is not None
    assert os.stat(f"/proc/{pg.pid}").st_uid == user.uid
    out = subprocess.run(
        [str(pg.bin_dir / "pgbench"), "--version"],
        user=user.uid, group=user.gid, extra_groups=[], cwd="/",
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert "pgbench" in out.stdout


def test_free_port_fixture(free_port: int) -> None:
    assert 20000 <= free_port <= 32000
