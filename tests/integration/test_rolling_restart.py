"""Rolling restarts under pgbench load (transaction mode), with no failed transaction: a new
pgmux on the same port (so_reuseport) while the old one gets SIGTERM, and RESTART of a pgmux
with workers, which replaces its workers one at a time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests import unprivileged
from tests.integration.conftest import Pgmux, PgmuxFactory, render_ini

SECONDS = 6


@pytest.fixture(scope="module")
def bench_db(pg: EmbeddedPostgres) -> str:
    pgbench = str(pg.bin_dir / "pgbench")
    subprocess.run([pgbench, "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-U", "postgres",
                    "-p", str(pg.port), "testdb"], check=True, capture_output=True)
    return "testdb"


def pgbench(pg: EmbeddedPostgres, port: int, seconds: int, *extra: str
            ) -> subprocess.Popen[str]:
    cmd = [str(pg.bin_dir / "pgbench"), "-n", "-c", "8", "-j", "2", "-T", str(seconds),
           "-h", "127.0.0.1", "-U", "postgres", "-p", str(port), *extra, "testdb"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(run: subprocess.Popen[str]) -> int:
    """Transactions pgbench did; it must end well and count no failed transaction."""
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err[-2000:]
    assert "number of failed transactions: 0" in out, out
    line = next(x for x in out.splitlines() if "actually processed" in x)
    return int(line.split(":")[1].split("/")[0])


def wait_log(mux: Pgmux, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in mux.logs():
        assert time.monotonic() < deadline, mux.logs()[-3000:]
        time.sleep(0.05)


def start_next(pg: EmbeddedPostgres, old: Pgmux, tmp_path: Path) -> Pgmux:
    """A second pgmux on the old one's port and Unix socket directory (so_reuseport)."""
    ini = tmp_path / "next.ini"
    log = tmp_path / "next.log"
    ini.write_text(render_ini(pg, old.port, old.socket_dir, {"so_reuseport": 1}, None, None,
                              None, None))
    unprivileged.give_away(tmp_path)
    cmd = [sys.executable, "-m", "pgmux", "serve", str(ini)] + unprivileged.serve_args()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    new = Pgmux(proc, old.port, ini, log, old.socket_dir)
    wait_log(new, "process up")
    return new


def test_new_process_on_the_same_port_then_sigterm_to_the_old(
        pg: EmbeddedPostgres, bench_db: str, pgmux_factory: PgmuxFactory,
        tmp_path: Path) -> None:
    old = pgmux_factory({"so_reuseport": 1})
    first = pgbench(pg, old.port, SECONDS)
    time.sleep(1.5)
    new = start_next(pg, old, tmp_path)
    try:
        old.signal(signal.SIGTERM)
        wait_log(old, "got SIGTERM")
        # NOTE: the old process no longer accepts: every new client goes to the new one.
        second = pgbench(pg, old.port, SECONDS - 3)
        assert finished(first) > 0
        assert finished(second) > 0
        assert old.proc.wait(15) == 0
        assert "shutdown: all clients disconnected, exiting" in old.logs()
        # the new process took the Unix socket over, and the old one left it in place
        assert (old.socket_dir / f".s.PGSQL.{old.port}").exists()
        with psycopg.connect(f"postgresql://postgres@/pgbouncer?host={old.socket_dir}"
                             f"&port={old.port}", autocommit=True,
                             cursor_factory=psycopg.ClientCursor) as conn:
            stats = {r[0]: r[2] for r in conn.execute("SHOW STATS").fetchall()}
        assert stats["testdb"] > 0
    finally:
        new.stop()


def test_restart_replaces_workers_one_at_a_time(
        pg: EmbeddedPostgres, bench_db: str, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory(pgmux={"workers": 2})
    admin = f"postgresql://postgres@127.0.0.1:{mux.port}/pgbouncer"
    time.sleep(1)
    with psycopg.connect(admin, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
        before = {r[1] for r in c.execute("SHOW WORKERS").fetchall()}
    assert len(before) == 2
    steady = pgbench(pg, mux.port, SECONDS)
    churn = pgbench(pg, mux.port, SECONDS, "-C")   # a new connection per transaction
    time.sleep(2)
    with psycopg.connect(admin, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
        c.execute("RESTART")
    wait_log(mux, "RESTART: every worker replaced")
    assert finished(steady) > 0
    assert finished(churn) > 0
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(admin, autocommit=True,
                             cursor_factory=psycopg.ClientCursor) as c:
            rows = c.execute("SHOW WORKERS").fetchall()
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    after = {r[1] for r in rows}
    assert len(after) == 2 and not after & before, (before, rows)
    for pid in before:
        # NOTE: the supervisor logs a worker's exit when it reaps it, a moment after the
        # worker's own last line.
        wait_log(mux, f"(pid {pid}) exited with status 0")
