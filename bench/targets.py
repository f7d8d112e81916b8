"""The benchmark's targets: the embedded PostgreSQL, PgBouncer and pgmux, each a process that
listens on 127.0.0.1, run from the same pgbouncer.ini settings."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgmux.embedded import EmbeddedPostgres, free_port

# The pooler settings both poolers get, in PgBouncer's own names and format.
POOLER_SETTINGS: dict[str, Any] = {
    "listen_addr": "127.0.0.1",
    "auth_type": "trust",
    "pool_mode": "transaction",
    "default_pool_size": 16,
    "max_client_conn": 20000,
    "log_connections": 0,
    "log_disconnections": 0,
    "logfile": "",
}
RUN_AS = "pgmux"  # NOTE: PgBouncer refuses to run as root; the embedded PostgreSQL uses it too


def render_ini(pg_port: int, listen_port: int, socket_dir: Path, auth_file: Path) -> str:
    lines = [
        "[databases]",
        f"postgres = host=127.0.0.1 port={pg_port} dbname=postgres",
        "",
        "[pgbouncer]",
        f"listen_port = {listen_port}",
        f"unix_socket_dir = {socket_dir}",
        f"auth_file = {auth_file}",
    ]
    lines += [f"{k} = {v}" for k, v in POOLER_SETTINGS.items()]
    return "\n".join(lines) + "\n"


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def interrupt(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGINT (a pooler's or perf's clean stop), then SIGKILL if it is still there after
    timeout seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pgmux_env(pure: bool, src: Path | None = None) -> dict[str, str]:
    """The environment pgmux runs in: PGMUX_PURE=1 for pure Python, else unset (the installed
    build); src first on PYTHONPATH to run another source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PGMUX_PURE"}
    if pure:
        env["PGMUX_PURE"] = "1"
    if src is not None:
        saved = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(src) + (os.pathsep + saved if saved else "")
    return env


