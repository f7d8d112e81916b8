"""pool_size=auto sizes a pool from the server's real limits."""

from __future__ import annotations

import threading
import time

import psycopg

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import PgmuxFactory


def test_pool_size_auto_uses_75_percent_of_the_role_limit(
        pg: EmbeddedPostgres, pg_factory: object, pgmux_factory: PgmuxFactory) -> None:
    server: EmbeddedPostgres = pg_factory(max_connections=20)  # type: ignore[operator]
    server.execute("create role capped login password 'cappedpass' connection limit 8")
    server.execute("grant all on schema public to capped")
    px = pgmux_factory(
        {"max_client_conn": 100},
        databases={"postgres": f"host=127.0.0.1 port={server.port} dbname=postgres "
                               "user=capped password=cappedpass pool_size=auto"},
        target=server)
    # 75% of the role's 8 = 6 (the server's 17 usable is larger).
    assert "pool_size=auto for postgres: 6" in px.logs()
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            n = server.query("select count(*) from pg_stat_activity where usename = 'capped'")
            peak = max(peak, int(n[0][0]))
            time.sleep(0.05)

    def work() -> None:
        with psycopg.connect(px.dsn(), autocommit=True) as conn:
            conn.execute("select pg_sleep(0.3)")

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=work) for _ in range(15)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert peak == 6


def test_pool_size_auto_is_read_again_on_reload(pg_factory: object,
                                                 pgmux_factory: PgmuxFactory) -> None:
    import signal

    server: EmbeddedPostgres = pg_factory(max_connections=20)  # type: ignore[operator]
    server.execute("create role capped2 login password 'pw2' connection limit 8")
    px = pgmux_factory(
        databases={"postgres": f"host=127.0.0.1 port={server.port} dbname=postgres "
                               "user=capped2 password=pw2 pool_size=auto"},
        target=server)
    assert "pool_size=auto for postgres: 6" in px.logs()
    server.execute("alter role capped2 connection limit 4")
    px.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "pool_size=auto for postgres: 3" not in px.logs():
        assert time.monotonic() < deadline, px.logs()
        time.sleep(0.1)
