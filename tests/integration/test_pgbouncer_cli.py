"""PgBouncer's command line on a real, unprivileged pgmux: `pgbouncer` as a link to `pgmux`,
-R refused beside a running pooler (and booting normally when none runs), -d with -u writing
the pidfile as the unprivileged user, -q keeping stderr silent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from tests import unprivileged
from tests.integration.adminutil import wait_for
from tests.integration.conftest import PgmuxFactory, render_ini, wait_port

pytestmark = pytest.mark.timeout(60)


def pgbouncer_link(directory: Path) -> Path:
    """A `pgbouncer` symlink to this environment's `pgmux` script, as a package would install."""
    script = Path(sys.executable).parent / "pgmux"
    assert script.exists(), script
    link = directory / "pgbouncer"
    link.symlink_to(script)
    return link


def test_pgbouncer_link_shows_the_version_and_serves_a_config(
        pg: EmbeddedPostgres, tmp_path: Path) -> None:
    link = pgbouncer_link(tmp_path)
    out = subprocess.run([str(link), "-V"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and out.stdout.startswith("PgBouncer 1.25"), out
    out = subprocess.run([str(link), "--help"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "--reboot" in out.stdout and "--daemon" in out.stdout
    port = free_port()
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(render_ini(pg, port, tmp_path, {}, None, None, None, None))
    unprivileged.give_away(tmp_path)
    # NOTE: `pgbouncer -v CONFIG` as a service file for PgBouncer writes it.
    proc = subprocess.Popen([str(link), "-v", str(ini), *unprivileged.serve_args()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        proc.send_signal(signal.SIGQUIT)
        _, err = proc.communicate(timeout=10)
    assert b"DEBUG" in err  # -v: verbose logging on stderr


def test_reboot_beside_a_running_pooler_is_refused_and_names_the_alternative(
        pgmux_factory: PgmuxFactory, tmp_path: Path) -> None:
    running = pgmux_factory()
    link = pgbouncer_link(tmp_path)
    out = subprocess.run([str(link), "-R", str(running.ini), *unprivileged.serve_args()],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1
    assert "not supported" in out.stderr and "so_reuseport" in out.stderr, out.stderr
    assert "SIGTERM" in out.stderr
    assert running.proc.poll() is None
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 2").fetchone() == (2,)


def test_reboot_with_nothing_running_boots_normally(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory(args=["--reboot"])
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        assert c.execute("select 3").fetchone() == (3,)
    assert "booting normally" in pgm.logs()


def test_daemon_as_unprivileged_user_writes_pidfile_and_stops_on_sigterm(
        pg: EmbeddedPostgres, tmp_path: Path) -> None:
    port = free_port()
    pidfile, logfile = tmp_path / "bouncer.pid", tmp_path / "bouncer.log"
    ini = tmp_path / "daemon.ini"
    ini.write_text(render_ini(pg, port, tmp_path, {"pidfile": pidfile, "logfile": logfile},
                              None, None, None, None))
    unprivileged.give_away(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pgmux", "serve", "--daemon", "--quiet",
                           str(ini), *unprivileged.serve_args()],
                          capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # -q, and a daemon writes nothing to stderr
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    try:
        wait_port(port)
        # NOTE: the daemon runs as the unprivileged user and owns its pidfile.
        assert pidfile.stat().st_uid == unprivileged.user().uid or not unprivileged.user().switches
        with open(f"/proc/{pid}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) == (unprivileged.user().uid if unprivileged.user()
                                            .switches else os.getuid())
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as c:
            assert c.execute("select 4").fetchone() == (4,)
    finally:
        os.kill(pid, signal.SIGTERM)  # no client left: super safe shutdown ends at once
    wait_for(lambda: not pidfile.exists())
    assert "process up" in logfile.read_text()
