"""`pgmux wrap`: run a command with a pgmux pooler beside it for each of its database URLs.

This is the PgBouncer buildpack's `bin/start-pgbouncer CMD` for pgmux: for each URL variable
(DATABASE_URL by default; PGMUX_URLS / PGBOUNCER_URLS or --url-vars name others) it starts a
pooler on 127.0.0.1, points the variable at it, runs CMD, forwards signals to it, stops the
poolers when CMD exits and exits with CMD's exit code.

Design: one child process per URL, each running pgmux's own `serve()` on a generated
pgbouncer.ini. Not one in-process asyncio thread for all URLs, because:

- the wrapper stays a small synchronous supervisor (signals, exit codes) that pooler load can
  never stall, and one pooler dying does not take the others or the wrapper with it;
- `serve()` installs its signal handlers on its event loop, which Python only allows in the
  main thread, so a pooler thread would have to work around the pooler's own shutdown path;
- the ini goes through the real config loader, so what runs is exactly what
  `pgmux serve that.ini` would run (`--config-dir` keeps the files to look at).

The children run this module (`python -m pgmux.cli.wrap INI --lifeline-fd N`) instead of
`pgmux serve INI` for two things serve does not do. Once listening, a pooler ignores SIGTERM
(the buildpack patches PgBouncer the same way): platforms send SIGTERM to every process, and the
app must still reach its database while it finishes its work; wrap stops the poolers with SIGINT
(PgBouncer's safe shutdown) after CMD has exited. And each pooler shares a socketpair with
wrap: the pooler reports "ready" on it, wrap sees EOF when a pooler dies, and a pooler shuts
down when it sees EOF because wrap is gone (even after `kill -9`), so no pooler outlives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pgmux.config import FALLBACK_DATABASE, ConfigError, DatabaseConfig, Settings, load_config
from pgmux.config import config_from_url as _config_from_url
from pgmux.config.settings import convert

log = logging.getLogger("pgmux")

DEFAULT_URL_VARS = ("DATABASE_URL",)
URL_LIST_VARS = ("PGMUX_URLS", "PGBOUNCER_URLS")  # the first one set wins
ENABLED_VARS = ("PGMUX_ENABLED", "PGBOUNCER_ENABLED")

# NOTE: the buildpack's PGBOUNCER_<NAME> variables (and the three it reads besides the usual
# twelve), each also readable as PGMUX_<NAME>, which wins. NAME.lower() is the [pgbouncer] key.
SETTING_NAMES = (
    "POOL_MODE",
    "MAX_CLIENT_CONN",
    "DEFAULT_POOL_SIZE",
    "MIN_POOL_SIZE",
    "RESERVE_POOL_SIZE",
    "RESERVE_POOL_TIMEOUT",
    "SERVER_LIFETIME",
    "SERVER_IDLE_TIMEOUT",
    "LOG_CONNECTIONS",
    "LOG_DISCONNECTIONS",
    "LOG_POOLER_ERRORS",
    "STATS_PERIOD",
    "SERVER_RESET_QUERY",
    "IGNORE_STARTUP_PARAMETERS",
    "QUERY_WAIT_TIMEOUT",
    "AUTH_TYPE",
)
# NOTE: where wrap's defaults differ from PgBouncer's, they are the buildpack's, so that moving
# an app from the buildpack to pgmux does not change how many server connections it opens.
DEFAULT_SETTINGS = {"pool_mode": "transaction", "default_pool_size": "1",
                    "reserve_pool_size": "1"}

# Query parameters of the app's URL that are about the hop to the real server: they are used
# for the pooler's server side (where pgmux supports them) and left out of the local URL.
_SERVER_HOP_PARAMS = frozenset({
    "host", "hostaddr", "port", "user", "password", "dbname", "service", "passfile",
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir",
    "sslsni", "sslcompression", "sslnegotiation", "sslcertmode", "requiressl", "gssencmode",
    "gsslib", "gssdelegation", "krbsrvname", "channel_binding", "require_auth",
    "target_session_attrs", "load_balance_hosts",
})
# Settings config_from_url takes from URL parameters (sslmode=, sslrootcert=, ...).
_URL_SETTINGS = ("server_tls_sslmode", "server_tls_ca_file", "server_tls_cert_file",
                 "server_tls_key_file", "server_connect_timeout")

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
# Before CMD runs, these abort the start.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})
# A terminal sends these to its whole foreground process group, CMD included.
KEYBOARD_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT})

START_TIMEOUT = 30.0  # seconds for every pooler to listen
STOP_TIMEOUT = 10.0  # seconds for the poolers to shut down after SIGINT, then SIGKILL

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

_EPILOG = """\
environment (PGMUX_<NAME> wins over PGBOUNCER_<NAME>; empty means unset):
  PGMUX_URLS / PGBOUNCER_URLS   names of the URL variables, space-separated (DATABASE_URL)
  PGMUX_ENABLED / PGBOUNCER_ENABLED   0/false/no/off: run CMD without poolers
  POOL_MODE (transaction), DEFAULT_POOL_SIZE (1, or auto), RESERVE_POOL_SIZE (1),
  MAX_CLIENT_CONN, MIN_POOL_SIZE, RESERVE_POOL_TIMEOUT, SERVER_LIFETIME, SERVER_IDLE_TIMEOUT,
  LOG_CONNECTIONS, LOG_DISCONNECTIONS, LOG_POOLER_ERRORS, STATS_PERIOD, SERVER_RESET_QUERY,
  IGNORE_STARTUP_PARAMETERS, QUERY_WAIT_TIMEOUT, AUTH_TYPE: the [pgbouncer] settings of the
  same name (PgBouncer's defaults unless shown). See docs/wrap.md.

example:
  pgmux wrap -- gunicorn app:wsgi
  PGBOUNCER_URLS="DATABASE_URL REPORTING_URL" pgmux wrap -- bin/worker
"""


class WrapError(Exception):
    """A problem found before CMD runs; wrap prints it and exits non-zero."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "wrap",
        help="run a command with a pooler in front of its DATABASE_URL",
        description=(
            "Start a pgmux pooler on 127.0.0.1 for each URL variable (default DATABASE_URL),\n"
            "point the variable at it, run CMD, forward SIGTERM, SIGINT, SIGHUP, SIGQUIT,\n"
            "SIGUSR1 and SIGUSR2 to it, stop the poolers when it exits and exit with its exit\n"
            "code (128+N when signal N killed it). Like the PgBouncer buildpack's\n"
            "bin/start-pgbouncer; it reads the same PGBOUNCER_* variables."),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url-vars", nargs="+", action="extend", metavar="VAR",
                   help="variables holding PostgreSQL URLs to pool (default: $PGMUX_URLS, "
                        "else $PGBOUNCER_URLS, else DATABASE_URL); end the list with --")
    p.add_argument("--config-dir", metavar="DIR",
                   help="write the generated pgbouncer.ini files (VAR.ini) here and keep them "
                        "(default: a private temporary directory, removed at exit)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no pooler logging and no wrap messages, errors excepted")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more pooler logging")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]",
                   help="the command to run")
    p.set_defaults(func=run_wrap)


