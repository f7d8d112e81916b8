"""`[pgmux] workers = 2` against a real PostgreSQL: one server budget for both workers, no
hoarding, one console view, cancels through the other worker, a killed worker restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from pgmux.workers.keys import worker_of
from tests.integration.conftest import Pgmux, PgmuxFactory

DB = "wtest"
APP = "wpool"  # the application_name of the servers of the pools under test
POOL = 10


@pytest.fixture(scope="module")
def wtest_db(pg: EmbeddedPostgres) -> str:
    """A database of its own, so that pg_stat_activity counts only these tests' servers."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (DB,)).fetchone():
            conn.execute(f"CREATE DATABASE {DB}")
    return DB


def start_workers(factory: PgmuxFactory, pg: EmbeddedPostgres, pool: int = POOL,
                  **settings: object) -> Pgmux:
    base: dict[str, object] = {"default_pool_size": pool, "max_client_conn": 500,
                               "query_wait_timeout": 60}
    base.update(settings)
    # NOTE: the servers carry their own application_name: the counts below see them alone,
    # not backends an earlier test's pgmux left closing.
    mux = factory(base, databases={DB: f"host=127.0.0.1 port={pg.port} dbname={DB} "
                                       f"application_name={APP}"},
                  pgmux={"workers": 2})
    wait_workers(mux, 2)
    return mux


def admin(mux: Pgmux) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(mux.dsn(dbname="pgbouncer"), autocommit=True,
                           cursor_factory=psycopg.ClientCursor)


def workers(mux: Pgmux) -> dict[int, int]:
    """worker -> pid, from SHOW WORKERS."""
    with admin(mux) as conn:
        return {int(r[0]): int(r[1]) for r in conn.execute("SHOW WORKERS").fetchall()
                if not r[5]}


def wait_workers(mux: Pgmux, n: int, not_pids: set[int] | None = None,
                 timeout: float = 20) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    found: dict[int, int] = {}
    while time.monotonic() < deadline:
        try:
            found = workers(mux)
        except psycopg.Error:
            found = {}
        if len(found) == n and not (set(found.values()) & (not_pids or set())):
            return found
        time.sleep(0.1)
    raise AssertionError(f"workers: {found}\n{mux.logs()[-3000:]}")


def servers_in_pg(pg: EmbeddedPostgres) -> int:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute("select count(*) from pg_stat_activity where datname = %s "
                           "and application_name = %s", (DB, APP)).fetchone()
        assert row is not None
        return int(row[0])


