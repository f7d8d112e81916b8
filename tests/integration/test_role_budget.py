"""Several pgmux processes share a budget set once in PostgreSQL (ALTER ROLE ... CONNECTION
LIMIT): a server login refused with 53300 keeps the clients queued instead of failing them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import PgmuxFactory

ROLE = "budget10"
LIMIT = 10
SECRET = "budget-secret"
CLIENTS = 100  # per pgmux


@pytest.fixture
def capped_role(pg: EmbeddedPostgres) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{SECRET}' CONNECTION LIMIT {LIMIT}")
    yield ROLE
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE usename = '{ROLE}'")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                conn.execute(f"DROP ROLE {ROLE}")
                break
            except psycopg.errors.DependentObjectsStillRemain:
                time.sleep(0.1)
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)


async def run_clients(ports: list[int]) -> list[BaseException]:
    async def one(port: int) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=ROLE, database="capdb",
                                     statement_cache_size=0, timeout=60)
        try:
            for _ in range(3):
                assert await conn.fetchval("SELECT 1 FROM pg_sleep(0.02)") == 1
        finally:
            await conn.close()

    results = await asyncio.gather(*(one(port) for port in ports for _ in range(CLIENTS)),
                                   return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


def test_two_poolers_share_a_role_connection_limit(
        pg: EmbeddedPostgres, capped_role: str, pgmux_factory: PgmuxFactory) -> None:
    """Two pgmux processes, each with a pool of 20 and 100 clients, in front of a role whose
    CONNECTION LIMIT is 10: no client sees an error and PostgreSQL never has more than 10."""
    databases = {"capdb": f"host=127.0.0.1 port={pg.port} dbname=testdb user={capped_role}"}
    muxes = [pgmux_factory({"default_pool_size": 20, "max_client_conn": 500},
                           databases=databases, userlist={capped_role: SECRET})
             for _ in range(2)]
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE usename = %s", (capped_role,)).fetchone()
                assert row is not None
                peak[0] = max(peak[0], int(row[0]))
                time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        errors = asyncio.run(run_clients([mux.port for mux in muxes]))
    finally:
        stop.set()
        sampler.join()
    assert not errors, errors[:3]
    assert 0 < peak[0] <= LIMIT, peak[0]
    # NOTE: the budget was reached: at least one pgmux was refused and kept its clients queued.
    logs = "".join(mux.logs() for mux in muxes)
    assert "too many connections for role" in logs, logs[-2000:]
