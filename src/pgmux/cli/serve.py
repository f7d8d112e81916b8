"""`pgmux serve`: run the pooler from a pgbouncer.ini, a DATABASE_URL, or an embedded
throwaway PostgreSQL when given neither."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from typing import Any

from pgmux.config import Config, ConfigError, config_from_url, load_config
from pgmux.embedded.install import EmbeddedPostgresError
from pgmux.log import setup_logging

log = logging.getLogger("pgmux")


def register(sub: Any) -> None:
    from pgmux.cli.main import version_line

    p = sub.add_parser(
        "serve",
        help="run the pooler (PgBouncer-compatible)",
        description=(
            "Run the pooler. With CONFIG, read PgBouncer's pgbouncer.ini format. Without it, "
            "pool DATABASE_URL (or --url). With neither, start a throwaway embedded "
            "PostgreSQL (max_connections=20) and serve it on 127.0.0.1:6432 in transaction "
            "mode, with a pool of 75% of its usable connections."),
        epilog=(
            "As root, the embedded PostgreSQL (which refuses to run as root) runs as the "
            "system user 'pgmux', created on first use (useradd --system), from a copy of its "
            "binaries in /var/cache/pgmux; set PGMUX_EMBEDDED_CACHE=DIR to copy them "
            "elsewhere."),
    )
    p.add_argument("config", nargs="?", help="pgbouncer.ini-style config file")
    p.add_argument("--url", help="PostgreSQL URL to pool (default: $DATABASE_URL)")
    p.add_argument("--listen-addr", default="127.0.0.1", help="URL/embedded mode: address")
    p.add_argument("--port", type=int, default=6432, help="URL/embedded mode: port (6432)")
    p.add_argument("--pool-mode", default="transaction",
                   choices=("session", "transaction", "statement"),
                   help="URL/embedded mode: pool mode (transaction)")
    p.add_argument("--pool-size", type=int, default=None,
                   help="URL/embedded mode: pool size (URL: 20; embedded: 75%% of the "
                        "server's usable connections)")
    p.add_argument("-d", "--daemon", action="store_true",
                   help="run in the background (needs pidfile, and logfile or syslog)")
    p.add_argument("-R", "--reboot", action="store_true",
                   help="PgBouncer's online restart: not supported (deprecated in PgBouncer "
                        "1.25 too); boots normally when nothing runs, else refuses and names "
                        "the rolling restart that replaces it")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no logging to stderr (the logfile is still written)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging; may be repeated")
    p.add_argument("-u", "--user", metavar="USERNAME",
                   help="switch to this user at start (when root)")
    p.add_argument("-V", "--version", action="version", version=version_line())
    p.set_defaults(func=run_serve)


DEFAULT_POOL_SIZE = 20  # PgBouncer's default_pool_size


def build_config(args: argparse.Namespace, url: str | None) -> Config:
    if args.config:
        config = load_config(args.config)
        if not args.user and config.settings.user:
            # NOTE: the file's `user` setting acts as -u (which wins when both are given).
            problem = setting_user_problem(config.settings.user)
            if problem:
                raise ConfigError(problem)
            args.user = config.settings.user
        return config
    assert url is not None
    return config_from_url(url, listen_addr=args.listen_addr, listen_port=args.port,
                           pool_mode=args.pool_mode,
                           default_pool_size=args.pool_size or DEFAULT_POOL_SIZE)


def listen_problem(addresses: str, port: int, hint: str = "") -> str | None:
    """Why the pooler could not listen on `addresses` (listen_addr's list) and `port`, found
    before anything is started; None when nothing stands in the way we can see."""
    for item in addresses.split(","):
        host = item.strip()
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(None if host == "*" else host, port,
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror}"
        for family, kind, proto, _name, address in infos:
            with socket.socket(family, kind, proto) as sock:
                # NOTE: as the listener will be: reusing a port in TIME_WAIT is fine.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        return (f"cannot listen on {host}:{port}: the port is in use (another "
                                f"pgmux or PgBouncer?){hint}")
                    if exc.errno == errno.EACCES:
                        return f"cannot listen on {host}:{port}: permission denied"
    return None


def embedded_pool_size(url: str) -> tuple[int, int]:
    """The embedded server's pool: 75% of what it leaves ordinary roles (pgmux's own advice,
    doctor.plan.auto_pool_size), so that `pgmux info` and a console still get in when every
    pooled connection is busy. Returns (pool size, usable connections)."""
    import psycopg

    from pgmux.doctor.facts import fetch_limits
    from pgmux.doctor.plan import auto_pool_size

    with psycopg.connect(url, connect_timeout=10) as conn:
        limits = fetch_limits(conn)
    size = auto_pool_size(limits.max_connections, limits.reserved_total, limits.role_limit,
                          limits.db_limit)
    return size, limits.usable


def _start_embedded(args: argparse.Namespace) -> Any:
    """The embedded PostgreSQL, started; sets args.pool_size when it was not given."""
    from pgmux.embedded import EmbeddedPostgres
    from pgmux.embedded.install import RunAs, describe_setup, is_root

    print("pgmux: starting an embedded PostgreSQL (max_connections=20) ...", file=sys.stderr)
    owner = None
    if args.user and is_root():
        import pwd

        # NOTE: with -u the server belongs to that user, who must stop and remove it at exit.
        pw = pwd.getpwnam(args.user)
        if pw.pw_uid != 0:
            owner = RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)
    embedded = EmbeddedPostgres(max_connections=20, user=owner)
    # NOTE: said before it happens: as root this creates a system user and copies binaries.
    for line in describe_setup(owner):
        print(f"pgmux: {line}", file=sys.stderr)
    embedded.start()
    if args.pool_size is None:
        args.pool_size, usable = embedded_pool_size(embedded.url)
        print(f"pgmux: pool size {args.pool_size} (75% of the {usable} connections the "
              "embedded server leaves ordinary roles; --pool-size to change)", file=sys.stderr)
    return embedded


# What -R answers when a pooler is running: PgBouncer 1.25 itself deprecates -R in favour of
# this procedure (docs/operations.md).
REBOOT_ALTERNATIVE = (
    "for a restart that loses no client, start the new pgmux beside it with so_reuseport = 1 "
    "and send SIGTERM to the old one (docs/operations.md, \"Upgrades and restarts\"), or use "
    "RESTART on the console with [pgmux] workers > 1")


def socket_answers(path: str) -> bool:
    """True when something accepts connections on the Unix socket at path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def reboot_refusal(config: Config) -> str | None:
    """-R: PgBouncer takes the sockets over from the process found on the Unix socket; pgmux
    cannot, so it refuses when one is there and boots normally otherwise (as PgBouncer does
    when no process is running)."""
    s = config.settings
    if not s.unix_socket_dir:
        return ("-R needs unix_socket_dir (PgBouncer's online restart goes through the Unix "
                "socket); " + REBOOT_ALTERNATIVE)
    path = os.path.join(s.unix_socket_dir, f".s.PGSQL.{s.listen_port}")
    if socket_answers(path):
        return (f"-R (online restart, taking over the sockets of the process on {path}) is "
                f"not supported; {REBOOT_ALTERNATIVE}")
    return None


