"""The console's commands as a table: name -> handler, who may run it, what it answers;
handlers call the pooler's control verbs and return rows, a tag, or a deferred answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgmux.admin import show
from pgmux.admin.outcome import AdminError, Deferred, Outcome, Reply, Result
from pgmux.admin.parse import BadArguments, Statement, parse
from pgmux.admin.show import Column
from pgmux.proxy.control import IMMEDIATE, WAIT_FOR_CLIENTS, WAIT_FOR_SERVERS, ControlError

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler


@dataclass(frozen=True, slots=True)
class Context:
    pooler: Pooler
    is_admin: bool
    local: bool = False  # NOTE: a worker running a sibling's command: this process only


Handler = Callable[[Context, str], Outcome]


@dataclass(frozen=True, slots=True)
class Command:
    run: Handler
    admin_only: bool = True
    everywhere: bool = False  # with workers: applies to every worker (pgmux/workers)


def syntax_error(query: str) -> AdminError:
    return AdminError(f"invalid command '{query}', use SHOW HELP;")


HELP = (
    "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
    "\tSHOW PEERS|PEER_POOLS\n"
    "\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
    "\tSHOW DNS_HOSTS|DNS_ZONES\n"
    "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
    "\tSET key = arg\n"
    "\tRELOAD\n"
    "\tPAUSE [<db>]\n"
    "\tRESUME [<db>]\n"
    "\tDISABLE <db>\n"
    "\tENABLE <db>\n"
    "\tRECONNECT [<db>]\n"
    "\tKILL [<db>]\n"
    "\tKILL_CLIENT <client_id>\n"
    "\tSUSPEND\n"
    "\tSHUTDOWN\n"
    "\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n"
    "\tWAIT_CLOSE [<db>]"
)


# ---- SHOW -------------------------------------------------------------------------------

def show_columns(arg: str) -> tuple[Column, ...] | None:
    """The columns SHOW arg answers with (None: no result set); raises KeyError if unknown."""
    what = arg.lower()
    if what in show.FAKE_PARAMS:
        return (Column(what, "s"),)
    if what == "help":
        return None
    return show.SHOWS[what].columns


def _show(ctx: Context, arg: str) -> Outcome:
    what = arg.lower()
    if what in show.FAKE_PARAMS:
        return Result("SHOW", (Column(what, "s"),), [(show.FAKE_PARAMS[what],)])
    if what == "help":
        return Result("SHOW", notice=("Console usage", HELP))
    if what == "fds" and not ctx.is_admin:
        raise AdminError("admin access needed")  # NOTE: as PgBouncer: cancel keys are in it
    spec = show.SHOWS[what]
    result = Result("SHOW", spec.columns, list(spec.rows(ctx.pooler)))
    if ctx.pooler.worker is not None and not ctx.local:
        from pgmux.workers import console

        return console.show(ctx.pooler, what, result)  # NOTE: every worker's rows
    return result


# ---- process control --------------------------------------------------------------------

def _db(arg: str) -> str | None:
    return arg or None


def _pause(ctx: Context, arg: str) -> Outcome:
    control = ctx.pooler.control
    return Deferred(lambda reply: control.pause(_db(arg), lambda: reply(Result("PAUSE"))))


def _resume(ctx: Context, arg: str) -> Outcome:
    ctx.pooler.control.resume(_db(arg))
    return Result("RESUME")


def _disable(ctx: Context, arg: str) -> Outcome:
    ctx.pooler.control.disable(arg)
    return Result("DISABLE")


def _enable(ctx: Context, arg: str) -> Outcome:
    ctx.pooler.control.enable(arg)
    return Result("ENABLE")


def _reconnect(ctx: Context, arg: str) -> Outcome:
    ctx.pooler.control.reconnect(_db(arg))
    return Result("RECONNECT")


def _kill(ctx: Context, arg: str) -> Outcome:
    ctx.pooler.control.kill(_db(arg))
    return Result("KILL")


def _kill_client(ctx: Context, arg: str) -> Outcome:
    if ctx.pooler.worker is not None and not ctx.local:
        from pgmux.workers import console

        return console.kill_client(ctx.pooler, arg)  # NOTE: whichever worker has it
    ctx.pooler.control.kill_client(arg)
    return Result("KILL_CLIENT")


def _reload(ctx: Context, arg: str) -> Outcome:
    if not ctx.pooler.control.reload():
        raise AdminError("RELOAD failed, see logs for additional details", "F0000")
    return Result("RELOAD")


def _wait_close(ctx: Context, arg: str) -> Outcome:
    control = ctx.pooler.control
    return Deferred(
        lambda reply: control.wait_close(_db(arg), lambda: reply(Result("WAIT_CLOSE"))))


def _shutdown(ctx: Context, arg: str) -> Outcome:
    control = ctx.pooler.control
    mode = arg.upper() if arg else IMMEDIATE
    if ctx.pooler.worker is not None and not ctx.local:
        from pgmux.workers import console

        return console.shutdown(ctx.pooler, mode)  # NOTE: through the supervisor
    if mode == IMMEDIATE:
        # NOTE: as PgBouncer, no answer: the connection ends when the process does.
        return Deferred(lambda reply: control.shutdown(IMMEDIATE))
    control.shutdown(mode)
    return Result("SHUTDOWN")


def _suspend(ctx: Context, arg: str) -> Outcome:
    control = ctx.pooler.control
    return Deferred(lambda reply: control.suspend(lambda: reply(Result("SUSPEND"))))


def _restart(ctx: Context, arg: str) -> Outcome:
    """pgmux's own: replace every worker, one at a time (workers > 1)."""
    if ctx.pooler.worker is None:
        raise AdminError("RESTART needs [pgmux] workers > 1; restart a single pgmux by "
                         "starting a new one on the same port (so_reuseport) and sending "
                         "SIGTERM to the old one")
    from pgmux.workers import console

    return console.restart(ctx.pooler)