class Sampler:
    """Samples pg_stat_activity for the test database every few milliseconds."""

    def __init__(self, pg: EmbeddedPostgres) -> None:
        self.pg = pg
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute("select count(*) from pg_stat_activity where datname = %s "
                                   "and application_name = %s", (DB, APP)).fetchone()
                assert row is not None
                self.peak = max(self.peak, int(row[0]))
                self.samples += 1
                time.sleep(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def connect_in(mux: Pgmux, worker: int, keep: list[psycopg.Connection[tuple[object, ...]]]
               ) -> psycopg.Connection[tuple[object, ...]]:
    """A client that landed in `worker` (its cancel key says where); the others are kept in
    `keep` (open, idle) so that the next connection has a fair chance elsewhere."""
    for _ in range(200):
        conn = psycopg.connect(mux.dsn(dbname=DB), autocommit=True)
        if worker_of(conn.info.backend_pid) == worker:
            return conn
        keep.append(conn)
    raise AssertionError(f"no client landed in worker {worker}")


@pytest.fixture
def closing() -> Iterator[list[psycopg.Connection[tuple[object, ...]]]]:
    conns: list[psycopg.Connection[tuple[object, ...]]] = []
    yield conns
    for c in conns:
        c.close()


# ---- one budget -----------------------------------------------------------------------------

def test_300_clients_share_one_pool_of_10(pg: EmbeddedPostgres, wtest_db: str,
                                          pgmux_factory: PgmuxFactory) -> None:
    mux = start_workers(pgmux_factory, pg)
    seen_workers: set[int] = set()

    async def client(i: int) -> int:
        async with await psycopg.AsyncConnection.connect(mux.dsn(dbname=DB),
                                                         autocommit=True) as conn:
            seen_workers.add(worker_of(conn.info.backend_pid))
            rows = 0
            for _ in range(3):
                cur = await conn.execute("select g, pg_sleep(0.002) from "
                                         "generate_series(1, %s) g where g <= 100", (100 + i,))
                rows += len(await cur.fetchall())
            return rows

    async def run() -> list[int]:
        return list(await asyncio.gather(*(client(i) for i in range(300))))

    with Sampler(pg) as sampler:
        got = asyncio.run(run())
    assert got == [300] * 300
    assert sampler.samples > 10
    assert 0 < sampler.peak <= POOL, sampler.peak
    assert seen_workers == {0, 1}


def test_show_pools_totals_are_the_sum_of_the_workers(
        pg: EmbeddedPostgres, wtest_db: str, pgmux_factory: PgmuxFactory,
        closing: list[psycopg.Connection[tuple[object, ...]]]) -> None:
    mux = start_workers(pgmux_factory, pg, pool=4)
    holders = [connect_in(mux, w, closing) for w in (0, 1, 0, 1)]
    closing.extend(holders)
    for conn in holders:
        conn.execute("begin")
        conn.execute("select 1")
    waiting = [connect_in(mux, w, closing) for w in (0, 1, 1)]
    closing.extend(waiting)
    threads = [threading.Thread(target=c.execute, args=("select 1",)) for c in waiting]
    for t in threads:
        t.start()
    clients = len(closing)
    deadline = time.monotonic() + 10
    while True:
        with admin(mux) as conn:
            pools = {r[0]: r for r in conn.execute("SHOW POOLS").fetchall()}
            per_worker = conn.execute("SHOW WORKERS").fetchall()
            client_rows = conn.execute("SHOW CLIENTS").fetchall()
        if pools[DB][3] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    row = pools[DB]
    assert (row[2], row[3], row[6]) == (clients - 3, 3, 4)   # cl_active, cl_waiting, sv_active
    assert sum(r[2] for r in per_worker) == clients
    assert sum(r[3] for r in per_worker) == row[6] + row[9] + row[10] + row[11] + row[12] == 4
    assert sum(r[4] for r in per_worker) == row[3]
    assert servers_in_pg(pg) == 4
    mine = [r for r in client_rows if r[2] == DB]
    assert len(mine) == clients
    assert {r[-1] for r in mine} == {0, 1}   # the worker column
    for conn in holders:
        conn.execute("commit")
    for t in threads:
        t.join(10)


# ---- no hoarding ----------------------------------------------------------------------------

BOUND = 0.3  # seconds: two looks at the board (2 x 20 ms) and a login (30-60 ms), room for CI


def test_a_waiting_client_gets_a_server_another_worker_holds_idle(
        pg: EmbeddedPostgres, wtest_db: str, pgmux_factory: PgmuxFactory,
        closing: list[psycopg.Connection[tuple[object, ...]]]) -> None:
    mux = start_workers(pgmux_factory, pg, pool=2)
    in_b = [connect_in(mux, 1, closing) for _ in range(2)]
    in_a = connect_in(mux, 0, closing)
    closing.extend(in_b + [in_a])

    def b_takes_the_whole_budget() -> None:
        """Both clients of worker 1 busy at once: worker 1 ends up holding both servers."""
        barrier = threading.Barrier(2)

        def busy(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            barrier.wait()
            conn.execute("select pg_sleep(0.2)")

        threads = [threading.Thread(target=busy, args=(c,)) for c in in_b]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    times = []
    for _ in range(3):
        b_takes_the_whole_budget()
        with admin(mux) as conn:
            held = {int(r[0]): int(r[3]) for r in conn.execute("SHOW WORKERS").fetchall()}
        assert held == {0: 0, 1: 2}, held
        time.sleep(0.1)  # NOTE: idle for 40 ms or more: spare, if another worker needs it
        start = time.monotonic()
        assert in_a.execute("select 1").fetchone() == (1,)
        times.append(time.monotonic() - start)
        assert servers_in_pg(pg) <= 2
    assert max(times) < BOUND, times


# ---- cancel ---------------------------------------------------------------------------------

def test_cancel_reaching_the_other_worker_cancels_the_query(
        pg: EmbeddedPostgres, wtest_db: str, pgmux_factory: PgmuxFactory,
        closing: list[psycopg.Connection[tuple[object, ...]]]) -> None:
    mux = start_workers(pgmux_factory, pg)
    pids = workers(mux)
    victim = connect_in(mux, 0, closing)
    closing.append(victim)
    outcome: list[BaseException | None] = []

    def sleep() -> None:
        try:
            victim.execute("select pg_sleep(20)")
            outcome.append(None)
        except psycopg.Error as exc:
            outcome.append(exc)

    t = threading.Thread(target=sleep)
    t.start()
    time.sleep(0.3)
    # NOTE: worker 0 is stopped, so the cancel request can only be accepted by worker 1,
    # which must pass it on; worker 0 acts on it once it runs again.
    os.kill(pids[0], signal.SIGSTOP)
    try:
        started = time.monotonic()
        victim.cancel()
        time.sleep(0.3)
    finally:
        os.kill(pids[0], signal.SIGCONT)
    t.join(10)
    assert outcome and isinstance(outcome[0], psycopg.errors.QueryCanceled), outcome
    assert time.monotonic() - started < 5


# ---- a worker dies --------------------------------------------------------------------------

def test_a_killed_worker_is_restarted_and_its_slots_come_back(
        pg: EmbeddedPostgres, wtest_db: str, pgmux_factory: PgmuxFactory,
        closing: list[psycopg.Connection[tuple[object, ...]]]) -> None:
    mux = start_workers(pgmux_factory, pg)
    before = workers(mux)
    survivors = [connect_in(mux, 0, closing) for _ in range(4)]
    doomed = [connect_in(mux, 1, closing) for _ in range(6)]
    closing.extend(survivors + doomed)
    for conn in doomed:   # worker 1 holds 6 of the 10 slots, in open transactions
        conn.execute("begin")
        conn.execute("select 1")
    stop = threading.Event()
    errors: list[Exception] = []
    done = [0]

    def load(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        while not stop.is_set():
            try:
                assert conn.execute("select count(*) from generate_series(1, 50)"
                                    ).fetchone() == (50,)
                done[0] += 1
            except Exception as exc:  # noqa: BLE001 - counted, the test fails on any
                errors.append(exc)
                return

    threads = [threading.Thread(target=load, args=(c,)) for c in survivors]
    for t in threads:
        t.start()
    time.sleep(0.3)
    os.kill(before[1], signal.SIGKILL)
    after = wait_workers(mux, 2, not_pids={before[1]})
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert done[0] > 0
    assert after[0] == before[0]
    assert f"worker 1 (pid {before[1]}) was killed by SIGKILL; starting a new one" in \
        mux.logs()
    # the whole budget is usable again: 10 transactions hold 10 servers at once
    holders = [psycopg.connect(mux.dsn(dbname=DB), autocommit=True) for _ in range(POOL)]
    closing.extend(holders)
    backends = set()
    for conn in holders:
        conn.execute("begin")
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        backends.add(row[0])
    assert len(backends) == POOL
    assert servers_in_pg(pg) <= POOL


# ---- /metrics and pgmux top ------------------------------------------------------------------

def test_metrics_and_top_show_all_workers(
        pg: EmbeddedPostgres, wtest_db: str, pgmux_factory: PgmuxFactory,
        closing: list[psycopg.Connection[tuple[object, ...]]]) -> None:
    metrics_port = free_port()
    mux = pgmux_factory({"default_pool_size": POOL},
                        databases={DB: f"host=127.0.0.1 port={pg.port} dbname={DB}"},
                        pgmux={"workers": 2, "metrics_port": metrics_port})
    wait_workers(mux, 2)
    for w in (0, 1, 0, 1):
        conn = connect_in(mux, w, closing)
        conn.execute("select 1")
        closing.append(conn)
    clients = len(closing)   # connect_in keeps the ones that landed elsewhere open too
    for _ in range(4):   # whichever worker accepts the scrape answers for both
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as resp:
            body = resp.read().decode()
        line = next(x for x in body.splitlines()
                    if x.startswith("pgmux_pool_clients_active{") and f'database="{DB}"' in x)
        assert float(line.rsplit(" ", 1)[1]) == clients, line
    out = subprocess.run([sys.executable, "-m", "pgmux", "top", "--once",
                          mux.dsn(dbname="pgbouncer")], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "COLUMNS": "120"})
    assert out.returncode == 0, out.stderr
    assert "workers 2" in out.stdout


# ---- one control ----------------------------------------------------------------------------

def test_console_commands_apply_to_every_worker(
        pg: EmbeddedPostgres, wtest_db: str, pgmux_factory: PgmuxFactory,
        closing: list[psycopg.Connection[tuple[object, ...]]]) -> None:
    mux = start_workers(pgmux_factory, pg)
    pids = workers(mux)
    victims = {w: connect_in(mux, w, closing) for w in (0, 1)}
    closing.extend(victims.values())
    with admin(mux) as conn:
        conn.execute("PAUSE")
        for pid in pids.values():
            assert f"[{pid}] LOG PAUSE command issued" in mux.logs()
        conn.execute("RESUME")
        for pid in pids.values():
            assert f"[{pid}] LOG RESUME command issued" in mux.logs()
        # KILL_CLIENT finds the client in whichever worker has it
        cur = conn.execute("SHOW CLIENTS")
        names = [d.name for d in cur.description or ()]
        ident, worker = names.index("id"), names.index("worker")
        rows = [r for r in cur.fetchall() if r[2] == DB]
        for w, victim in victims.items():
            [row] = [r for r in rows if int(r[6]) == _local_port(victim)]
            assert row[worker] == w and int(row[ident]) % 1000 == w
            conn.execute(f"KILL_CLIENT {row[ident]}")
            with pytest.raises(psycopg.OperationalError):
                victim.execute("select 1")
        with pytest.raises(psycopg.Error, match="client not found"):
            conn.execute("KILL_CLIENT 999999")


def _local_port(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()
