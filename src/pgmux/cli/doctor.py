"""The connection doctor's commands: `info`, `ps`, `kill`, `killall`, `doctor` and `plan`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

import psycopg

from pgmux.doctor import facts as facts_mod
from pgmux.doctor.console import collect_console, console_target
from pgmux.doctor.findings import Thresholds
from pgmux.doctor.plan import Deployment, plan
from pgmux.doctor.poolers import detect_pooler
from pgmux.doctor.report import (
    Output,
    info_json,
    render_diagnosis,
    render_info,
    render_plan,
    render_ps,
    render_terminations,
    terminations_json,
)
from pgmux.doctor.rules import diagnose
from pgmux.doctor.select import SessionFilter, ps_row, ps_rows, select_sessions
from pgmux.doctor.units import parse_duration

# NOTE: `doctor` uses 0/1/2 for ok/warning/critical, so "could not even ask" needs its own code.
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 2

Handler = Callable[[argparse.Namespace], int]

_URL_HELP = "PostgreSQL URL or conninfo, e.g. postgresql://user@host:5432/db"

_INFO_EPILOG = """\
usable = max_connections - superuser_reserved_connections (- reserved_connections on 16+);
available = usable - used; used counts every client backend, this one included.

Pooler detection is a heuristic (a normal connection cannot ask a pooler who it is):
pg_backend_pid() changing between transactions means a transaction-mode pooler; the server
seeing a Unix-socket client while we dialled TCP means a local relay; otherwise two of
(the server sees another client address:port than our socket's, the URL port differs from
inet_server_port(), application_name arrived changed) make a relay (pooler, proxy or NAT) likely.
"""

_KILL_EPILOG = """\
Exit status: 0 all terminated, 1 some could not be, 2 refused (nothing done),
3 server unreachable. JSON: {"terminated": [pids], "failed": [{"pid", "reason"}], ...}.
"""

_KILLALL_EPILOG = """\
Filters combine with AND; --idle and --idle-in-transaction together mean either state.
--idle-for alone means any idle state (with or without an open transaction).
A pooler's own server connections (pgmux, PgBouncer, ...: see `doctor`) are skipped
unless --include-pooled is given.
A session is terminated only if it is still in the state it was listed in.
Without --yes the matches are listed and you are asked on the terminal; with stdin not a
terminal the command refuses (exit 2). Exit status as for `kill`.
"""

_DOCTOR_EPILOG = """\
Exit status: 0 healthy, 1 warnings, 2 critical, 3 server unreachable.
Rules: connection usage (warning >= 80%, critical >= 95% of usable), idle connections per
application/user/client (a likely leak past --idle-threshold; big groups are listed with
their age before that), sessions idle in transaction (listed from 1s on; warning past
--idle-in-transaction-threshold, critical past 5m), long-running queries, role and database
CONNECTION LIMITs that bite before the server's, many connections from one client address,
a pooler's own server connections, a pooler in front; with a pooler's console (below):
what it showed (pooler-console) and pools whose servers are mostly pinned (pinned-servers:
more than half of the pool's servers, at least one, kept by clients' session state such as
advisory locks, LISTEN, temp tables or WITH HOLD cursors; the pool's servers are its
pool_size from SHOW DATABASES, or the servers open when more).
The pooler's console (SHOW POOLS, SERVERS, CLIENTS, DATABASES) is read from --pooler
ADMIN_URL, or, when URL seems to go through a pooler, from URL with dbname=pgbouncer and the
same credentials (the user must be in admin_users or stats_users). A console that cannot be
read is reported (a warning for --pooler, info otherwise); it never stops the diagnosis.
A pooler's server connections are recognised by application_name (pgmux, pgbouncer, ...:
set application_name=pgmux on the pooler's database entry), by application_name_add_host's
" - ADDRESS:PORT" suffix, or by an idle session whose last query was DISCARD ALL (a pool's
reset); they are never counted as a leak.
"""

_PLAN_EPILOG = """\
needed = dynos x processes x pool-size (x 2 with --preboot) + one-off + other.
--one-off K counts K connections (one per console, migration or cron run); one-off and
--other connections go straight to PostgreSQL even with pgmux in front.
With pgmux: its server side takes 75% of the limit (as hosted poolers do) and the other 25%
stays for direct connections; the app's connections become pgmux client connections.
Exit status: 0 fits directly, 1 does not fit.
"""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Handler,
    epilog: str | None = None,
    url: bool = True,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if url:
        parser.add_argument("url", metavar="URL", help=_URL_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(func=_pipe_safe(func))
    return parser


def _pipe_safe(func: Handler) -> Handler:
    """Let `pgmux ps URL | head` end quietly when the reader goes away."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BrokenPipeError:
            # NOTE: point stdout at /dev/null so that the interpreter's final flush cannot
            # raise again on the way out.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the doctor's commands to the `pgmux` parser."""
    _add(
        sub,
        "info",
        "server version, data size, tables, connections used / usable, limits, pooler in front",
        cmd_info,
        _INFO_EPILOG,
    )
    _add(sub, "ps", "one row per session (this command's own excluded)", cmd_ps)
    kill = _add(sub, "kill", "terminate backends by pid", cmd_kill, _KILL_EPILOG)
    kill.add_argument("pids", metavar="PID", type=_positive, nargs="+", help="backend pid")
    _add_killall(sub)
    _add_doctor(sub)
    _add_plan(sub)


