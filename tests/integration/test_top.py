"""`pgmux top`: one snapshot (--once) and the live view in a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import psycopg

from tests.cli.test_top import headers_are_whole
from tests.integration.adminutil import wait_for
from tests.integration.conftest import Pgmux


def test_top_once_renders_pools(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app:
        app.execute("select 1")
        out = subprocess.run(
            [sys.executable, "-m", "pgmux", "top", "--once", pgmux.dsn(dbname="pgbouncer")],
            capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for word in ("pgmux top", "PgBouncer 1.25", "active", "waiting", "tested", "login",
                 "maxwait", "postgres", "transaction", "traffic"):
        assert word in text, word


def test_top_once_at_80_columns_cuts_no_header(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app:
        app.execute("select 1")
        out = subprocess.run(
            [sys.executable, "-m", "pgmux", "top", "--once", pgmux.dsn(dbname="pgbouncer")],
            capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    headers_are_whole(out.stdout, 80)
    assert "txn" in out.stdout  # transaction mode, shortened to fit


def test_top_once_reports_a_dead_console() -> None:
    out = subprocess.run([sys.executable, "-m", "pgmux", "top", "--once",
                          "postgresql://x@127.0.0.1:1/pgbouncer"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "pgmux top:" in out.stderr


def test_top_live_in_a_pty_highlights_waiting(pgmux: Pgmux) -> None:
    app = psycopg.connect(pgmux.dsn(), autocommit=True)
    app.execute("select 1")
    with psycopg.connect(pgmux.dsn(dbname="pgbouncer"), autocommit=True) as console:
        console.execute("PAUSE")
    waiter = threading.Thread(target=lambda: app.execute("select 1"), daemon=True)
    waiter.start()
    # NOTE: a pseudo-terminal as stdin/stdout, so rich draws its live (styled) view.
    fd, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgmux", "top", "-n", "0.2", pgmux.dsn(dbname="pgbouncer")],
        stdin=tty, stdout=tty, stderr=tty, env={**os.environ, "TERM": "xterm-256color"})
    os.close(tty)
    seen = bytearray()

    def drain() -> None:
        while select.select([fd], [], [], 0.1)[0]:
            try:
                seen.extend(os.read(fd, 65536))
            except OSError:
                return

    try:
        def screen_shows_waiting() -> bool:
            drain()
            return b"PAUSED" in seen and b"waiting 1" in seen

        wait_for(screen_shows_waiting, timeout=15)
        assert b"\x1b[" in seen  # a styled, live terminal view, not plain prints
    finally:
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            drain()
        if proc.poll() is None:
            proc.kill()
        os.close(fd)
        with psycopg.connect(pgmux.dsn(dbname="pgbouncer"), autocommit=True) as console:
            console.execute("RESUME")
        waiter.join(5)
        app.close()
    assert proc.wait(5) == 0
