"""Process control from the console: PAUSE/RESUME, KILL_CLIENT, KILL, RECONNECT/WAIT_CLOSE,
SHUTDOWN WAIT_FOR_CLIENTS, with real clients in front of PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import psycopg
import pytest

from tests.integration.adminutil import admin, in_thread, pool, wait_for
from tests.integration.conftest import Pgmux, PgmuxFactory


def test_pause_holds_a_new_query_until_resume(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app, admin(pgmux) as conn:
        app.execute("select 1")
        assert pool(pgmux)["sv_idle"] == 1
        conn.execute("PAUSE")  # answers once the server is released and closed
        row = pool(pgmux)
        assert row["sv_idle"] + row["sv_active"] + row["sv_used"] == 0
        t, out = in_thread(lambda: app.execute("select 42").fetchone())
        t.join(0.8)
        assert t.is_alive(), "a query ran while paused"
        assert wait_for(lambda: pool(pgmux)["cl_waiting"] == 1)
        assert pool(pgmux)["maxwait"] >= 0
        conn.execute("RESUME")
        t.join(5)
        assert out == {"value": (42,)}


def test_pause_waits_for_the_open_transaction(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app, admin(pgmux) as conn:
        app.execute("begin")
        app.execute("select 1")
        t, out = in_thread(lambda: conn.execute("PAUSE"))
        t.join(0.5)
        assert t.is_alive(), "PAUSE answered while a transaction held a server"
        app.execute("commit")
        t.join(5)
        assert not t.is_alive() and "error" not in out
    with admin(pgmux) as conn:
        assert ("paused", "yes") in [(r["key"], r["value"])
                                     for r in conn.execute("SHOW STATE").fetchall()]
        conn.execute("RESUME")


def test_kill_client_ends_the_right_client(pgmux: Pgmux) -> None:
    async def main() -> None:
        victim = await asyncpg.connect(pgmux.dsn(application_name="victim"))
        bystander = await asyncpg.connect(pgmux.dsn(application_name="bystander"))
        console = await asyncpg.connect(pgmux.dsn(dbname="pgbouncer"))
        try:
            assert await victim.fetchval("select 1") == 1
            assert await bystander.fetchval("select 1") == 1
            clients = await console.fetch("SHOW CLIENTS")
            ids = {r["application_name"]: r["id"] for r in clients}
            assert ids["victim"] != ids["bystander"]
            # NOTE: a Bind parameter, as drivers send it.
            await console.execute("KILL_CLIENT $1", str(ids["victim"]))
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError,
                                asyncpg.exceptions.InternalClientError, ConnectionError)):
                await victim.fetchval("select 2")
            assert await bystander.fetchval("select 3") == 3
            left = {r["application_name"] for r in await console.fetch("SHOW CLIENTS")}
            assert "victim" not in left and "bystander" in left
            with pytest.raises(asyncpg.PostgresError, match="client not found"):
                await console.execute(f"KILL_CLIENT {ids['victim']}")
        finally:
            await bystander.close()
            await console.close()
            victim.terminate()

    asyncio.run(main())


def test_kill_database_then_resume(pgmux: Pgmux) -> None:
    app = psycopg.connect(pgmux.dsn(dbname="testdb"), autocommit=True)
    other = psycopg.connect(pgmux.dsn(), autocommit=True)
    try:
        app.execute("select 1")
        with admin(pgmux) as conn:
            conn.execute("KILL testdb")
            with pytest.raises(psycopg.OperationalError):
                app.execute("select 1")
            assert other.execute("select 2").fetchone() == (2,)
            later = psycopg.connect(pgmux.dsn(dbname="testdb"), autocommit=True)
            t, out = in_thread(lambda: later.execute("select 3").fetchone())
            t.join(0.5)
            assert t.is_alive(), "a killed database served a query before RESUME"
            conn.execute("RESUME testdb")
            t.join(5)
            assert out == {"value": (3,)}
            later.close()
    finally:
        app.close()
        other.close()


def test_reconnect_and_wait_close(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app, admin(pgmux) as conn:
        app.execute("begin")
        old_pid = app.execute("select pg_backend_pid()").fetchone()
        conn.execute("RECONNECT postgres")
        servers = conn.execute("SHOW SERVERS").fetchall()
        assert [s["close_needed"] for s in servers] == [1]
        t, out = in_thread(lambda: conn.execute("WAIT_CLOSE postgres"))
        t.join(0.5)
        assert t.is_alive(), "WAIT_CLOSE answered while a server still had to close"
        app.execute("commit")
        t.join(5)
        assert not t.is_alive() and "error" not in out
        assert app.execute("select pg_backend_pid()").fetchone() != old_pid
        assert [s["close_needed"] for s in conn.execute("SHOW SERVERS").fetchall()] == [0]


def test_shutdown_wait_for_clients(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    app = psycopg.connect(pgm.dsn(), autocommit=True)
    app.execute("select 1")
    with admin(pgm) as conn:
        conn.execute("SHUTDOWN WAIT_FOR_CLIENTS")
    time.sleep(0.5)
    assert pgm.proc.poll() is None, "exited while a client was still connected"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pgm.dsn(), connect_timeout=3)
    assert app.execute("select 2").fetchone() == (2,)
    app.close()
    assert pgm.proc.wait(10) == 0