def _add_killall(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    killall = _add(
        sub, "killall", "terminate the backends matching filters", cmd_killall, _KILLALL_EPILOG
    )
    killall.add_argument("--idle", action="store_true", help="state 'idle' (not in transaction)")
    killall.add_argument(
        "--idle-in-transaction", action="store_true", help="state 'idle in transaction'"
    )
    killall.add_argument(
        "--idle-for",
        type=_duration,
        metavar="DURATION",
        help="idle at least this long (30s, 30m or 30min, 2h, 1d)",
    )
    killall.add_argument("--application", metavar="NAME", help="application_name equals NAME")
    killall.add_argument("--user", metavar="NAME", help="user (role) equals NAME")
    killall.add_argument("--all", action="store_true", help="match every session (no filter)")
    killall.add_argument(
        "--include-pooled", action="store_true", help="also a pooler's own server connections"
    )
    killall.add_argument("--dry-run", action="store_true", help="list the matches only")
    killall.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _add_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = _add(
        sub, "doctor", "diagnose connection use and advise on pooling", cmd_doctor, _DOCTOR_EPILOG
    )
    defaults = Thresholds()
    doctor.add_argument(
        "--idle-threshold",
        type=_duration,
        default=defaults.idle,
        metavar="DURATION",
        help="idle longer than this is a likely leak (default 5m)",
    )
    doctor.add_argument(
        "--idle-in-transaction-threshold",
        type=_duration,
        default=defaults.idle_in_transaction,
        metavar="DURATION",
        help="warn about sessions idle in transaction this long (default 30s)",
    )
    doctor.add_argument(
        "--long-query",
        type=_duration,
        default=defaults.long_query,
        metavar="DURATION",
        help="report queries running longer than this (default 1m)",
    )
    doctor.add_argument(
        "--many-per-client",
        type=_positive,
        default=defaults.many_per_client,
        metavar="N",
        help="this many connections from one client address suggest no pool (default 10)",
    )
    doctor.add_argument(
        "--pooler",
        metavar="ADMIN_URL",
        help="read this pgmux (or PgBouncer) console too, e.g. "
        "postgresql://admin@host:6432/pgbouncer (default: URL's pooler, when one is in front)",
    )


def _add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    planner = _add(
        sub,
        "plan",
        "connections a deployment needs against a limit, directly and with pgmux",
        cmd_plan,
        _PLAN_EPILOG,
        url=False,
    )
    planner.add_argument(
        "--limit", type=_positive, required=True, metavar="N", help="connection limit"
    )
    planner.add_argument("--dynos", type=_non_negative, default=1, metavar="D", help="default 1")
    planner.add_argument(
        "--processes", type=_non_negative, default=1, metavar="P", help="per dyno, default 1"
    )
    planner.add_argument(
        "--threads", type=_non_negative, default=1, metavar="T", help="per process, default 1"
    )
    planner.add_argument(
        "--pool-size",
        type=_non_negative,
        metavar="S",
        help="connections per process (default: one per thread)",
    )
    planner.add_argument(
        "--preboot", action="store_true", help="old and new release overlap: app part doubles"
    )
    planner.add_argument(
        "--one-off", type=_non_negative, default=0, metavar="K", help="one-off connections"
    )
    planner.add_argument(
        "--other", type=_non_negative, default=0, metavar="M", help="monitoring and others"
    )


# --- handlers ------------------------------------------------------------------------------


def _unreachable(out: Output, exc: psycopg.Error) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    out.error(f"pgmux: cannot reach PostgreSQL: {message}")
    return EXIT_UNREACHABLE


def _where(facts: facts_mod.ServerFacts) -> str:
    e = facts.endpoints
    if e is None or e.dialled_host is None:
        return "?"
    return e.dialled_host if e.dialled_port is None else f"{e.dialled_host}:{e.dialled_port}"


def cmd_info(args: argparse.Namespace) -> int:
    out = Output()
    try:
        with out.status("collecting server facts…"):
            facts = facts_mod.collect_facts(args.url)
    except psycopg.Error as exc:
        return _unreachable(out, exc)
    if args.json:
        out.json(info_json(facts))
    else:
        render_info(out, facts, _where(facts))
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    out = Output()
    try:
        with out.status("reading pg_stat_activity…"), facts_mod.connect(args.url) as conn:
            activity = facts_mod.fetch_sessions(conn)
    except psycopg.Error as exc:
        return _unreachable(out, exc)
    rows = ps_rows(activity.sessions, activity.own_pid, activity.at)
    if args.json:
        out.json(rows)
    else:
        render_ps(out, rows)
    return 0


def _finish_kill(
    out: Output, args: argparse.Namespace, results: list[Any], extra: Any, skipped: int | None
) -> int:
    if args.json:
        out.json(terminations_json(results, extra, skipped_pooled=skipped))
    else:
        render_terminations(out, results)
    return 0 if all(r.terminated for r in results) else 1


def cmd_kill(args: argparse.Namespace) -> int:
    out = Output()
    try:
        with out.status("terminating…"), facts_mod.connect(args.url) as conn:
            results = facts_mod.terminate(conn, list(dict.fromkeys(args.pids)))
    except psycopg.Error as exc:
        return _unreachable(out, exc)
    return _finish_kill(out, args, results, None, None)


def _confirm(out: Output, count: int, to_stderr: bool) -> bool:
    prompt = f"Terminate {count} backend(s)? [y/N] "
    stream = out.stderr if to_stderr else out.stdout
    print(prompt, end="", file=stream, flush=True)
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_killall(args: argparse.Namespace) -> int:
    out = Output()
    flt = SessionFilter(
        idle=args.idle,
        idle_in_transaction=args.idle_in_transaction,
        idle_for=args.idle_for,
        application=args.application,
        user=args.user,
        include_pooled=args.include_pooled,
    )
    if flt.empty and not args.all:
        out.error(
            "pgmux killall: give at least one filter (--idle, --idle-in-transaction, "
            "--idle-for, --application, --user) or --all"
        )
        return EXIT_REFUSED
    try:
        with facts_mod.connect(args.url) as conn:
            with out.status("reading pg_stat_activity…"):
                activity = facts_mod.fetch_sessions(conn)
            at = activity.at
            matched = select_sessions(activity.sessions, activity.own_pid, at, flt)
            pids = [s.pid for s in matched]
            everything = dataclasses.replace(flt, include_pooled=True)
            skipped = len(select_sessions(activity.sessions, activity.own_pid, at, everything))
            skipped -= len(matched)
            if skipped and not args.json:
                out.error(
                    f"skipping {skipped} server connection(s) of a pooler (its pool, not a "
                    "leak); --include-pooled to include them"
                )
            if not matched:
                if args.json:
                    out.json(terminations_json([], pids, args.dry_run, skipped))
                else:
                    out.write("no matching sessions")
                return 0
            if not args.json:
                render_ps(out, [ps_row(s, at) for s in matched])
            if args.dry_run:
                if args.json:
                    out.json(terminations_json([], pids, True, skipped))
                else:
                    out.write(f"dry run: {len(matched)} backend(s) would be terminated")
                return 0
            if not args.yes:
                if not _isatty(sys.stdin):
                    out.error(
                        f"pgmux killall: refusing to terminate {len(matched)} backend(s) "
                        "without confirmation: stdin is not a terminal; pass --yes"
                    )
                    return EXIT_REFUSED
                if not _confirm(out, len(matched), to_stderr=args.json):
                    out.error("nothing terminated")
                    return EXIT_REFUSED
            with out.status(f"terminating {len(matched)} backend(s)…"):
                results = facts_mod.terminate(conn, matched)
    except psycopg.Error as exc:
        return _unreachable(out, exc)
    return _finish_kill(out, args, results, pids, skipped)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def cmd_doctor(args: argparse.Namespace) -> int:
    out = Output()
    thresholds = Thresholds(
        idle=args.idle_threshold,
        idle_in_transaction=args.idle_in_transaction_threshold,
        long_query=args.long_query,
        many_per_client=args.many_per_client,
    )
    try:
        with out.status("collecting server facts…"):
            facts = facts_mod.collect_facts(args.url)
    except psycopg.Error as exc:
        return _unreachable(out, exc)
    through = facts.endpoints is not None and detect_pooler(facts.endpoints).detected
    target = console_target(args.url, args.pooler, through)
    if target is not None:
        with out.status("reading the pooler's console…"):
            console = collect_console(*target, application_name=facts_mod.APPLICATION_NAME)
        facts = dataclasses.replace(facts, console=console)
    diagnosis = diagnose(facts, thresholds)
    if args.json:
        out.json(diagnosis.to_json())
    else:
        render_diagnosis(out, diagnosis)
    return diagnosis.exit_code


def cmd_plan(args: argparse.Namespace) -> int:
    out = Output()
    deployment = Deployment(
        limit=args.limit,
        dynos=args.dynos,
        processes=args.processes,
        threads=args.threads,
        pool_size=args.pool_size,
        preboot=args.preboot,
        one_off=args.one_off,
        other=args.other,
    )
    result = plan(deployment)
    if args.json:
        out.json(result.to_json())
    else:
        render_plan(out, result)
    return 0 if result.fits else 1
