"""The pooler answers real drivers in transaction mode."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pg8000.native
import psycopg

from tests.integration.conftest import Pgmux


def test_psycopg_sync(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as conn:
        assert conn.execute("select 1 + 1").fetchone() == (2,)
        with conn.transaction():
            conn.execute("create temp table t (x int)")
            conn.execute("insert into t values (41)")
            assert conn.execute("select x + 1 from t").fetchone() == (42,)


def test_psycopg_async(pgmux: Pgmux) -> None:
    async def main() -> list[int]:
        async with await psycopg.AsyncConnection.connect(pgmux.dsn(), autocommit=True) as conn:
            out = []
            for i in range(20):
                cur = await conn.execute("select %s::int * 2", (i,))
                row = await cur.fetchone()
                assert row is not None
                out.append(row[0])
            return out

    assert asyncio.run(main()) == [i * 2 for i in range(20)]


def test_asyncpg(pgmux: Pgmux) -> None:
    async def main() -> int:
        conn = await asyncpg.connect(pgmux.dsn())
        try:
            total = 0
            for i in range(20):
                total += await conn.fetchval("select $1::int", i)
            return total
        finally:
            await conn.close()

    assert asyncio.run(main()) == sum(range(20))


def test_pg8000(pgmux: Pgmux) -> None:
    conn = pg8000.native.Connection("postgres", host="127.0.0.1", port=pgmux.port,
                                    database="postgres")
    try:
        assert conn.run("select :a::int + 1", a=41) == [[42]]
    finally:
        conn.close()


def test_runs_on_uvloop_by_default(pgmux: Pgmux) -> None:
    """uvloop is a default dependency on this platform; the startup line names the loop."""
    with psycopg.connect(pgmux.dsn(), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert "process up: pgmux, event loop uvloop," in pgmux.logs()
    # NOTE: the build the suite runs on (PGMUX_PURE=1 in the environment: pure Python).
    pure = os.environ.get("PGMUX_PURE", "") not in ("", "0")
    want = "pure Python" if pure else "compiled (mypyc)"
    assert f"event loop uvloop, build {want}, listening on" in pgmux.logs()