def build_of(env: dict[str, str]) -> str:
    """Which build pgmux runs in env: the "build:" line of `pgmux --version` ("pure Python"
    for a pgmux older than the compiled build, whose --version has no such line)."""
    out = subprocess.run([sys.executable, "-m", "pgmux", "--version"], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    for line in out.splitlines():
        if line.startswith("build: "):
            return line.removeprefix("build: ")
    return "pure Python"


# Lines of a pooler's log that tell of trouble (PgBouncer: "WARNING"/"ERROR"; pgmux: Python
# logging levels and tracebacks).
TROUBLE = re.compile(r"WARNING|ERROR|CRITICAL|FATAL|Traceback|Exception|exception|error")


@dataclass
class Target:
    """One thing pgbench connects to."""

    name: str  # "pgmux", "pgbouncer", "direct"
    label: str  # for the report
    port: int
    pid: int | None  # the process whose CPU and memory are measured (None: not measured)
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    ini: Path | None = None
    build: str = ""  # pgmux: "compiled (mypyc)" or "pure Python"
    _log_offset: int = field(default=0, repr=False)

    def mark_log(self) -> None:
        if self.log is not None and self.log.exists():
            self._log_offset = self.log.stat().st_size

    def new_log_lines(self) -> list[str]:
        """Lines the process logged since the last mark_log()."""
        if self.log is None or not self.log.exists():
            return []
        with open(self.log, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        self._log_offset += len(data)
        return data.decode(errors="replace").splitlines()

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            interrupt(self.proc)


class Bench:
    """Owns the work directory and every process the benchmark starts."""

    def __init__(self, workdir: Path, pg_max_connections: int) -> None:
        self.workdir = workdir
        self.pg_max_connections = pg_max_connections
        self.pg: EmbeddedPostgres | None = None
        self.targets: dict[str, Target] = {}
        pw = pwd.getpwnam(RUN_AS) if os.geteuid() == 0 else None
        self._uid = pw.pw_uid if pw else None
        self._gid = pw.pw_gid if pw else None

    # ---- PostgreSQL ------------------------------------------------------------------------
    def start_postgres(self) -> EmbeddedPostgres:
        # NOTE: settings for a benchmark, not for durability: the data directory is thrown away.
        self.pg = EmbeddedPostgres(
            max_connections=self.pg_max_connections,
            settings={"shared_buffers": "256MB", "max_wal_size": "2GB",
                      "checkpoint_timeout": "30min", "log_min_messages": "warning",
                      "log_connections": "off", "log_disconnections": "off"},
        ).start()
        self.targets["direct"] = Target("direct", "PostgreSQL (direct)", self.pg.port, None)
        return self.pg

    @property
    def pg_pid(self) -> int | None:
        return None if self.pg is None else self.pg.pid

    @property
    def bin_dir(self) -> Path:
        assert self.pg is not None
        return self.pg.bin_dir

    # ---- poolers ----------------------------------------------------------------------------
    def _pooler_files(self, name: str) -> tuple[int, Path, Path, Path]:
        assert self.pg is not None
        d = self.workdir / name
        d.mkdir(mode=0o755, exist_ok=True)
        sock = d / "sock"
        sock.mkdir(mode=0o755, exist_ok=True)
        auth = d / "userlist.txt"
        auth.write_text('"postgres" ""\n')
        port = free_port()
        ini = d / "pgbouncer.ini"
        ini.write_text(render_ini(self.pg.port, port, sock, auth))
        if self._uid is not None:
            for p in (d, sock, auth, ini):
                os.chown(p, self._uid, self._gid or 0)
        for p in (auth, ini):
            os.chmod(p, 0o644)
        return port, ini, d / "stderr.log", d

    def start_pgbouncer(self) -> Target:
        exe = shutil.which("pgbouncer")
        if exe is None:
            raise RuntimeError("pgbouncer is not installed: apt-get install -y pgbouncer")
        port, ini, log, d = self._pooler_files("pgbouncer")
        kwargs: dict[str, Any] = {}
        if self._uid is not None:
            kwargs = {"user": self._uid, "group": self._gid, "extra_groups": []}
        with open(log, "wb") as out:
            proc = subprocess.Popen([exe, str(ini)], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=d, start_new_session=True,
                                    **kwargs)
        wait_port(port, proc, log)
        t = Target("pgbouncer", "PgBouncer", port, proc.pid, log, proc, ini)
        self.targets["pgbouncer"] = t
        return t

    def start_pgmux(self, loop: str | None = None, name: str = "pgmux", pure: bool = False,
                    src: Path | None = None) -> Target:
        """pgmux as target `name`: the installed build, or with pure=True the same install's
        pure Python (PGMUX_PURE=1); with src, the pgmux of that source tree (first on
        PYTHONPATH). The target's `build` says which build runs, as `pgmux --version` does."""
        port, ini, log, d = self._pooler_files(name)
        env = pgmux_env(pure, src)
        if loop:
            env["PGMUX_LOOP"] = loop
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "pgmux", "serve", str(ini)],
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=d, env=env,
                                    start_new_session=True)
        wait_port(port, proc, log)
        t = Target(name, name.replace("-", " "), port, proc.pid, log, proc, ini,
                   build=build_of(env))
        self.targets[name] = t
        return t

    def close(self) -> None:
        for t in self.targets.values():
            t.stop()
        if self.pg is not None:
            self.pg.cleanup()
            self.pg = None
        # NOTE: ab.py and ceiling.py left their work directories (pooler logs, sockets) behind
        shutil.rmtree(self.workdir, ignore_errors=True)


def versions(bin_dir: Path) -> dict[str, str]:
    """Versions of everything the benchmark runs."""
    out: dict[str, str] = {}

    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "not found"
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else ""

    out["pgbouncer"] = first_line(["pgbouncer", "--version"])
    out["pgbench"] = first_line([str(bin_dir / "pgbench"), "--version"])
    out["postgres"] = first_line([str(bin_dir / "postgres"), "--version"])
    try:
        import pgmux

        out["pgmux"] = getattr(pgmux, "__version__", "?")
    except ImportError:
        out["pgmux"] = "?"
    try:
        import uvloop

        out["uvloop"] = uvloop.__version__
    except ImportError:
        out["uvloop"] = "not installed"
    out["python"] = sys.version.split()[0]
    return out
