"""Named prepared statements in transaction mode with real drivers, on fewer servers than
clients, so statements must follow each client from server to server."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import threading

import asyncpg
import pg8000.native
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import Pgmux, PgmuxFactory


def test_asyncpg_pool_of_40_on_10_servers(pgmux: Pgmux) -> None:
    async def main() -> None:
        pool = await asyncpg.create_pool(pgmux.dsn(), min_size=40, max_size=40)
        assert pool is not None

        async def task(i: int) -> None:
            async with pool.acquire() as conn:
                stmt = await conn.prepare("select $1::int * 3 + $2::int")
                for j in range(50):
                    # The statement cache prepares these on first use; they run on whichever
                    # of the 10 servers the transaction lands on.
                    assert await conn.fetchval("select $1::int + $2::int", i, j) == i + j
                    assert await conn.fetchval(
                        "select $1::text || '-' || $2::text", str(i), str(j)) == f"{i}-{j}"
                    assert await stmt.fetchval(i, j) == i * 3 + j

        try:
            await asyncio.gather(*(task(i) for i in range(40)))
        finally:
            await pool.close()

    asyncio.run(main())


def test_psycopg_prepare_threshold_0_30_threads(pgmux: Pgmux) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with psycopg.connect(pgmux.dsn(), autocommit=True, prepare_threshold=0) as conn:
                for j in range(50):
                    row = conn.execute("select %s::int * 10 + %s::int", (i, j)).fetchone()
                    assert row == (i * 10 + j,)
                    with conn.transaction():
                        row = conn.execute("select %s::text", (f"t{i}-{j}",)).fetchone()
                        assert row == (f"t{i}-{j}",)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_pg8000_prepared(pgmux: Pgmux) -> None:
    conns = [pg8000.native.Connection("postgres", host="127.0.0.1", port=pgmux.port,
                                      database="postgres") for _ in range(3)]
    try:
        stmts = [c.prepare("select :a::int + :b::int") for c in conns]
        for i in range(30):
            for k, ps in enumerate(stmts):
                assert ps.run(a=i, b=k) == [[i + k]]
        for c in conns:
            assert c.run("select :x::text", x="plain") == [["plain"]]
        for ps in stmts:
            ps.close()
    finally:
        for c in conns:
            c.close()


def test_lru_eviction_with_2_slots_and_5_statements(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"max_prepared_statements": 2, "default_pool_size": 2})

    async def main() -> None:
        conns = [await asyncpg.connect(px.dsn()) for _ in range(4)]
        try:
            queries = [f"select $1::int + {k}" for k in range(5)]
            stmts = []
            for c in conns:
                stmts.append([await c.prepare(q) for q in queries])
                # NOTE: asyncpg's prepare() ends with Flush, not Sync: the connection holds its
                # server until it next syncs, exactly as it would through PgBouncer.
                assert await stmts[-1][0].fetchval(1) == 1
            for rnd in range(10):
                for ci, per_conn in enumerate(stmts):
                    for k, stmt in enumerate(per_conn):
                        assert await stmt.fetchval(rnd * 100 + ci) == rnd * 100 + ci + k
        finally:
            for c in conns:
                await c.close()

    asyncio.run(main())


def _msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


def test_errors_keep_postgres_texts(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as conn:
        pgconn = conn.pgconn
        res = pgconn.prepare(b"s1", b"select 1")
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK
        res = pgconn.prepare(b"s1", b"select 2")
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42P05"
        assert b'prepared statement "s1" already exists' in (res.error_message or b"")
        res = pgconn.exec_prepared(b"nope", [])
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000"
        assert b'prepared statement "nope" does not exist' in (res.error_message or b"")
        # The connection stays usable and s1 still answers.
        res = pgconn.exec_prepared(b"s1", [])
        assert res.status == psycopg.pq.ExecStatus.TUPLES_OK and res.get_value(0, 0) == b"1"
        # DEALLOCATE ALL clears the client's statements.
        conn.execute("deallocate all")
        res = pgconn.exec_prepared(b"s1", [])
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000"
        res = pgconn.prepare(b"s1", b"select 3")
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK
        assert pgconn.exec_prepared(b"s1", []).get_value(0, 0) == b"3"


def test_sql_level_prepare(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"default_pool_size": 2})
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        with conn.transaction():
            conn.execute("prepare q1(int) as select $1 * 2")
            assert conn.execute("execute q1(21)").fetchone() == (42,)
        # session_state = track: it follows the client to later transactions
        assert conn.execute("execute q1(1)").fetchone() == (2,)


def test_sql_level_prepare_in_reset_mode(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"default_pool_size": 2}, pgmux={"session_state": "reset"})
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        # Inside one transaction it just works.
        with conn.transaction():
            conn.execute("prepare q1(int) as select $1 * 2")
            assert conn.execute("execute q1(21)").fetchone() == (42,)
        # In a later transaction it cannot be there: a clear error naming the cause.
        with pytest.raises(psycopg.errors.InvalidSqlStatementName,
                           match="transaction pooling"):
            conn.execute("execute q1(1)")
        assert conn.execute("select 5").fetchone() == (5,)


def test_pgbench_prepared(pg: EmbeddedPostgres, pgmux: Pgmux) -> None:
    pgbench = str(pg.bin_dir / "pgbench")
    base = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run([pgbench, "-i", "-s", "1", "-q", *base, "-p", str(pg.port), "testdb"],
                   check=True, capture_output=True)
    for mode in ("simple", "extended", "prepared"):
        r = subprocess.run([pgbench, "-S", "-M", mode, "-c", "20", "-j", "2", "-t", "100",
                            *base, "-p", str(pgmux.port), "testdb"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "number of failed transactions: 0" in r.stdout, r.stdout
        assert "number of transactions actually processed: 2000/2000" in r.stdout
