"""PgBouncer's signals on a real pgmux process: HUP reloads (pool size applied to running pools,
a bad file kept out), INT/TERM safe shutdowns, a second one or QUIT at once, USR1/USR2; and the
pidfile and daemon mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from tests.integration.adminutil import pool, rows, wait_for
from tests.integration.conftest import PgmuxFactory, render_ini, wait_port


def _servers(row: dict[str, int]) -> int:
    return sum(row[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))


def test_sighup_new_pool_size_caps_servers_under_load(pg: EmbeddedPostgres,
                                                     pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory({"default_pool_size": 10})
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0] * 20

    def worker(i: int) -> None:
        try:
            # NOTE: prepare_threshold=None: plain queries only; this test is about pool sizes.
            with psycopg.connect(pgm.dsn(application_name="reloadcap"), autocommit=True,
                                 prepare_threshold=None) as c:
                while not stop.is_set():
                    c.execute("select pg_sleep(0.01)")
                    done[i] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(20)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: _servers(pool(pgm)) >= 5)
        pgm.ini.write_text(pgm.ini.read_text().replace("default_pool_size = 10",
                                                       "default_pool_size = 3"))
        pgm.signal(signal.SIGHUP)
        wait_for(lambda: _servers(pool(pgm)) <= 3)
        before = sum(done)
        with psycopg.connect(pg.dsn(), autocommit=True) as direct:
            for _ in range(10):
                row = pool(pgm)
                assert row["sv_active"] <= 3 and _servers(row) <= 3, row
                backends = direct.execute(
                    "select count(*) from pg_stat_activity where application_name = "
                    "'reloadcap'").fetchone()
                assert backends is not None and backends[0] <= 3
                time.sleep(0.05)
        assert wait_for(lambda: sum(done) > before + 20)  # still serving all of them
        row = pool(pgm)
        assert row["cl_active"] + row["cl_waiting"] == 20, row
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors
    assert "got SIGHUP, re-reading config" in pgm.logs()


def test_sighup_bad_file_keeps_old_config(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    pgm.ini.write_text(pgm.ini.read_text().replace("pool_mode = transaction",
                                                   "pool_mode = sometimes"))
    pgm.signal(signal.SIGHUP)
    wait_for(lambda: "RELOAD failed, keeping the old configuration" in pgm.logs())
    assert "sometimes" in pgm.logs()
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)
    config = {r["key"]: r["value"] for r in rows(pgm, "SHOW CONFIG")}
    assert config["pool_mode"] == "transaction"


def test_sigusr1_pauses_sigusr2_resumes(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        c.execute("select 1")
        pgm.signal(signal.SIGUSR1)
        wait_for(lambda: ("paused", "yes") in [(r["key"], r["value"])
                                                for r in rows(pgm, "SHOW STATE")])
        wait_for(lambda: _servers(pool(pgm)) == 0)
        out: dict[str, object] = {}
        t = threading.Thread(target=lambda: out.setdefault("v", c.execute(
            "select 7").fetchone()), daemon=True)
        t.start()
        t.join(0.5)
        assert t.is_alive()
        pgm.signal(signal.SIGUSR2)
        t.join(5)
        assert out == {"v": (7,)}


def test_sigterm_waits_for_clients(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    c = psycopg.connect(pgm.dsn(), autocommit=True)
    c.execute("select 1")
    pgm.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert pgm.proc.poll() is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pgm.dsn(), connect_timeout=3)
    assert c.execute("select 2").fetchone() == (2,)
    c.close()
    assert pgm.proc.wait(10) == 0


def test_second_sigterm_exits_at_once(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        c.execute("select 1")
        pgm.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert pgm.proc.poll() is None
        pgm.signal(signal.SIGTERM)
        assert pgm.proc.wait(5) == 0
    assert "fast exit" in pgm.logs()


def test_sigint_waits_for_servers_then_exits(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        c.execute("begin")
        c.execute("select 1")
        pgm.signal(signal.SIGINT)
        time.sleep(0.5)
        assert pgm.proc.poll() is None, "exited while a transaction held a server"
        c.execute("commit")
        assert pgm.proc.wait(10) == 0


def test_sigquit_exits_at_once(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    c = psycopg.connect(pgm.dsn(), autocommit=True)
    c.execute("begin")
    c.execute("select 1")
    pgm.signal(signal.SIGQUIT)
    assert pgm.proc.wait(5) == 0
    with pytest.raises(psycopg.OperationalError):
        c.execute("select 2")
    c.close()


def test_pidfile_written_and_removed(pgmux_factory: PgmuxFactory, tmp_path: Path) -> None:
    pidfile = tmp_path / "pgmux.pid"
    pgm = pgmux_factory({"pidfile": str(pidfile)})
    wait_for(pidfile.exists)
    assert int(pidfile.read_text()) == pgm.proc.pid
    pgm.signal(signal.SIGQUIT)
    assert pgm.proc.wait(5) == 0
    assert not pidfile.exists()


def test_daemon_needs_pidfile_and_logfile(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    port = free_port()
    base = render_ini(pg, port, tmp_path, {}, None, None, None, None)
    ini = tmp_path / "bare.ini"
    ini.write_text(base)
    out = subprocess.run([sys.executable, "-m", "pgmux", "serve", "-d", str(ini)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "pidfile" in out.stderr
    pidfile, logfile = tmp_path / "d.pid", tmp_path / "d.log"
    ini.write_text(render_ini(pg, port, tmp_path, {"pidfile": str(pidfile),
                                                   "logfile": str(logfile)},
                              None, None, None, None))
    out = subprocess.run([sys.executable, "-m", "pgmux", "serve", "-d", str(ini)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    try:
        wait_port(port)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        os.kill(pid, signal.SIGQUIT)
    wait_for(lambda: not pidfile.exists())
    assert "process up" in logfile.read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_second_sigint_exits_at_once(workers: int, pgmux_factory: PgmuxFactory) -> None:
    # NOTE: PgBouncer 1.25: SIGINT is a safe shutdown (SHUTDOWN WAIT_FOR_SERVERS); one received
    # while a shutdown is in progress is an immediate shutdown. With workers, the supervisor
    # passes both to every worker.
    pgm = pgmux_factory(pgmux={"workers": workers})
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        c.execute("begin")
        c.execute("select 1")
        pgm.signal(signal.SIGINT)
        time.sleep(0.5)
        assert pgm.proc.poll() is None, "exited while a transaction held a server"
        pgm.signal(signal.SIGINT)
        assert pgm.proc.wait(5) == 0
        with pytest.raises(psycopg.OperationalError):
            c.execute("select 2")
    assert "got SIGINT while shutting down, fast exit" in pgm.logs()


def test_sighup_reopens_a_rotated_logfile_as_the_unprivileged_user(
        pgmux_factory: PgmuxFactory, tmp_path: Path) -> None:
    """logrotate renames the file, then sends SIGHUP: pgmux (running as the user -u gave it,
    not root) creates the logfile anew and writes there; the old file keeps what came before."""
    logdir = tmp_path / "logs"
    logdir.mkdir()
    logfile = logdir / "pgbouncer.log"
    pgm = pgmux_factory({"logfile": str(logfile), "log_connections": 1})
    with psycopg.connect(pgm.dsn(), autocommit=True) as conn:
        conn.execute("select 1")
    wait_for(lambda: "login attempt" in logfile.read_text())
    rotated = logdir / "pgbouncer.log.1"
    logfile.rename(rotated)
    pgm.signal(signal.SIGHUP)
    wait_for(lambda: "got SIGHUP" in pgm.logs())
    # NOTE: the file is opened again by name at the next line, as it is written.
    with psycopg.connect(pgm.dsn(), autocommit=True) as conn:
        conn.execute("select 2")
    wait_for(lambda: logfile.exists() and "login attempt" in logfile.read_text())
    assert "got SIGHUP" in rotated.read_text()
    if os.geteuid() == 0:
        # NOTE: made by the process after it dropped root: owned by the -u user.
        assert logfile.stat().st_uid != 0
