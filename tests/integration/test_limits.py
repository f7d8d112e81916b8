"""Each connection limit, through a real pgmux in front of the real PostgreSQL.

Server connections are counted from a direct connection to PostgreSQL, in pg_stat_activity,
by an application_name that only the pool under test sends (set in its [databases] entry).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg
import pg8000.native
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(60)


class Backends:
    """Counts PostgreSQL backends by application_name, over one direct connection."""

    def __init__(self, pg: EmbeddedPostgres, app: str) -> None:
        self.app = app
        self.conn = psycopg.connect(pg.dsn(), autocommit=True)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self) -> int:
        row = self.conn.execute(
            "select count(*) from pg_stat_activity where application_name = %s "
            "and backend_type = 'client backend'", (self.app,)).fetchone()
        assert row is not None
        return int(row[0])

    def wait_for(self, pred: Callable[[int], bool], timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        n = self.count()
        while not pred(n) and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.count()
        return n

    @contextmanager
    def sampling(self, period: float = 0.02) -> Iterator[Backends]:
        """Record (seconds since start, count) in the background while the block runs."""
        start = time.monotonic()

        def loop() -> None:
            # NOTE: psycopg serializes the threads that share self.conn.
            while not self._stop.is_set():
                self.samples.append((time.monotonic() - start, self.count()))
                time.sleep(period)

        self._stop.clear()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)

    @property
    def peak(self) -> int:
        return max((n for _, n in self.samples), default=0)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def backends(pg: EmbeddedPostgres) -> Iterator[Callable[[str], Backends]]:
    made: list[Backends] = []

    def make(app: str) -> Backends:
        b = Backends(pg, app)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def _entry(pg: EmbeddedPostgres, app: str, extra: str = "", dbname: str = "testdb") -> str:
    return f"host=127.0.0.1 port={pg.port} dbname={dbname} application_name={app} {extra}"


def _sleepers(mux: Pgmux, jobs: list[tuple[str, str | None, str]], seconds: float,
              timeout: float = 20) -> list[object]:
    """Run one `select pg_sleep(seconds)` per (user, password, dbname) concurrently, each on its
    own connection; returns the results (or the exceptions) in order."""

    def one(job: tuple[str, str | None, str]) -> object:
        user, password, dbname = job
        try:
            with psycopg.connect(mux.dsn(user=user, password=password, dbname=dbname),
                                 autocommit=True, connect_timeout=10) as conn:
                return conn.execute("select pg_sleep(%s), current_user",
                                    (seconds,)).fetchone()
        except Exception as exc:  # noqa: BLE001 - the caller looks at each outcome
            return exc

    with ThreadPoolExecutor(len(jobs)) as ex:
        futures = [ex.submit(one, job) for job in jobs]
        return [f.result(timeout=timeout) for f in futures]


# ---- max_client_conn ---------------------------------------------------------------------

def test_max_client_conn_refuses_the_extra_client(pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"max_client_conn": 3})
    conns = [psycopg.connect(mux.dsn(), autocommit=True) for _ in range(3)]
    try:
        with pytest.raises(psycopg.OperationalError,
                           match=r"no more connections allowed \(max_client_conn\)"):
            psycopg.connect(mux.dsn(), connect_timeout=5)

        async def refused() -> str | None:
            try:
                conn = await asyncpg.connect(mux.dsn(), timeout=5)
            except asyncpg.PostgresError as exc:
                assert "max_client_conn" in str(exc)
                return str(exc.sqlstate)
            await conn.close()
            return None

        # NOTE: PgBouncer sends its pooler errors without a SQLSTATE of their own as 08P01
        # (asyncpg: ProtocolViolationError); drivers and runbooks match on that.
        assert asyncio.run(refused()) == "08P01"
        # The clients inside keep working.
        for i, conn in enumerate(conns):
            assert conn.execute("select %s::int", (i,)).fetchone() == (i,)
        # A slot freed is a slot usable again.
        conns.pop().close()
        deadline = time.monotonic() + 3
        while True:
            try:
                conns.append(psycopg.connect(mux.dsn(), autocommit=True, connect_timeout=5))
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert conns[-1].execute("select 1").fetchone() == (1,)
    finally:
        for conn in conns:
            conn.close()


# ---- default_pool_size -------------------------------------------------------------------

def test_default_pool_size_caps_server_connections(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
        backends: Callable[[str], Backends]) -> None:
    app = "lim_pool_size"
    mux = pgmux_factory({"default_pool_size": 3}, databases={"limdb": _entry(pg, app)})
    b = backends(app)
    with b.sampling():
        results = _sleepers(mux, [("postgres", None, "limdb")] * 12, 0.25)
    assert all(isinstance(r, tuple) for r in results), results
    assert b.peak == 3, b.samples
    # All 12 transactions went through 3 servers: no more than 3 backends ever existed.
    assert b.count() <= 3


# ---- min_pool_size -----------------------------------------------------------------------

def test_min_pool_size_opens_servers_after_first_client(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
        backends: Callable[[str], Backends]) -> None:
    app = "lim_min_pool"
    mux = pgmux_factory({"default_pool_size": 5, "min_pool_size": 3,
                         "server_idle_timeout": 0.3},
                        databases={"limdb": _entry(pg, app),
                                   "warm": _entry(pg, "lim_min_forced",
                                                  "user=postgres min_pool_size=2")})
    b = backends(app)
    # A database with a forced user is kept at its min_pool_size from the start, without
    # any client (PgBouncer >= 1.21) ...
    assert backends("lim_min_forced").wait_for(lambda n: n >= 2) == 2
    # ... one without waits for its first client (its pools are per client user).
    assert b.count() == 0
    conn = psycopg.connect(mux.dsn(dbname="limdb"), autocommit=True)  # logs in, sends nothing
    try:
        assert b.wait_for(lambda n: n >= 3) == 3
    finally:
        conn.close()
    # server_idle_timeout does not take the pool below min_pool_size, nor does it grow.
    time.sleep(0.8)
    assert b.count() == 3


# ---- reserve_pool_size / reserve_pool_timeout --------------------------------------------

def test_reserve_pool_opens_only_after_reserve_pool_timeout(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
        backends: Callable[[str], Backends]) -> None:
    app = "lim_reserve"
    mux = pgmux_factory({"default_pool_size": 2, "reserve_pool_size": 2,
                         "reserve_pool_timeout": 0.5},
                        databases={"limdb": _entry(pg, app)})
    # Log in once first, so that the pool's first server is not part of the timing.
    with psycopg.connect(mux.dsn(dbname="limdb")) as conn:
        conn.execute("select 1")
    b = backends(app)
    with b.sampling():
        results = _sleepers(mux, [("postgres", None, "limdb")] * 5, 1.2)
    assert all(isinstance(r, tuple) for r in results), results
    assert b.peak == 4, b.samples
    first_extra = min(t for t, n in b.samples if n > 2)
    # Sampling started before the clients; the reserve opens once the first waited 0.5 s
    # (and while the first two servers are still busy, until ~1.2 s).
    assert first_extra >= 0.5, b.samples
    assert first_extra < 1.5, b.samples


# ---- max_db_connections ------------------------------------------------------------------

def test_max_db_connections_across_two_users(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
        backends: Callable[[str], Backends], pg_roles: dict[str, str]) -> None:
    app = "lim_max_db"
    mux = pgmux_factory({"default_pool_size": 5, "query_wait_timeout": 15},
                        databases={"limdb": _entry(pg, app, "max_db_connections=2")},
                        userlist={"md5user": pg_roles["md5user"],
                                  "scramuser": pg_roles["scramuser"]})
    b = backends(app)
    md5 = ("md5user", None, "limdb")
    scram = ("scramuser", None, "limdb")
    with b.sampling():
        # First one user fills the database's two connections and leaves them idle ...
        first = _sleepers(mux, [md5] * 4, 0.2)
        assert b.wait_for(lambda n: n == 2) == 2
        # ... then both users at once: the idle servers of the first user must make room.
        both = _sleepers(mux, [md5, scram] * 3, 0.2)
    assert all(isinstance(r, tuple) for r in first + both), first + both
    assert {r[1] for r in both if isinstance(r, tuple)} == {"md5user", "scramuser"}
    assert b.peak == 2, b.samples


# ---- max_user_connections ----------------------------------------------------------------

def test_max_user_connections_across_two_databases(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
        backends: Callable[[str], Backends], pg_roles: dict[str, str]) -> None:
    app = "lim_max_user"
    mux = pgmux_factory({"default_pool_size": 5, "query_wait_timeout": 15},
                        databases={"lim_a": _entry(pg, app, dbname="testdb"),
                                   "lim_b": _entry(pg, app, dbname="postgres")},
                        users={"md5user": "max_user_connections=2"},
                        userlist={"md5user": pg_roles["md5user"]})
    b = backends(app)
    a = ("md5user", None, "lim_a")
    other = ("md5user", None, "lim_b")
    with b.sampling():
        first = _sleepers(mux, [a] * 4, 0.2)
        assert b.wait_for(lambda n: n == 2) == 2
        both = _sleepers(mux, [a, other] * 3, 0.2)
    assert all(isinstance(r, tuple) for r in first + both), first + both
    assert b.peak == 2, b.samples


# ---- max_db_client_connections / max_user_client_connections -----------------------------

def test_max_db_client_connections(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory(databases={
        "limdb": _entry(pg, "lim_db_clients", "max_db_client_connections=2"),
        "otherdb": _entry(pg, "lim_db_clients_other"),
    })
    inside = [psycopg.connect(mux.dsn(dbname="limdb"), autocommit=True) for _ in range(2)]
    try:
        with pytest.raises(psycopg.OperationalError,
                           match=r"client connections exceeded \(max_db_client_connections\)"):
            psycopg.connect(mux.dsn(dbname="limdb"), connect_timeout=5)
        # pg8000 sees PgBouncer's SQLSTATE for it too (08P01, as every PgBouncer pooler
        # error without a SQLSTATE of its own).
        with pytest.raises(pg8000.native.DatabaseError) as err:
            pg8000.native.Connection("postgres", host="127.0.0.1", port=mux.port,
                                     database="limdb", timeout=5)
        assert err.value.args[0]["C"] == "08P01"
        # Other databases are not limited by it; the clients inside keep working.
        with psycopg.connect(mux.dsn(dbname="otherdb")) as other:
            assert other.execute("select 1").fetchone() == (1,)
        for conn in inside:
            assert conn.execute("select 2").fetchone() == (2,)
        inside.pop().close()
        time.sleep(0.1)
        inside.append(psycopg.connect(mux.dsn(dbname="limdb"), autocommit=True))
        assert inside[-1].execute("select 3").fetchone() == (3,)
    finally:
        for conn in inside:
            conn.close()


def test_max_user_client_connections(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
                                     pg_roles: dict[str, str]) -> None:
    mux = pgmux_factory({"max_user_client_connections": 2},
                        databases={"limdb": _entry(pg, "lim_user_clients"),
                                   "otherdb": _entry(pg, "lim_user_clients", dbname="postgres")},
                        users={"scramuser": "max_user_client_connections=3"},
                        userlist={"md5user": pg_roles["md5user"],
                                  "scramuser": pg_roles["scramuser"]})
    # The global limit counts one user's clients across databases.
    inside = [psycopg.connect(mux.dsn(user="md5user", dbname="limdb"), autocommit=True),
              psycopg.connect(mux.dsn(user="md5user", dbname="otherdb"), autocommit=True)]
    try:
        with pytest.raises(psycopg.OperationalError,
                           match=r"client connections exceeded \(max_user_client_connections\)"):
            psycopg.connect(mux.dsn(user="md5user", dbname="limdb"), connect_timeout=5)
        # A [users] entry overrides it for that user; other users are not affected by md5user.
        inside += [psycopg.connect(mux.dsn(user="scramuser", dbname="limdb"), autocommit=True)
                   for _ in range(3)]
        with pytest.raises(psycopg.OperationalError, match="max_user_client_connections"):
            psycopg.connect(mux.dsn(user="scramuser", dbname="otherdb"), connect_timeout=5)
        for conn in inside:
            assert conn.execute("select current_user").fetchone() is not None
    finally:
        for conn in inside:
            conn.close()
