"""`pgmux serve` as a newcomer meets it: the embedded default leaves room beside its pool, start
problems are one clear line before anything starts, `-u` really becomes the user."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgmux.cli.main import main
from pgmux.embedded import EmbeddedPostgres, free_port
from tests import unprivileged
from tests.integration.conftest import PgmuxFactory, wait_port

pytestmark = pytest.mark.timeout(90)
SERVE = [sys.executable, "-m", "pgmux", "serve"]


def test_no_command_prints_help_and_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: pgmux" in captured.err and "serve" in captured.err
    done = subprocess.run([sys.executable, "-m", "pgmux"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "usage: pgmux" in done.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.create_server(("127.0.0.1", free_port())) as sock:
        yield sock.getsockname()[1]


def test_port_in_use_is_refused_before_the_embedded_server_starts(busy_port: int) -> None:
    start = time.monotonic()
    done = subprocess.run([*SERVE, "--port", str(busy_port)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"pgmux: cannot listen on 127.0.0.1:{busy_port}: the port is in use (another pgmux or "
        "PgBouncer?); choose another with --port"
    ]
    assert "embedded" not in done.stderr
    assert time.monotonic() - start < 15


def test_port_in_use_is_refused_in_config_mode(
    pg: EmbeddedPostgres, busy_port: int, tmp_path: Path
) -> None:
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(f"[databases]\npostgres = host=127.0.0.1 port={pg.port}\n[pgbouncer]\n"
                   f"listen_addr = 127.0.0.1\nlisten_port = {busy_port}\nauth_type = trust\n"
                   f"unix_socket_dir = {tmp_path}\n")
    done = subprocess.run([*SERVE, str(ini)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"pgmux: cannot listen on 127.0.0.1:{busy_port}: the port is in use" in done.stderr
    assert "listen_port" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_user_is_one_clear_line_and_exit_1() -> None:
    done = subprocess.run([*SERVE, "--port", str(free_port()), "-u", "no-such-user-here"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "pgmux: -u: no such user: no-such-user-here"


def test_user_setting_is_used_like_u(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(f"[databases]\npostgres = host=127.0.0.1 port={pg.port}\n[pgbouncer]\n"
                   f"listen_addr = 127.0.0.1\nlisten_port = {free_port()}\nauth_type = trust\n"
                   f"unix_socket_dir = {tmp_path}\nuser = no-such-user-here\n")
    done = subprocess.run([*SERVE, str(ini)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "pgmux: user: no such user: no-such-user-here" in done.stderr


def _status(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Uid", "Gid", "Groups"):
            fields[name] = [int(v) for v in value.split()]
    return fields


def test_u_becomes_the_user_with_its_own_groups_only(pgmux_factory: PgmuxFactory) -> None:
    who = unprivileged.user()
    if not who.switches:
        # NOTE: without root only our own user is accepted (as PgBouncer).
        done = subprocess.run([*SERVE, "--port", str(free_port()), "-u", "root"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and "only root can switch users" in done.stderr
        return
    pgm = pgmux_factory()  # NOTE: as root the harness starts it with -u
    status = _status(pgm.proc.pid)
    pw = pwd.getpwnam(who.name)
    assert set(status["Uid"]) == {pw.pw_uid}
    assert set(status["Gid"]) == {pw.pw_gid}
    # initgroups: the user's own groups, none of root's (0 among them before the fix)
    assert sorted(status["Groups"]) == sorted(set(os.getgrouplist(pw.pw_name, pw.pw_gid)))
    assert 0 not in status["Groups"]
    with psycopg.connect(pgm.dsn(), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


CLIENTS = 22


def test_embedded_default_leaves_room_for_info_beside_22_busy_clients(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*SERVE, "--port", str(port), *unprivileged.serve_args()],
                                stdout=subprocess.PIPE, stderr=out, cwd="/")
    try:
        wait_port(port, proc, timeout=60, log=log)
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert "pool size 12 (75% of the 17 connections" in log.read_text()
        server_port, data_dir = _through(url, "select inet_server_port(), "
                                              "current_setting('data_directory')")
        server_url = f"postgresql://postgres@127.0.0.1:{server_port}/postgres"
        busy = _busy(url, CLIENTS, seconds=3)
        try:
            time.sleep(1.5)  # NOTE: every pooled server connection is taken by now
            for target in (server_url, url):
                code, data = _info(target)
                assert code == 0, data
                assert data["connections"]["used"] <= 12 + 1
        finally:
            for t in busy:
                t.join(30)
        pooled = _through(server_url, "select count(*) from pg_stat_activity "
                                      "where backend_type = 'client backend'")[0]
        assert 12 <= pooled <= 13  # the pool and this query
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
        assert code == 0, log.read_text()
    # NOTE: with -u (as root) the server belongs to that user, who stops and removes it
    assert not Path(data_dir).exists(), log.read_text()
    assert "Traceback" not in log.read_text()


def _through(url: str, sql: str) -> tuple[Any, ...]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return tuple(row)


def _busy(url: str, count: int, seconds: float) -> list[threading.Thread]:
    barrier = threading.Barrier(count)

    def work() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            barrier.wait(20)
            conn.execute(f"select pg_sleep({seconds})".encode())

    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def _info(url: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "pgmux", "info", url, "--json"],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, (json.loads(done.stdout) if done.returncode == 0 else
                             {"stderr": done.stderr})
