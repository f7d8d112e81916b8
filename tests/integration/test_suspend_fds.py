"""SUSPEND / RESUME and SHOW FDS on a real, unprivileged pgmux, as PgBouncer's usage.md
describes them: SUSPEND freezes every socket (links kept, new clients wait) until RESUME."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import pytest

from tests.faults.wire import WireClient, query
from tests.integration.adminutil import admin, in_thread, wait_for
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(60)


def _state(con: psycopg.Connection[Any]) -> dict[str, str]:
    return {r["key"]: r["value"] for r in con.execute("SHOW STATE").fetchall()}


def test_suspend_freezes_clients_and_new_logins_until_resume(pgmux: Pgmux) -> None:
    c = psycopg.connect(pgmux.dsn(), autocommit=True)
    console = admin(pgmux)
    late: list[psycopg.Connection[Any]] = []
    try:
        c.execute("begin")
        pid, xid = c.execute("select pg_backend_pid(), txid_current()").fetchone() or (0, 0)
        cur = console.execute("SUSPEND")
        assert cur.statusmessage == "SUSPEND"
        assert _state(console) == {"active": "no", "paused": "no", "suspended": "yes"}
        with pytest.raises(psycopg.errors.ProtocolViolation, match="already suspended/paused"):
            console.execute("PAUSE")
        query, q_out = in_thread(lambda: c.execute("select 2").fetchone())
        login, l_out = in_thread(lambda: late.append(
            psycopg.connect(pgmux.dsn(), autocommit=True, connect_timeout=20)))
        query.join(0.7)
        login.join(0.1)
        assert query.is_alive() and login.is_alive(), (q_out, l_out)
        console.execute("RESUME")
        query.join(10)
        login.join(10)
        assert q_out == {"value": (2,)} and "error" not in l_out
        # NOTE: the link was kept across SUSPEND: same backend, same open transaction.
        assert c.execute("select pg_backend_pid(), txid_current()").fetchone() == (pid, xid)
        c.execute("commit")
        assert late[0].execute("select 3").fetchone() == (3,)
        assert _state(console)["suspended"] == "no"
        with pytest.raises(psycopg.errors.ProtocolViolation, match="not paused/suspended"):
            console.execute("RESUME")
    finally:
        for conn in (c, console, *late):
            conn.close()
    assert "SUSPEND command issued" in pgmux.logs()


def test_suspend_answers_once_buffers_are_flushed_under_traffic(
        pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory({"pool_mode": "session"})
    stop = threading.Event()
    done = [0]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with psycopg.connect(pgm.dsn(), autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute("select repeat('x', 100000)").fetchone()
                    done[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: done[0] > 20)
        with admin(pgm) as console:
            console.execute("SUSPEND")
            before = done[0]
            time.sleep(0.5)
            # NOTE: nothing moves while suspended (a query already answered may still count).
            assert done[0] <= before + 4
            console.execute("RESUME")
        assert wait_for(lambda: done[0] > before + 20)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors


def test_show_fds_lists_pgbouncers_columns_with_real_descriptors(pgmux_factory: PgmuxFactory
                                                                 ) -> None:
    pgm = pgmux_factory({"pool_mode": "session"})
    with psycopg.connect(pgm.dsn(application_name="fds"), autocommit=True) as c:
        c.execute("select 1")
        with admin(pgm) as console:
            cur = console.execute("SHOW FDS")
            names = [d.name for d in cur.description or ()]
            fds = cur.fetchall()
        assert names == ["fd", "task", "user", "database", "addr", "port", "cancel", "link",
                         "client_encoding", "std_strings", "datestyle", "timezone", "password",
                         "scram_client_key", "scram_server_key"]
        tasks = [r["task"] for r in fds]
        assert tasks.count("pooler") == 2  # 127.0.0.1 and the Unix socket
        assert tasks.index("pooler") == 0 and "client" in tasks and "server" in tasks
        client = next(r for r in fds if r["task"] == "client")
        server = next(r for r in fds if r["task"] == "server")
        assert client["link"] == server["fd"] and server["link"] == client["fd"]
        assert (client["user"], client["database"], client["addr"]) == (
            "postgres", "postgres", "127.0.0.1")
        assert client["client_encoding"] == "UTF8" and server["std_strings"] == "on"
        assert server["cancel"] != 0 and client["cancel"] != 0
        assert all(r["password"] is None and r["scram_client_key"] is None for r in fds)
        for row in fds:
            # NOTE: each fd is a socket of the pgmux process itself.
            target = os.readlink(f"/proc/{pgm.proc.pid}/fd/{row['fd']}")
            assert target.startswith("socket:"), (row, target)
    with pytest.raises(psycopg.errors.ProtocolViolation, match="admin access needed"):
        rows_as_stats(pgm)


def rows_as_stats(pgm: Pgmux) -> None:
    with admin(pgm, user="stats") as console:
        console.execute("SHOW FDS")


def test_suspend_with_workers_freezes_every_worker(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory(pgmux={"workers": 2})
    clients: list[psycopg.Connection[Any]] = []
    try:
        with admin(pgm) as console:
            # NOTE: clients until both workers hold some (the kernel spreads the accepts).
            workers: set[int] = set()
            while len(workers) < 2 and len(clients) < 30:
                clients.append(psycopg.connect(pgm.dsn(), autocommit=True))
                workers = {r["worker"] for r in console.execute("SHOW CLIENTS").fetchall()
                           if r["database"] == "postgres"}
            assert len(workers) == 2
            console.execute("SUSPEND")
            threads = [in_thread(lambda c=c: c.execute("select 1").fetchone())
                       for c in clients]
            time.sleep(0.5)
            assert all(t.is_alive() for t, _ in threads)
            console.execute("RESUME")
        for t, out in threads:
            t.join(10)
            assert out == {"value": (1,)}
    finally:
        for c in clients:
            c.close()


def test_suspend_timeout_drops_a_client_that_does_not_read(pgmux_factory: PgmuxFactory) -> None:
    # NOTE: PgBouncer's suspend_timeout: a socket whose buffer is not flushed in time is
    # dropped, and SUSPEND answers.
    pgm = pgmux_factory({"suspend_timeout": 1, "log_disconnections": 1})
    slow = WireClient(pgm.port, rcvbuf=4096)
    try:
        slow.login()
        slow.send(query("select repeat('x', 1000000) from generate_series(1, 64)"))
        time.sleep(0.5)  # NOTE: pgmux's buffer towards the client fills; it reads nothing
        with admin(pgm) as console:
            started = time.monotonic()
            console.execute("SUSPEND")
            waited = time.monotonic() - started
            assert 0.8 <= waited < 5, waited
            console.execute("RESUME")
        assert slow.closed_within(5)
    finally:
        slow.close()
    assert "suspend_timeout" in pgm.logs()
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)
