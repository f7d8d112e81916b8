"""`pgmux serve -d`: detaches, writes its pidfile and logfile, serves, exits on SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from pgmux.embedded import EmbeddedPostgres, free_port
from tests.integration.adminutil import wait_for
from tests.integration.conftest import render_ini


def test_daemon_runs_in_the_background(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    port = free_port()
    pidfile, logfile = tmp_path / "pgmux.pid", tmp_path / "pgmux.log"
    ini = tmp_path / "daemon.ini"
    ini.write_text(render_ini(pg, port, tmp_path, {"pidfile": pidfile, "logfile": logfile},
                              None, None, None, None))
    done = subprocess.run([sys.executable, "-m", "pgmux", "serve", "-d", str(ini)],
                          capture_output=True, timeout=20)
    # The foreground process returns at once; the daemon keeps serving.
    assert done.returncode == 0, done.stderr
    wait_for(pidfile.exists)
    pid = int(pidfile.read_text())
    assert pid != os.getpid()
    try:
        wait_for(lambda: _answers(port))
        assert "process up" in logfile.read_text()
    finally:
        os.kill(pid, signal.SIGINT)
    wait_for(lambda: not pidfile.exists())
    assert "shutdown" in logfile.read_text()


def _answers(port: int) -> bool:
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             connect_timeout=2) as conn:
            return conn.execute("select 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False
