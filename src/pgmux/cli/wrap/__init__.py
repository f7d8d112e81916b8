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

The children run `python -m pgmux.cli.wrap.pooler INI --lifeline-fd N` instead of
`pgmux serve INI` for two things serve does not do. Once listening, a pooler ignores SIGTERM
(the buildpack patches PgBouncer the same way): platforms send SIGTERM to every process, and the
app must still reach its database while it finishes its work; wrap stops the poolers with SIGINT
(PgBouncer's safe shutdown) after CMD has exited. And each pooler shares a socketpair with
wrap: the pooler reports "ready" on it, wrap sees EOF when a pooler dies, and a pooler shuts
down when it sees EOF because wrap is gone (even after `kill -9`), so no pooler outlives it.

Modules: environment (what the environment asks for), plan (one pooler per URL: port, ini,
local URL), supervisor (run time: poolers, CMD, exit code), signals (what reaches CMD and how),
pooler (the child).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pgmux.cli.wrap.environment import WrapError, settings_from_env, url_var_names, wrap_enabled
from pgmux.cli.wrap.plan import plan_poolers
from pgmux.cli.wrap.supervisor import EXIT_FAILED, EXIT_USAGE, Supervisor, exec_command

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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
            return exec_command(command)
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
