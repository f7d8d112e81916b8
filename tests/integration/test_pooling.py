"""Issue 2's pooling scenarios: many clients on few servers, modes, and clients or servers
dying mid-flight, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import asyncpg
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import Pgmux, PgmuxFactory


def run_in_testdb(pg: EmbeddedPostgres, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(pg.dsn(dbname="testdb"), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def backends(pg: EmbeddedPostgres, db: str, app: str | None = None) -> int:
    """Client backends on db (only those whose application_name is app, when given: backends
    an earlier test left behind do not count)."""
    where = f"datname = '{db}'" + (f" and application_name = '{app}'" if app else "")
    return int(pg.query(
        f"select count(*) from pg_stat_activity where {where} and backend_type = "
        "'client backend' and pid <> pg_backend_pid()")[0][0])


def test_300_clients_on_a_pool_of_10(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    run_in_testdb(pg, "drop table if exists load_rows; "
                      "create table load_rows (c int, t int, v int)")
    # NOTE: the pool's servers carry their own application_name, so the peak counts them alone.
    px = pgmux_factory({"default_pool_size": 10, "max_client_conn": 400,
                        "query_wait_timeout": 60},
                       databases={"testdb": f"host=127.0.0.1 port={pg.port} dbname=testdb "
                                            "application_name=pool300"})
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, backends(pg, "testdb", "pool300"))
            time.sleep(0.05)

    async def client(i: int) -> int:
        conn = await asyncpg.connect(px.dsn(dbname="testdb"), statement_cache_size=0)
        try:
            total = 0
            for t in range(20):
                async with conn.transaction():
                    await conn.execute(
                        "insert into public.load_rows values ($1, $2, $3)", i, t, i * t)
                    total += await conn.fetchval(
                        "select count(*) from public.load_rows where c = $1", i)
            return total
        finally:
            await conn.close()

    async def main() -> list[int]:
        return await asyncio.gather(*(client(i) for i in range(300)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = asyncio.run(main())
    finally:
        stop.set()
        watcher.join()
    # Each client saw its own rows grow 1..20 inside its transactions.
    assert results == [sum(range(1, 21))] * 300
    rows = run_in_testdb(pg, "select count(*), sum(v) from load_rows")[0]
    assert rows[0] == 6000
    assert rows[1] == sum(i * t for i in range(300) for t in range(20))
    assert 0 < peak <= 10, peak

    # The same load straight at PostgreSQL (max_connections=40) is refused.
    async def direct() -> list[BaseException | None]:
        async def one() -> BaseException | None:
            try:
                conn = await asyncpg.connect(pg.dsn(dbname="testdb"))
                await asyncio.sleep(0.5)
                await conn.close()
                return None
            except Exception as exc:  # noqa: BLE001
                return exc
        return await asyncio.gather(*(one() for _ in range(300)))

    errors = [e for e in asyncio.run(direct()) if e is not None]
    assert errors and any("too many clients" in str(e) for e in errors)


def test_session_mode_keeps_set(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"pool_mode": "session", "default_pool_size": 2})
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        conn.execute("set statement_timeout = '12345ms'")
        pid = conn.execute("select pg_backend_pid()").fetchone()
        with conn.transaction():
            conn.execute("select 1")
        assert conn.execute("show statement_timeout").fetchone() == ("12345ms",)
        assert conn.execute("select pg_backend_pid()").fetchone() == pid
    # DISCARD ALL ran when the client left: the next session starts clean.
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        assert conn.execute("show statement_timeout").fetchone() == ("0",)


def test_statement_mode_refuses_transactions(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"pool_mode": "statement"})
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError,
                           match="transaction blocks not allowed in statement pooling mode"):
            conn.execute("begin")
            conn.execute("select 1")
            conn.execute("select 2")
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        assert conn.execute("select 2").fetchone() == (2,)


def test_transaction_mode_does_not_leak_session_state(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"default_pool_size": 1})
    with psycopg.connect(px.dsn(), autocommit=True) as a:
        a.execute("set statement_timeout = '4321ms'")
        a.execute("set application_name = 'client-a'")
        a.execute("prepare leak as select 1")
        with psycopg.connect(px.dsn(), autocommit=True) as b:
            # One server only: b runs on the same backend a used.
            assert b.execute("show statement_timeout").fetchone() == ("0",)
            assert b.execute("show application_name").fetchone() != ("client-a",)
            assert b.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)
        # a keeps its own session when it comes back (docs/session-state.md; a temp table
        # would pin a to the one server, tests/integration/test_session_state.py).
        assert a.execute("show application_name").fetchone() == ("client-a",)
        assert a.execute("show statement_timeout").fetchone() == ("4321ms",)
        assert a.execute("execute leak").fetchone() == (1,)


def test_client_parameters_follow_each_client(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"default_pool_size": 1})
    with psycopg.connect(px.dsn(options="", application_name="app-one"), autocommit=True) as a, \
            psycopg.connect(px.dsn(application_name="app-two"), autocommit=True) as b:
        for _ in range(3):
            a.execute("set timezone = 'Asia/Tokyo'")
            assert b.execute("show timezone").fetchone() != ("Asia/Tokyo",)
            assert a.execute("show timezone").fetchone() == ("Asia/Tokyo",)
            assert a.execute("show application_name").fetchone() == ("app-one",)
            assert b.execute("show application_name").fetchone() == ("app-two",)


def _raw_login(port: int, user: str = "postgres", database: str = "testdb") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    body = struct.pack("!i", 196608) + f"user\0{user}\0database\0{database}\0\0".encode()
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    buf = b""
    while not buf.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    return sock


def _raw_query(sock: socket.socket, sql: str) -> bytes:
    body = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
    buf = b""
    while b"Z\x00\x00\x00\x05" not in buf:
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    return buf


def test_client_killed_mid_transaction(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory
                                       ) -> None:
    run_in_testdb(pg, "drop table if exists rst_rows; create table rst_rows (x int)")
    px = pgmux_factory({"default_pool_size": 2})
    sock = _raw_login(px.port)
    out = _raw_query(sock, "begin; insert into public.rst_rows values (1)")
    assert out.endswith(b"Z\x00\x00\x00\x05T")
    # Close with RST, mid-transaction.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = [r[0] for r in pg.query(
            "select state from pg_stat_activity where datname = 'testdb' and "
            "backend_type = 'client backend'")]
        if "idle in transaction" not in states and "active" not in states:
            break
        time.sleep(0.05)
    assert "idle in transaction" not in states
    with psycopg.connect(px.dsn(dbname="testdb"), autocommit=True) as conn:
        for _ in range(4):
            assert conn.execute("select count(*) from public.rst_rows").fetchone() == (0,)
            assert conn.execute("select now() = statement_timestamp()").fetchone() == (True,)


def test_terminated_backend(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"default_pool_size": 3})
    victim = psycopg.connect(px.dsn(dbname="testdb"))
    other = psycopg.connect(px.dsn(dbname="testdb"), autocommit=True)
    try:
        pid = victim.execute("select pg_backend_pid()").fetchone()
        assert pid is not None
        pg.execute(f"select pg_terminate_backend({pid[0]})")
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
        # The others go on and the pool replaces the connection.
        for _ in range(10):
            assert other.execute("select 1").fetchone() == (1,)
        with psycopg.connect(px.dsn(dbname="testdb"), autocommit=True) as fresh:
            assert fresh.execute("select 2").fetchone() == (2,)
    finally:
        victim.close()
        other.close()


def test_postgres_restart_under_load(pg_factory: object, pgmux_factory: PgmuxFactory) -> None:
    server: EmbeddedPostgres = pg_factory(max_connections=20)  # type: ignore[operator]
    px = pgmux_factory({"default_pool_size": 4, "server_login_retry": 0.5,
                        "query_wait_timeout": 10},
                       databases={"postgres": f"host=127.0.0.1 port={server.port}"},
                       target=server)
    stop = threading.Event()
    outcomes: dict[str, int] = {"ok": 0, "error": 0}
    lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(px.dsn(), autocommit=True, connect_timeout=5) as conn:
                    for _ in range(5):
                        conn.execute("select 1")
                key = "ok"
            except psycopg.Error:
                key = "error"
                time.sleep(0.05)
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1)
    server.restart()
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive(), "a client hung"
    assert outcomes["ok"] > 0
    # Once the server is back, new clients succeed.
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(px.dsn(), autocommit=True) as conn:
                assert conn.execute("select 42").fetchone() == (42,)
            break
        except psycopg.Error:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_cancel_request_reaches_the_right_server(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(10)")
        assert time.monotonic() - start < 3
        timer.join()
        assert conn.execute("select 1").fetchone() == (1,)


def test_postgres_reload_keeps_idle_servers(pg_factory: object, pgmux_factory: PgmuxFactory
                                            ) -> None:
    # PostgreSQL reports changed parameters to its sessions when it reloads its config; the
    # pooled server keeps its place, and a client that never SET TimeZone follows the new
    # default, as it would on a direct connection.
    server: EmbeddedPostgres = pg_factory(max_connections=20)  # type: ignore[operator]
    px = pgmux_factory({"default_pool_size": 1},
                       databases={"postgres": f"host=127.0.0.1 port={server.port}"},
                       target=server)
    with psycopg.connect(px.dsn(), autocommit=True) as conn:
        before = conn.execute("select pg_backend_pid(), current_setting('TimeZone')").fetchone()
        assert before is not None
        server.execute("alter system set timezone = 'Asia/Tokyo'")
        server.execute("select pg_reload_conf()")
        time.sleep(1)
        after = conn.execute("select pg_backend_pid(), current_setting('TimeZone')").fetchone()
        assert after == (before[0], "Asia/Tokyo")
    with psycopg.connect(server.dsn(), autocommit=True) as direct:
        assert direct.execute("show timezone").fetchone() == ("Asia/Tokyo",)
    server.execute("alter system reset timezone")
    server.execute("select pg_reload_conf()")


def test_terminated_backend_gives_one_clear_error(pg: EmbeddedPostgres,
                                                 pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"default_pool_size": 2})
    conn = psycopg.connect(px.dsn(dbname="testdb"))
    try:
        conn.execute("select 1")  # inside a transaction: the server stays linked
        pid = conn.execute("select pg_backend_pid()").fetchone()
        assert pid is not None
        pg.execute(f"select pg_terminate_backend({pid[0]})")
        with pytest.raises(psycopg.errors.AdminShutdown,
                           match="terminating connection due to administrator command"):
            conn.execute("select 2")
    finally:
        conn.close()


def test_plain_asyncio_loop_pools_the_same(pg: EmbeddedPostgres,
                                           pgmux_factory: PgmuxFactory) -> None:
    """Without uvloop (PGMUX_LOOP=asyncio), asyncio's own transports carry the same traffic:
    the outbox's deferred writes, hand-offs to waiting clients and closes keep their order."""
    run_in_testdb(pg, "drop table if exists loop_rows; create table loop_rows (c int, t int)")
    px = pgmux_factory({"default_pool_size": 3, "query_wait_timeout": 60},
                       env={"PGMUX_LOOP": "asyncio"})

    async def client(i: int) -> list[int]:
        conn = await asyncpg.connect(px.dsn(dbname="testdb"))
        try:
            seen = []
            for t in range(15):
                async with conn.transaction():
                    await conn.execute("insert into public.loop_rows values ($1, $2)", i, t)
                    seen.append(await conn.fetchval(
                        "select count(*) from public.loop_rows where c = $1", i))
            return seen
        finally:
            await conn.close()

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(client(i) for i in range(40)))

    assert asyncio.run(main()) == [list(range(1, 16))] * 40
    assert run_in_testdb(pg, "select count(*) from loop_rows")[0][0] == 600
    assert "process up: pgmux, event loop asyncio," in px.logs()