COMMANDS: dict[str, Command] = {
    "disable": Command(_disable, everywhere=True),
    "enable": Command(_enable, everywhere=True),
    "kill": Command(_kill, everywhere=True),
    "kill_client": Command(_kill_client),
    "pause": Command(_pause, everywhere=True),
    "reconnect": Command(_reconnect, everywhere=True),
    "reload": Command(_reload, everywhere=True),
    "restart": Command(_restart),
    "resume": Command(_resume, everywhere=True),
    "select": Command(_show, admin_only=False),
    "show": Command(_show, admin_only=False),
    "shutdown": Command(_shutdown),
    "suspend": Command(_suspend, everywhere=True),
    "wait_close": Command(_wait_close, everywhere=True),
}

# Commands that take no argument, and SHUTDOWN's only two.
_NO_ARG = {"reload", "suspend", "restart"}
_SHUTDOWN_ARGS = {"", WAIT_FOR_SERVERS, WAIT_FOR_CLIENTS}


# ---- from text to outcome ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked statement: known command, valid argument; runs later."""

    query: str
    statement: Statement

    @property
    def columns(self) -> tuple[Column, ...] | None:
        st = self.statement
        if st.kind == "cmd" and st.name in ("show", "select"):
            return show_columns(st.arg)
        return None


def prepare(query: str) -> Prepared:
    """Check query the way PgBouncer's parser does; raises AdminError with its texts."""
    try:
        st = parse(query)
    except BadArguments:
        raise AdminError("bad arguments") from None
    if st is None:
        raise syntax_error(query)
    if st.kind == "cmd":
        if st.name not in COMMANDS:
            raise syntax_error(query)
        if st.name in ("show", "select"):
            try:
                show_columns(st.arg)
            except KeyError:
                raise syntax_error(query) from None
        elif st.name in _NO_ARG and st.arg:
            raise syntax_error(query)
        elif st.name == "shutdown" and st.arg.upper() not in _SHUTDOWN_ARGS:
            raise syntax_error(query)
    return Prepared(query, st)


def execute(ctx: Context, prepared: Prepared) -> Outcome:
    """Run a prepared statement; raises AdminError."""
    st = prepared.statement
    try:
        if st.kind == "set":
            return _set(ctx, st.name, st.arg)
        command = COMMANDS[st.name]
        if command.admin_only and not ctx.is_admin:
            raise AdminError("admin access needed")
        outcome = command.run(ctx, st.arg)
    except ControlError as exc:
        raise AdminError(exc.message, exc.sqlstate) from None
    if command.everywhere and ctx.pooler.worker is not None and not ctx.local:
        from pgmux.workers import console

        outcome = console.everywhere(ctx.pooler, prepared.query, outcome)
    if isinstance(outcome, Deferred):
        return Deferred(_guarded(outcome.start))
    return outcome


def _guarded(start: Callable[[Reply], None]) -> Callable[[Reply], None]:
    """ControlErrors raised while starting a deferred command become AdminErrors."""

    def run(reply: Reply) -> None:
        try:
            start(reply)
        except ControlError as exc:
            raise AdminError(exc.message, exc.sqlstate) from None

    return run


def _set(ctx: Context, key: str, value: str) -> Outcome:
    if key.lower() in show.FAKE_PARAMS:
        return Result("SET", notice=("SET ignored", ""))
    if not ctx.is_admin:
        raise AdminError("admin access needed")
    ctx.pooler.control.set_setting(key, value)
    result = Result(f"SET {key}={value}")
    if ctx.pooler.worker is not None and not ctx.local:
        from pgmux.workers import console

        quoted = value.replace("'", "''")
        return console.everywhere(ctx.pooler, f"SET {key} = '{quoted}'", result)
    return result


def answer_admin(pooler: Pooler, query: str) -> asyncio.Future[dict[str, Any]]:
    """Run a console command here only (a sibling worker asked), as an admin; its outcome
    as JSON."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict[str, Any]] = loop.create_future()
    assert pooler.worker is not None
    me = pooler.worker.id

    def reply(result: Result | AdminError) -> None:
        if done.done():
            return
        if isinstance(result, AdminError):
            done.set_result({"error": result.message, "sqlstate": result.sqlstate,
                             "worker": me})
        else:
            done.set_result({"tag": result.tag, "worker": me})

    try:
        outcome = execute(Context(pooler, True, local=True), prepare(query))
        if isinstance(outcome, Deferred):
            outcome.start(reply)
        else:
            reply(outcome)
    except AdminError as exc:
        reply(exc)
    return done
