"""Each timeout, through a real pgmux in front of a real PostgreSQL (the janitor runs every
0.2 s, so small fractional timeouts are exact enough)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import asyncpg
import pg8000.native
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.conftest import PgFactory
from tests.integration.conftest import PgmuxFactory

pytestmark = pytest.mark.timeout(60)


def _entry(pg: EmbeddedPostgres, app: str, extra: str = "", dbname: str = "testdb",
           port: int | None = None) -> str:
    return (f"host=127.0.0.1 port={port or pg.port} dbname={dbname} application_name={app} "
            f"{extra}")


def _backend_pids(pg: EmbeddedPostgres, app: str) -> set[int]:
    return {int(r[0]) for r in pg.query(
        f"select pid from pg_stat_activity where application_name = '{app}'")}


def _wait_until(pred: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def _startup(user: str, database: str, **params: str) -> bytes:
    body = struct.pack("!I", 196608)
    for k, v in {"user": user, "database": database, **params}.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def _read_until_eof(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the peer sends until it closes; and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


# ---- query_wait_timeout ------------------------------------------------------------------

def test_query_wait_timeout_ends_a_wait(pg: EmbeddedPostgres,
                                        pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1, "query_wait_timeout": 0.5},
                        databases={"t": _entry(pg, "to_qwait")})
    holder = psycopg.connect(mux.dsn(dbname="t"))
    try:
        holder.execute("select 1")  # a transaction is open: the only server stays linked
        waiter = psycopg.connect(mux.dsn(dbname="t"), autocommit=True)
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            waiter.execute("select 2")
        waited = time.monotonic() - start
        assert 0.45 <= waited < 2, waited
        waiter.close()
        # The holder was not disturbed, and once it commits the server serves others.
        assert holder.execute("select 3").fetchone() == (3,)
        holder.commit()
        with psycopg.connect(mux.dsn(dbname="t")) as other:
            assert other.execute("select 4").fetchone() == (4,)
    finally:
        holder.close()


# ---- server_lifetime ---------------------------------------------------------------------

def test_server_lifetime_closes_old_servers_when_idle(pg: EmbeddedPostgres,
                                                      pgmux_factory: PgmuxFactory) -> None:
    app = "to_lifetime"
    mux = pgmux_factory({"default_pool_size": 1, "server_lifetime": 0.6,
                         "log_disconnections": 1},
                        databases={"t": _entry(pg, app)})
    with psycopg.connect(mux.dsn(dbname="t")) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        first = row[0]
        # Past its lifetime inside a transaction, the server is not taken away ...
        time.sleep(0.8)
        assert conn.execute("select pg_backend_pid()").fetchone() == (first,)
        conn.commit()
        # ... but once released it is closed, and the next transaction gets a new one.
        assert _wait_until(lambda: first not in _backend_pids(pg, app), 3)
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None and row[0] != first
        conn.commit()
    # An idle server past its lifetime is closed by the janitor, without any traffic.
    second = row[0]
    assert _wait_until(lambda: second not in _backend_pids(pg, app), 3)
    assert "server lifetime over" in mux.logs()


# ---- server_idle_timeout -----------------------------------------------------------------

def test_server_idle_timeout_closes_idle_servers(pg: EmbeddedPostgres,
                                                 pgmux_factory: PgmuxFactory) -> None:
    app = "to_server_idle"
    mux = pgmux_factory({"server_idle_timeout": 0.5, "log_disconnections": 1},
                        databases={"t": _entry(pg, app)})
    with psycopg.connect(mux.dsn(dbname="t"), autocommit=True) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        assert _backend_pids(pg, app) == {row[0]}
        start = time.monotonic()
        assert _wait_until(lambda: not _backend_pids(pg, app), 3)
        assert time.monotonic() - start >= 0.3
        # The client is still there and simply gets a new server.
        row2 = conn.execute("select pg_backend_pid()").fetchone()
        assert row2 is not None and row2[0] != row[0]
    assert "server idle timeout" in mux.logs()


# ---- server_connect_timeout --------------------------------------------------------------

@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        sock.close()


def test_server_connect_timeout_keeps_the_first_clients_waiting(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, silent_server: int) -> None:
    """An unreachable server is retried soon and often; the pool's first clients wait for it
    until client_login_timeout (PgBouncer's "client_login_timeout (server down)")."""
    mux = pgmux_factory({"server_connect_timeout": 0.3, "client_login_timeout": 2},
                        databases={"silent": _entry(pg, "to_silent", dbname="postgres",
                                                    port=silent_server),
                                   "postgres": _entry(pg, "to_not_silent", dbname="postgres")})
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match=r"client_login_timeout \(server down\)"):
        psycopg.connect(mux.dsn(dbname="silent"), connect_timeout=10)
    took = time.monotonic() - start
    assert 1.9 <= took < 4, took
    # it kept trying (0.1 s back-off, doubling): several connect timeouts in two seconds
    assert _wait_until(lambda: mux.logs().count("closing because: connect timeout") >= 3)
    # Other databases are not affected.
    with psycopg.connect(mux.dsn()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# ---- a server restart: clients wait instead of failing --------------------------------------

def test_server_restart_costs_waiting_not_errors(
        pg_factory: PgFactory, pgmux_factory: PgmuxFactory) -> None:
    private = pg_factory(max_connections=10)
    mux = pgmux_factory({"server_login_retry": 15, "query_wait_timeout": 30},
                        databases={"p": f"host=127.0.0.1 port={private.port} dbname=postgres"},
                        target=private)
    idle = psycopg.connect(mux.dsn(dbname="p"), autocommit=True)
    assert idle.execute("select 1").fetchone() == (1,)
    private.stop()
    results: list[object] = []

    def query() -> None:
        try:
            with psycopg.connect(mux.dsn(dbname="p"), connect_timeout=20) as conn:
                results.append(conn.execute("select 42").fetchone())
        except psycopg.Error as exc:
            results.append(exc)

    # While the server is down, new clients log in (the pool's welcome is known) and their
    # queries wait; nobody gets "server login has been failing".
    threads = [threading.Thread(target=query) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(3)
    assert results == []
    private.start()
    up = time.monotonic()
    for t in threads:
        t.join(30)
    assert results == [(42,)] * 5, results
    assert time.monotonic() - up < 5
    # the client that was idle through the restart queries again too
    assert idle.execute("select 3").fetchone() == (3,)
    idle.close()
    assert "server login has been failing" not in mux.logs()


def test_failing_authentication_is_refused_fast(
        pg_factory: PgFactory, pgmux_factory: PgmuxFactory) -> None:
    """Not a restart: a login the server refuses for a reason that will not pass (a wrong
    password) is PgBouncer's server_login_retry: refused at once, with the cached error."""
    private = pg_factory(max_connections=10, hba_lines=["host all md5user 127.0.0.1/32 md5"])
    private.execute("SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN "
                    "PASSWORD 'right'")
    mux = pgmux_factory({"server_login_retry": 30},
                        databases={"p": f"host=127.0.0.1 port={private.port} dbname=postgres "
                                        f"user=md5user password=wrong"},
                        target=private)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(mux.dsn(dbname="p"), connect_timeout=10)
    for _ in range(2):
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError,
                           match=r"server login has been failing, cached error: password "
                                 r"authentication failed.*\(server_login_retry\)"):
            with psycopg.connect(mux.dsn(dbname="p"), connect_timeout=10) as conn:
                conn.execute("select 1")
        assert time.monotonic() - start < 0.5


# ---- client_login_timeout ----------------------------------------------------------------

def test_client_login_timeout_closes_silent_clients(pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"client_login_timeout": 0.5, "auth_type": "md5"},
                        userlist={"postgres": "secret"})
    silent = socket.create_connection(("127.0.0.1", mux.port))
    # This one sends its startup packet but never answers the password request.
    stalled = socket.create_connection(("127.0.0.1", mux.port))
    stalled.sendall(_startup("postgres", "postgres"))
    try:
        data, took = _read_until_eof(silent, 5)
        assert 0.45 <= took < 2, took
        assert b"client_login_timeout" in data
        data, _ = _read_until_eof(stalled, 5)
        assert data[:1] == b"R"  # the md5 password request ...
        assert b"client_login_timeout" in data  # ... then the timeout
    finally:
        silent.close()
        stalled.close()
    # Clients that do log in in time are not affected.
    with psycopg.connect(mux.dsn(password="secret")) as conn:
        time.sleep(0.8)
        assert conn.execute("select 1").fetchone() == (1,)