def run_wrap(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("pgmux wrap: no command given (usage: pgmux wrap [OPTIONS] -- CMD [ARGS...])",
              file=sys.stderr)
        return EXIT_USAGE
    env = dict(os.environ)
    temp_dir: Path | None = None
    try:
        if not wrap_enabled(env):
            return _exec(command)
        names = url_var_names(args.url_vars, env)
        settings = settings_from_env(env)
        if args.config_dir is None:
            temp_dir = Path(tempfile.mkdtemp(prefix="pgmux-wrap-"))
            config_dir = temp_dir
        else:
            config_dir = Path(args.config_dir)
            try:
                config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise WrapError(f"--config-dir: {exc.strerror or exc}: {config_dir}") from None
        poolers = plan_poolers(names, env, settings, config_dir)
        child_env = dict(env)
        for pooler in poolers:
            for name in pooler.names:
                # NOTE: the variable itself, as the buildpack does; VAR_PGBOUNCER too, the name
                # its older versions (and some forks) set instead.
                child_env[name] = pooler.client_url
                child_env[f"{name}_PGBOUNCER"] = pooler.client_url
        return Supervisor(poolers, command, child_env, quiet=args.quiet,
                          verbose=args.verbose).run()
    except WrapError as exc:
        print(f"pgmux wrap: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


# ---- what to run: variable names, settings, URLs and ini files -------------------------------


def _env(env: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` set to something other than blanks, stripped."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def wrap_enabled(env: Mapping[str, str]) -> bool:
    """False when PGMUX_ENABLED (else PGBOUNCER_ENABLED) says 0/false/no/off."""
    from pgmux.config import values

    text = _env(env, *ENABLED_VARS)
    if text is None:
        return True
    try:
        return values.parse_bool(text)
    except ValueError:
        name = next(n for n in ENABLED_VARS if env.get(n, "").strip())
        raise WrapError(f"{name}: invalid boolean '{text}'") from None


def url_var_names(cli: Sequence[str] | None, env: Mapping[str, str]) -> list[str]:
    """The URL variables to pool: --url-vars, else $PGMUX_URLS, else $PGBOUNCER_URLS, else
    DATABASE_URL. Lists are split on blanks and commas; duplicates are dropped."""
    if cli:
        raw = " ".join(cli)
    else:
        raw = _env(env, *URL_LIST_VARS) or " ".join(DEFAULT_URL_VARS)
    names: list[str] = []
    for name in re.split(r"[\s,]+", raw):
        if not name or name in names:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise WrapError(f"'{name}' is not an environment variable name")
        names.append(name)
    if not names:
        raise WrapError("no URL variables named")
    return names


def settings_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """[pgbouncer] key -> text from PGMUX_<NAME> / PGBOUNCER_<NAME> over DEFAULT_SETTINGS, each
    checked like the ini loader checks it. DEFAULT_POOL_SIZE may be `auto` (kept as is: it
    goes onto the database entries as pool_size=auto). Raises WrapError."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out = dict(DEFAULT_SETTINGS)
    for name in SETTING_NAMES:
        pgmux_var, buildpack_var = f"PGMUX_{name}", f"PGBOUNCER_{name}"
        text = _env(env, pgmux_var, buildpack_var)
        if text is None:
            continue
        source = pgmux_var if env.get(pgmux_var, "").strip() else buildpack_var
        key = name.lower()
        if any(ch in text for ch in "\r\n\0"):
            raise WrapError(f"{source}: the value must be one line")
        if key == "default_pool_size" and text.lower() == "auto":
            out[key] = "auto"
            continue
        try:
            convert(fields[key], text)
        except ValueError as exc:
            raise WrapError(f"{source}: {exc}") from None
        out[key] = text
    return out


@dataclass
class PoolerPlan:
    """One pooler to run: the URL variables it serves and how to reach it."""

    names: list[str]
    db: DatabaseConfig
    port: int
    ini: Path
    client_url: str
    proc: subprocess.Popen[bytes] | None = None
    lifeline: socket.socket | None = None
    buffer: bytes = b""
    ready: bool = False
    exit_code: int | None = None

    @property
    def label(self) -> str:
        return ", ".join(self.names)


def plan_poolers(names: Sequence[str], env: Mapping[str, str], settings: Mapping[str, str],
                 config_dir: Path) -> list[PoolerPlan]:
    """One pooler per distinct URL (variables holding the same URL share it), its ini
    written to ``config_dir`` and loaded once to check it. Raises WrapError."""
    plans: dict[str, PoolerPlan] = {}
    ports: set[int] = set()
    for name in names:
        url = env.get(name, "").strip()
        if not url:
            raise WrapError(f"{name} is not set (it should hold a postgres:// URL)")
        if url in plans:
            plans[url].names.append(name)
            continue
        try:
            config = _config_from_url(url)
        except ConfigError as exc:
            raise WrapError(f"{name}: {exc.message}") from None
        db = next(d for n, d in config.databases.items() if n != FALLBACK_DATABASE)
        port = _free_port(ports)
        ini = config_dir / f"{name}.ini"
        text = render_ini(db, config.settings, settings, port, name)
        _write_private(ini, text)
        try:
            load_config(ini)
        except ConfigError as exc:
            raise WrapError(f"{name}: {exc}") from None
        plans[url] = PoolerPlan([name], db, port, ini, pooled_url(url, db, port))
    return list(plans.values())


def _free_port(taken: set[int]) -> int:
    from pgmux.embedded import free_port

    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only: it holds the database password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def pooled_url(url: str, db: DatabaseConfig, port: int) -> str:
    """``url`` pointed at 127.0.0.1:port with the same scheme, user, password and database
    name; parameters about the hop to the server (sslmode, host, ...) are dropped, others
    (application_name, connect_timeout, an ORM's own, ...) kept in order."""
    parts = urlsplit(url)
    auth = ""
    if db.user is not None:
        auth = quote(db.user, safe="")
        if db.password is not None:
            auth += ":" + quote(db.password, safe="")
        auth += "@"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in _SERVER_HOP_PARAMS]
    path = "/" + quote(db.dbname or db.name, safe="")
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", path,
                       urlencode(query, quote_via=quote), ""))


def _conn_value(text: str, what: str) -> str:
    if any(ch in text for ch in "\r\n\0"):
        raise WrapError(f"{what} must not contain a line break")
    return "'" + text.replace("'", "''") + "'"


def _connstr(db: DatabaseConfig, *, dbname: str | None, pool_size_auto: bool,
             name: str) -> str:
    pairs: list[tuple[str, str]] = []
    if db.host:
        pairs.append(("host", db.host))
    pairs.append(("port", str(db.port)))
    if dbname is not None:
        pairs.append(("dbname", dbname))
    for key in ("user", "password", "application_name", "client_encoding", "timezone",
                "datestyle"):
        value = getattr(db, key)
        if value is not None:
            pairs.append((key, value))
    if pool_size_auto:
        pairs.append(("pool_size", "auto"))
    return " ".join(f"{k}={_conn_value(v, f'{name}: the {k}')}" for k, v in pairs)


def _ini_key(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def render_ini(db: DatabaseConfig, url_settings: Settings, settings: Mapping[str, str],
               port: int, name: str) -> str:
    """The pgbouncer.ini for the pooler of one URL: the URL's database under its own name and
    a '*' fallback to the same server, listening on 127.0.0.1:port only (no Unix socket).

    Without an explicit AUTH_TYPE, clients must give the URL's password (scram-sha-256, as the
    buildpack does) when the URL has one, and are trusted when it has none."""
    settings = dict(settings)
    auto = settings.get("default_pool_size") == "auto"
    if auto:
        del settings["default_pool_size"]
    auth_type = settings.pop("auth_type", None)
    if auth_type is None:
        auth_type = "scram-sha-256" if db.password else "trust"
    elif auth_type.strip().lower() not in ("trust", "any") and not db.password:
        raise WrapError(f"{name}: auth_type {auth_type} needs a password in the URL")
    dbname = db.dbname or db.name
    lines = [
        f"; generated by `pgmux wrap` for {name}",
        "[databases]",
        f"{_ini_key(db.name)} = {_connstr(db, dbname=dbname, pool_size_auto=auto, name=name)}",
        f"{_ini_key(FALLBACK_DATABASE)} = "
        f"{_connstr(db, dbname=None, pool_size_auto=auto, name=name)}",
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        f"auth_type = {auth_type}",
    ]
    defaults = Settings()
    for key in _URL_SETTINGS:
        value = getattr(url_settings, key)
        if value != getattr(defaults, key):
            lines.append(f"{key} = {value}")
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


# ---- running: poolers, the command, signals ---------------------------------------------------


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler does nothing: the signal number reaches the main loop through
    the wakeup fd."""


class _SignalPipe:
    """Delivers the forwarded signals (and SIGCHLD) as bytes on a pipe the main loop selects
    on, so a signal is never handled in the middle of other work. Signals this process was
    started ignoring (a background job's SIGINT) stay ignored, and CMD inherits that."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup = -1

    def __enter__(self) -> _SignalPipe:
        self._old_wakeup = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
        for sig in (*FORWARDED_SIGNALS, signal.SIGCHLD):
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            self._old_handlers[sig] = old
            signal.signal(sig, _ignore_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self.r)
        os.close(self.w)

    def received(self) -> list[int]:
        data = b""
        while True:
            try:
                chunk = os.read(self.r, 512)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [n for n in data if n in self._old_handlers]


def _terminal_sent_it_too() -> bool:
    """True when this process group is the foreground group of the controlling terminal: then
    a keyboard signal (Ctrl-C) has reached CMD directly, and forwarding it would double it."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    """Starts the poolers, runs CMD, forwards signals and stops the poolers again."""

    def __init__(self, poolers: list[PoolerPlan], command: list[str], env: dict[str, str], *,
                 quiet: bool = False, verbose: int = 0) -> None:
        self.poolers = poolers
        self.command = command
        self.env = env
        self.quiet = quiet
        self.verbose = verbose

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"pgmux wrap: {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        with _SignalPipe() as signals:
            try:
                aborted = self._start_poolers(signals)
                if aborted is not None:
                    return aborted
                return self._run_command(signals)
            finally:
                self._stop_poolers()

    def _spawn(self, plan: PoolerPlan) -> None:
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "pgmux.cli.wrap", str(plan.ini),
               "--lifeline-fd", str(theirs.fileno())]
        if self.quiet:
            cmd.append("-q")
        cmd += ["-v"] * self.verbose
        try:
            # NOTE: a session of its own, so a terminal's Ctrl-C or hangup reaches CMD only;
            # the pooler stays up until CMD is done. Its stdout goes to stderr: it logs there.
            plan.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=2,
                                         pass_fds=(theirs.fileno(),), start_new_session=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        plan.lifeline = ours

    def _read_lifeline(self, plan: PoolerPlan) -> bool:
        """Read what the pooler sent; False on EOF (the pooler is gone)."""
        assert plan.lifeline is not None
        try:
            data = plan.lifeline.recv(256)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        plan.buffer += data
        if b"\n" in plan.buffer:
            plan.ready = True
        return True

    def _reap(self, plan: PoolerPlan) -> int:
        assert plan.proc is not None
        try:
            code = plan.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            plan.proc.kill()
            code = plan.proc.wait()
        plan.exit_code = code
        return code

    def _start_poolers(self, signals: _SignalPipe) -> int | None:
        """Start every pooler and wait until each listens. None when all do; else the exit
        code for wrap (the failure or the stop signal has been reported)."""
        for plan in self.poolers:
            try:
                self._spawn(plan)
            except OSError as exc:
                print(f"pgmux wrap: cannot start the pooler for {plan.label}: {exc}",
                      file=sys.stderr)
                return EXIT_FAILED
        waiting = {p.lifeline.fileno(): p for p in self.poolers if p.lifeline is not None}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                labels = "; ".join(p.label for p in waiting.values())
                print(f"pgmux wrap: the pooler for {labels} did not start listening within "
                      f"{START_TIMEOUT:g} s", file=sys.stderr)
                return EXIT_FAILED
            readable, _, _ = select.select([signals.r, *waiting], [], [], remaining)
            for sig in signals.received():
                if sig in STOP_SIGNALS:
                    self.say(f"{signal.Signals(sig).name} before the command started; stopping")
                    return 128 + sig
            for fd in readable:
                starting = waiting.get(fd)
                if starting is None:
                    continue
                if not self._read_lifeline(starting):
                    code = self._reap(starting)
                    print(f"pgmux wrap: the pooler for {starting.label} failed to start (exit "
                          f"code {_exit_code(code)}); not running the command",
                          file=sys.stderr)
                    return EXIT_FAILED
                if starting.ready:
                    del waiting[fd]
        for plan in self.poolers:
            assert plan.proc is not None
            shown = re.sub(r":[^:@/]*@", "@", plan.client_url, count=1)
            self.say(f"{plan.label} -> {shown} (pooler pid {plan.proc.pid})")
        return None

    def _run_command(self, signals: _SignalPipe) -> int:
        try:
            cmd = subprocess.Popen(self.command, env=self.env)
        except FileNotFoundError:
            print(f"pgmux wrap: command not found: {self.command[0]}", file=sys.stderr)
            return EXIT_NOT_FOUND
        except OSError as exc:
            print(f"pgmux wrap: cannot run {self.command[0]}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_CANNOT_EXECUTE
        alive = {p.lifeline.fileno(): p for p in self.poolers if p.lifeline is not None}
        pooler_died = False
        while True:
            returncode = cmd.poll()
            if returncode is not None:
                break
            # NOTE: SIGCHLD wakes this select when CMD exits (the wakeup fd gets a byte even
            # if it arrives between poll() and select()).
            readable, _, _ = select.select([signals.r, *alive], [], [])
            for sig in signals.received():
                if sig == signal.SIGCHLD:
                    continue
                if sig in KEYBOARD_SIGNALS and _terminal_sent_it_too():
                    continue
                with contextlib.suppress(ProcessLookupError):
                    cmd.send_signal(sig)
            for fd in readable:
                gone = alive.get(fd)
                if gone is None or self._read_lifeline(gone):
                    continue
                del alive[fd]
                code = self._reap(gone)
                print(f"pgmux wrap: the pooler for {gone.label} exited (exit code "
                      f"{_exit_code(code)}); stopping the command", file=sys.stderr)
                pooler_died = True
                with contextlib.suppress(ProcessLookupError):
                    cmd.send_signal(signal.SIGTERM)
        code = _exit_code(returncode)
        if pooler_died and code == 0:
            code = EXIT_FAILED
        return code

    def _stop_poolers(self) -> None:
        """SIGINT (safe shutdown) to every pooler listening, SIGTERM to one still starting
        (nothing to drain yet); SIGKILL after STOP_TIMEOUT."""
        running = [p for p in self.poolers if p.proc is not None and p.exit_code is None]
        for plan in running:
            assert plan.proc is not None
            if plan.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    plan.proc.send_signal(signal.SIGINT if plan.ready else signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for plan in running:
            assert plan.proc is not None
            try:
                plan.exit_code = plan.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"pgmux wrap: the pooler for {plan.label} did not stop within "
                      f"{STOP_TIMEOUT:g} s; killing it", file=sys.stderr)
                plan.proc.kill()
                plan.exit_code = plan.proc.wait()
        for plan in self.poolers:
            if plan.lifeline is not None:
                plan.lifeline.close()
                plan.lifeline = None


def _exec(command: list[str]) -> int:
    """Replace this process with CMD (wrap disabled); returns only when that fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"pgmux wrap: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as exc:
        print(f"pgmux wrap: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE


# ---- the pooler child: `python -m pgmux.cli.wrap INI --lifeline-fd N` ------------------------


def pooler_main(argv: Sequence[str] | None = None) -> int:
    """Run one pooler for `pgmux wrap`: serve INI, report readiness on the lifeline socket,
    ignore SIGTERM once listening, and stop on SIGINT or when the lifeline closes."""
    from pgmux import runtime
    from pgmux.app import serve
    from pgmux.log import setup_logging

    parser = argparse.ArgumentParser(prog="pgmux wrap pooler")
    parser.add_argument("config")
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    lifeline = socket.socket(fileno=args.lifeline_fd)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pgmux wrap: {exc}", file=sys.stderr)
        return EXIT_FAILED
    setup_logging(config.settings.logfile or None, verbose=args.verbose, quiet=args.quiet)
    for warning in config.warnings:
        log.warning("%s", warning)

    def ready(_pooler: Any) -> None:
        loop = asyncio.get_running_loop()
        # NOTE: see the module docstring: SIGTERM is for the app; wrap stops us with SIGINT.
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lifeline.setblocking(False)
        lifeline.send(b"ready\n")

        def on_lifeline() -> None:
            try:
                data = lifeline.recv(256)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                return
            loop.remove_reader(lifeline.fileno())
            log.info("pgmux wrap is gone; shutting down")
            # NOTE: the safe shutdown wrap would have asked for, by the pooler's own handler.
            os.kill(os.getpid(), signal.SIGINT)

        loop.add_reader(lifeline.fileno(), on_lifeline)

    try:
        return runtime.run(serve(config, ready=ready))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    finally:
        lifeline.close()


if __name__ == "__main__":
    try:
        sys.exit(pooler_main())
    except KeyboardInterrupt:  # NOTE: SIGINT before the pooler installed its handlers
        sys.exit(128 + signal.SIGINT)
