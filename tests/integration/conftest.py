"""Fixtures that run pgmux as a real subprocess in front of the embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from tests import unprivileged

# The users the tests log in as under the default auth_type=trust.
DEFAULT_USERLIST = {"postgres": "", "stats": "", "md5user": "md5pass",
                    "scramuser": "scrampass", "plainuser": "plainpass"}


class Pgmux:
    """A running `pgmux serve CONFIG` process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, ini: Path, log: Path,
                 socket_dir: Path) -> None:
        self.proc = proc
        self.port = port
        self.ini = ini
        self.log = log
        self.socket_dir = socket_dir
        self.host = "127.0.0.1"

    def dsn(self, user: str = "postgres", password: str | None = None,
            dbname: str = "postgres", **params: str) -> str:
        auth = user if password is None else f"{user}:{password}"
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}" + (
            f"?{query}" if query else "")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log and log.exists() else ""
            raise RuntimeError(f"pgmux exited with {proc.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def render_ini(pg: EmbeddedPostgres, port: int, socket_dir: Path, settings: dict[str, Any],
               databases: dict[str, str] | None, users: dict[str, str] | None,
               pgmux: dict[str, Any] | None, auth_file: Path | None) -> str:
    dbs = databases if databases is not None else {
        "postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres",
        "testdb": f"host=127.0.0.1 port={pg.port} dbname=testdb",
    }
    base: dict[str, Any] = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": str(socket_dir),
        "auth_type": "trust",
        "pool_mode": "transaction",
        "default_pool_size": 10,
        "log_connections": 0,
        "log_disconnections": 0,
        "server_login_retry": 1,
        "admin_users": "postgres",
        "stats_users": "stats",
    }
    if auth_file is None and settings.get("auth_type", "trust") == "trust" and \
            "auth_file" not in settings:
        # NOTE: with trust, PgBouncer still wants the user in auth_file (the secrets go
        # unused by the client login; the server login of a user's own pool uses them).
        auth_file = socket_dir / "userlist-default.txt"
        auth_file.write_text("".join(f'"{u}" "{p}"\n' for u, p in DEFAULT_USERLIST.items()))
    if auth_file is not None:
        base["auth_file"] = str(auth_file)
    base.update(settings)
    lines = ["[databases]"]
    lines += [f"{name} = {spec}" for name, spec in dbs.items()]
    if users:
        lines.append("[users]")
        lines += [f"{name} = {spec}" for name, spec in users.items()]
    lines.append("[pgbouncer]")
    lines += [f"{k} = {v}" for k, v in base.items()]
    if pgmux:
        lines.append("[pgmux]")
        lines += [f"{k} = {v}" for k, v in pgmux.items()]
    return "\n".join(lines) + "\n"


PgmuxFactory = Callable[..., Pgmux]



@pytest.fixture(scope="session", autouse=True)
def _unprivileged_base() -> Iterator[None]:
    yield
    unprivileged.remove_base_dir()


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest) -> Path:
    """Integration tests' temp dir: one the unprivileged pgmux can be given (pytest's own are
    under a 0700 directory of root's)."""
    return unprivileged.new_dir(request.node.name)


@pytest.fixture
def pgmux_factory(pg: EmbeddedPostgres, tmp_path: Path) -> Iterator[PgmuxFactory]:
    """Start pgmux processes: pgmux_factory(settings={...}, databases=..., users=...,
    userlist={user: secret}, pgmux={...}, target=pg) -> Pgmux. All stopped after the test."""
    started: list[Pgmux] = []

    def start(settings: dict[str, Any] | None = None, *, databases: dict[str, str] | None = None,
              users: dict[str, str] | None = None, userlist: dict[str, str] | None = None,
              pgmux: dict[str, Any] | None = None, target: EmbeddedPostgres | None = None,
              args: list[str] | None = None, env: dict[str, str] | None = None) -> Pgmux:
        n = len(started)
        port = free_port()
        socket_dir = tmp_path / f"sock{n}"
        socket_dir.mkdir(exist_ok=True)
        auth_file = None
        if userlist is not None:
            auth_file = tmp_path / f"userlist{n}.txt"
            auth_file.write_text("".join(f'"{u}" "{p}"\n' for u, p in userlist.items()))
        ini = tmp_path / f"pgbouncer{n}.ini"
        log = tmp_path / f"pgmux{n}.log"
        ini.write_text(render_ini(target or pg, port, socket_dir, settings or {}, databases,
                                  users, pgmux, auth_file))
        # NOTE: as root, pgmux drops to an unprivileged user (-u), as a service would run
        # it: root ignores file and socket permissions, so tests as root cannot see their bugs.
        unprivileged.give_away(tmp_path)
        cmd = [sys.executable, "-m", "pgmux", "serve", str(ini)] + (args or []) + \
            unprivileged.serve_args()
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        started.append(Pgmux(proc, port, ini, log, socket_dir))
        wait_port(port, proc, log=log)
        if (settings or {}).get("unix_socket_dir", socket_dir):
            # NOTE: the Unix socket is made after the TCP listeners.
            sock = Path((settings or {}).get("unix_socket_dir", socket_dir)) / f".s.PGSQL.{port}"
            deadline = time.monotonic() + 10
            while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
        return started[-1]

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def pgmux(pgmux_factory: PgmuxFactory) -> Pgmux:
    """One pgmux in transaction mode, pool size 10, trust auth, in front of `pg`."""
    return pgmux_factory()