def _refusal(args: argparse.Namespace) -> str | None:
    """What makes the command impossible, found before anything is started."""
    if args.reboot and not args.config:
        return "-R needs a config file (pgmux serve -R pgbouncer.ini)"
    if args.user:
        import pwd

        try:
            pwd.getpwnam(args.user)
        except KeyError:
            return f"-u: no such user: {args.user}"
    if not args.config:
        return listen_problem(args.listen_addr, args.port, "; choose another with --port")
    return None


def _config_refusal(args: argparse.Namespace, config: Config) -> str | None:
    """What the loaded configuration makes impossible: -R beside a running pooler, a port in
    use."""
    if args.reboot:
        refusal = reboot_refusal(config)
        if refusal:
            return refusal
    if args.config and not config.settings.so_reuseport:
        # NOTE: with so_reuseport several processes may share the port on purpose.
        s = config.settings
        return listen_problem(s.listen_addr, s.listen_port,
                              "; change listen_port or stop the other process")
    return None


def _on_ready(args: argparse.Namespace, config: Config, embedded: Any) -> Any:
    """What runs once the pooler listens: tell systemd, and in URL or embedded mode print
    where to connect."""
    from pgmux import sdnotify

    def ready(_pooler: Any) -> None:
        sdnotify.ready("accepting connections")
        s = config.settings
        if embedded is not None or not args.config:
            host = s.listen_addr.split(",")[0].strip() or "127.0.0.1"
            host = "127.0.0.1" if host == "*" else host
            db = next((n for n in config.databases if n != "*"), "postgres")
            print(f"pgmux: pooling {'embedded PostgreSQL ' if embedded else ''}"
                  f"in {s.pool_mode} mode; connect to postgresql://postgres@{host}:"
                  f"{s.listen_port}/{db}", file=sys.stderr, flush=True)
            print(f"postgresql://postgres@{host}:{s.listen_port}/{db}", flush=True)

    return ready


