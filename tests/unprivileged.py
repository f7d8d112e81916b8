"""Running pgmux and its clients as an unprivileged user: tests run as root in CI, and root
ignores file and socket permissions, which hid the Unix socket bug for a whole release."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from pgmux.embedded.install import RunAs, install_for, run_as

_base: Path | None = None


def user() -> RunAs:
    """Who pgmux runs as in tests: the embedded server's unprivileged user when we are root,
    else ourselves (RunAs.switches is False)."""
    return run_as()


def serve_args() -> list[str]:
    """Extra `pgmux serve` arguments that make it run unprivileged (`-u USER` when root)."""
    who = user()
    return ["-u", who.name] if who.switches else []


def base_dir() -> Path:
    """A directory under the system temp dir that every user may enter (pytest's own temp dirs
    are 0700 for root), removed at exit by the caller's fixture."""
    global _base
    if _base is None:
        _base = Path(tempfile.mkdtemp(prefix="pgmux-tests-"))
        _base.chmod(0o711)
    return _base


def remove_base_dir() -> None:
    global _base
    if _base is not None:
        shutil.rmtree(_base, ignore_errors=True)
        _base = None


def new_dir(name: str) -> Path:
    """A fresh directory for one test, owned by us until give_away() hands it over."""
    path = Path(tempfile.mkdtemp(prefix=f"{name[:40]}-", dir=base_dir()))
    # NOTE: like /tmp itself: other users may enter (a socket's own mode decides who connects).
    path.chmod(0o755)
    return path


def give_away(path: Path) -> None:
    """Make path and everything in it belong to the unprivileged user (no-op when not root)."""
    who = user()
    if not who.switches:
        return
    assert who.uid is not None and who.gid is not None
    os.chown(path, who.uid, who.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), who.uid, who.gid, follow_symlinks=False)


def as_user_kwargs(who: RunAs | None = None) -> dict[str, object]:
    """subprocess arguments that run a client program as the unprivileged user."""
    who = who or user()
    if not who.switches:
        return {}
    return {"user": who.uid, "group": who.gid, "extra_groups": []}


def pg_bin(name: str) -> Path:
    """A PostgreSQL client program (psql, pgbench, ...) that the unprivileged user may run."""
    return install_for(user()).bin_dir / name


def psql(host: str, port: int, *sql: str, user: str = "postgres", dbname: str = "postgres",
         who: RunAs | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """psql -X -A -t as the unprivileged user (or `who`), one -c per statement."""
    cmd = [str(pg_bin("psql")), "-X", "-A", "-t", "-h", host, "-p", str(port), "-U", user,
           "-v", "ON_ERROR_STOP=1", dbname]
    for s in sql:
        cmd += ["-c", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check,
                          env={"PGCONNECT_TIMEOUT": "5", "PATH": "/usr/bin:/bin"},
                          **as_user_kwargs(who))  # type: ignore[call-overload]


def other_user() -> RunAs:
    """A second unprivileged identity (nobody), for tests of who may reach a socket."""
    pw = pwd.getpwnam("nobody")
    return RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)