# ---- client_idle_timeout -----------------------------------------------------------------

def test_client_idle_timeout_closes_idle_clients(pg: EmbeddedPostgres,
                                                 pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"client_idle_timeout": 0.5},
                        databases={"t": _entry(pg, "to_client_idle")})
    idle = psycopg.connect(mux.dsn(dbname="t"), autocommit=True)
    busy = psycopg.connect(mux.dsn(dbname="t"))
    try:
        assert idle.execute("select 1").fetchone() == (1,)
        assert busy.execute("select 1").fetchone() == (1,)  # in a transaction: linked
        time.sleep(1.0)
        with pytest.raises(psycopg.OperationalError, match="client_idle_timeout"):
            idle.execute("select 2")
        # A client linked to a server is not idle in this sense.
        assert busy.execute("select 2").fetchone() == (2,)
        busy.commit()
    finally:
        idle.close()
        busy.close()


# ---- idle_transaction_timeout ------------------------------------------------------------

def test_idle_transaction_timeout(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    app = "to_idle_tx"
    mux = pgmux_factory({"default_pool_size": 2, "idle_transaction_timeout": 0.5},
                        databases={"t": _entry(pg, app)})
    conn = pg8000.native.Connection("postgres", host="127.0.0.1", port=mux.port, database="t")
    in_tx = psycopg.connect(mux.dsn(dbname="t"))
    idle_outside = psycopg.connect(mux.dsn(dbname="t"), autocommit=True)
    try:
        assert idle_outside.execute("select 1").fetchone() == (1,)
        conn.run("begin")
        conn.run("create temp table idle_tx_t (x int)")
        in_tx.execute("select 1")
        time.sleep(1.0)
        with pytest.raises(pg8000.native.InterfaceError):
            conn.run("insert into idle_tx_t values (1)")
        with pytest.raises(psycopg.OperationalError, match="idle transaction timeout"):
            in_tx.execute("select 2")
        # No transaction is left open on the server, and the pool serves again; a client
        # idle outside a transaction was not touched.
        assert _wait_until(lambda: not pg.query(
            f"select 1 from pg_stat_activity where application_name = '{app}' "
            f"and state like 'idle in transaction%'"), 3)
        assert idle_outside.execute("select 2").fetchone() == (2,)
        with psycopg.connect(mux.dsn(dbname="t")) as other:
            assert other.execute("select to_regclass('idle_tx_t') is null").fetchone() == (
                True,)
    finally:
        for closing in (conn.close, in_tx.close, idle_outside.close):
            try:
                closing()
            except Exception:  # noqa: BLE001 - already closed by the pooler
                pass


# ---- query_timeout -----------------------------------------------------------------------

def test_query_timeout_ends_a_long_query_and_the_pool_recovers(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1, "query_timeout": 0.5},
                        databases={"t": _entry(pg, "to_query_timeout")})

    async def main() -> tuple[str, float, int]:
        conn = await asyncpg.connect(mux.dsn(dbname="t"))
        # Queries shorter than query_timeout are left alone, however many there are.
        for _ in range(2):
            assert await conn.fetchval("select 1 from pg_sleep(0.3)") == 1
        start = time.monotonic()
        try:
            await conn.fetchval("select pg_sleep(5)")
            message = "no error"
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
            message = str(exc)
        took = time.monotonic() - start
        await conn.close(timeout=2)
        # The pool (size 1) serves the next client at once.
        other = await asyncpg.connect(mux.dsn(dbname="t"))
        try:
            value = await asyncio.wait_for(other.fetchval("select 7"), 3)
        finally:
            await other.close()
        return message, took, value

    message, took, value = asyncio.run(main())
    assert "query timeout" in message
    assert 0.45 <= took < 2, took
    assert value == 7


def test_query_timeout_also_ends_a_wait_for_a_server(pg: EmbeddedPostgres,
                                                    pgmux_factory: PgmuxFactory) -> None:
    # PgBouncer's janitor applies query_timeout to waiting clients too ("query_timeout").
    mux = pgmux_factory({"default_pool_size": 1, "query_timeout": 0.5,
                         "query_wait_timeout": 30},
                        databases={"t": _entry(pg, "to_query_timeout_wait")})
    holder = psycopg.connect(mux.dsn(dbname="t"))
    try:
        holder.execute("select 1")  # idle in transaction: links the only server, runs nothing
        with psycopg.connect(mux.dsn(dbname="t"), autocommit=True) as waiter:
            start = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="query_timeout"):
                waiter.execute("select 2")
            assert time.monotonic() - start < 2
        holder.commit()
    finally:
        holder.close()