def _become_service(args: argparse.Namespace, config: Config) -> str | None:
    """Logging, -u and -d, in PgBouncer's order; an error text when one is impossible."""
    setup_logging(config.settings.logfile or None,
                  verbose=max(args.verbose, config.settings.verbose), quiet=args.quiet)
    for warning in config.warnings:
        log.warning("%s", warning)
    if args.reboot:
        log.warning("-R: no running process found on the Unix socket, booting normally")
    if args.user:
        error = drop_privileges(args.user)
        if error:
            return error
    if args.daemon:
        # NOTE: as PgBouncer: a daemon needs somewhere to log and a pidfile to be found by.
        s = config.settings
        if not s.pidfile or not (s.logfile or s.syslog):
            return "in daemon mode, pidfile and logfile (or syslog) must be set"
        _daemonize()
    return None


def run_serve(args: argparse.Namespace) -> int:
    url = args.url or (None if args.config else os.environ.get("DATABASE_URL"))
    embedded: Any = None
    refusal = _refusal(args)
    if refusal:
        print(f"pgmux: {refusal}", file=sys.stderr)
        return 1
    try:
        if not args.config and not url:
            embedded = _start_embedded(args)
            url = embedded.url
        config = build_config(args, url)
        refusal = _config_refusal(args, config)
        if refusal:
            raise ConfigError(refusal)
    except (ConfigError, EmbeddedPostgresError) as exc:
        print(f"pgmux: {exc}", file=sys.stderr)
        if embedded is not None:
            embedded.cleanup()
        return 1
    # NOTE: the pooler itself (and psycopg, uvloop, ssl) is imported only now: a bad file is
    # refused before paying for it.
    from pgmux import runtime
    from pgmux.app import serve

    error = _become_service(args, config)
    if error:
        print(f"pgmux: {error}", file=sys.stderr)
        if embedded is not None:
            embedded.cleanup()
        return 1
    from pgmux import sdnotify

    sdnotify.take()  # NOTE: after -d: only the process that serves speaks to systemd
    ready = _on_ready(args, config, embedded)

    def reload() -> Config:
        return build_config(args, url)

    try:
        from pgmux.workers import worker_count

        workers = worker_count(config)
        if workers > 1:
            from pgmux.workers.supervisor import supervise

            return supervise(config, workers, reload)  # NOTE: forks the poolers
        return runtime.run(serve(config, ready=ready, reload=reload))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if embedded is not None:
            embedded.cleanup()


# Modules the running pooler imports lazily (the console, metrics, auth_query, pool_size=auto,
# TLS, host names): imported before -u switches users, because the interpreter's own files may
# be out of the new user's reach (a Python installed under /root).
PRELOAD = ("pgmux.app", "pgmux.admin", "pgmux.stats.prometheus", "pgmux.stats.period",
           "pgmux.workers", "pgmux.workers.process", "pgmux.workers.supervisor",
           "pgmux.workers.console",
           "pgmux.proxy.pooler", "psycopg", "psycopg.rows", "ssl", "encodings.idna",
           "encodings.utf_8", "encodings.latin_1", "logging.handlers", "pgmux.runtime",
           "pgmux.sdnotify")


def setting_user_problem(user: str) -> str | None:
    """Why the `user` setting cannot be honoured, in its own name (-u's checks say "-u")."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"user: no such user: {user}"
    if os.geteuid() != 0 and pw.pw_uid != os.geteuid():
        return f"user {user}: only root can switch users"
    return None


def drop_privileges(user: str) -> str | None:
    """`-u USER`: become USER (its uid, gid and supplementary groups), as PgBouncer does; an
    error text when that is impossible. Without root, only our own user is accepted."""
    import importlib
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"-u: no such user: {user}"
    if os.geteuid() != 0:
        if pw.pw_uid == os.geteuid():
            return None
        return f"-u {user}: only root can switch users"
    for name in PRELOAD:
        importlib.import_module(name)
    from pgmux import runtime

    runtime.loop_name()  # NOTE: imports uvloop when installed
    try:
        os.initgroups(pw.pw_name, pw.pw_gid)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as exc:
        return f"-u {user}: cannot switch user: {exc}"
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = pw.pw_name
    return None


def _daemonize() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
