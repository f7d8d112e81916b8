"""The console of a worker speaks for all workers: SHOW gathers every worker's rows (view.py),
control commands run here and then in every sibling, SHUTDOWN and RESTART go to the
supervisor."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING

from pgmux.admin.outcome import AdminError, Deferred, Outcome, Reply, Result
from pgmux.workers import rpc, view

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler
    from pgmux.workers import WorkerInfo

log = logging.getLogger("pgmux")

SUPERVISOR_SOCKET = "supervisor.sock"
_SHUTDOWN_SIGNALS = {"IMMEDIATE": signal.SIGQUIT, "WAIT_FOR_SERVERS": signal.SIGINT,
                     "WAIT_FOR_CLIENTS": signal.SIGTERM}


def _info(pooler: Pooler) -> WorkerInfo:
    info = pooler.worker
    assert info is not None
    return info


def show(pooler: Pooler, what: str, result: Result) -> Outcome:
    """SHOW what over all workers: this worker's rows (in result) merged with its siblings'."""

    if what in view.LOCAL or result.columns is None:
        return result
    info = _info(pooler)

    def start(reply: Reply) -> None:
        async def gather() -> None:
            try:
                answers = await rpc.ask_all(info.run_dir, info.id, {"op": "show", "what": what})
                rowsets = [list(result.rows)]
                rowsets += [[tuple(r) for r in a.get("rows", [])] for a in answers]
                reply(Result(result.tag, result.columns, view.merge(what, rowsets),
                             result.notice))
            except Exception as exc:  # noqa: BLE001 - the console must get an answer
                log.exception("SHOW %s over the workers failed", what)
                reply(AdminError(f"SHOW {what} over the workers failed: {exc}", "XX000"))

        pooler.spawn(gather())

    return Deferred(start)


def everywhere(pooler: Pooler, query: str, local: Outcome) -> Deferred:
    """A control command that ran (or started) here, run in every sibling too; answered once
    all have answered. A sibling's refusal is logged: this worker's answer is the answer."""

    info = _info(pooler)

    def start(reply: Reply) -> None:
        loop = asyncio.get_running_loop()
        mine: asyncio.Future[Result | AdminError] = loop.create_future()
        if isinstance(local, Result):
            mine.set_result(local)
        else:
            local.start(lambda r: None if mine.done() else mine.set_result(r))

        async def run() -> None:
            try:
                answers = await rpc.ask_all(info.run_dir, info.id,
                                            {"op": "admin", "query": query})
            except Exception:  # noqa: BLE001 - this worker's answer is still the answer
                log.exception("%s: passing it to the other workers failed", query)
                answers = []
            for answer in answers:
                if "error" in answer:
                    log.warning("worker %s: %s: %s", answer.get("worker", "?"), query,
                                answer["error"])
            reply(await mine)

        pooler.spawn(run())

    return Deferred(start)


def kill_client(pooler: Pooler, arg: str) -> Deferred:
    """KILL_CLIENT: the client lives in one worker; whichever has it answers."""
    from pgmux.proxy.control import ControlError

    info = _info(pooler)

    def start(reply: Reply) -> None:
        try:
            pooler.control.kill_client(arg)
        except ControlError as exc:
            first = exc

            async def elsewhere() -> None:
                answers = await rpc.ask_all(info.run_dir, info.id,
                                            {"op": "admin", "query": f"KILL_CLIENT {arg}"})
                if any("error" not in a for a in answers):
                    reply(Result("KILL_CLIENT"))
                else:
                    reply(AdminError(first.message, first.sqlstate))

            pooler.spawn(elsewhere())
            return
        reply(Result("KILL_CLIENT"))

    return Deferred(start)


def shutdown(pooler: Pooler, mode: str) -> Outcome:
    """SHUTDOWN [mode] stops the whole pgmux: the supervisor passes the signal to every worker."""

    os.kill(_info(pooler).supervisor, _SHUTDOWN_SIGNALS[mode])
    if mode == "IMMEDIATE":
        return Deferred(lambda reply: None)  # NOTE: as PgBouncer: the connection just ends
    return Result("SHUTDOWN")


def restart(pooler: Pooler) -> Outcome:
    """RESTART: the supervisor replaces every worker, one at a time, by a new one."""

    info = _info(pooler)

    def start(reply: Reply) -> None:
        async def ask() -> None:
            answer = await asyncio.get_running_loop().run_in_executor(
                None, supervisor_request, info.run_dir, "restart")
            if answer == "ok":
                reply(Result("RESTART"))
            else:
                reply(AdminError(f"RESTART failed: {answer or 'no answer from supervisor'}"))

        pooler.spawn(ask())

    return Deferred(start)


def supervisor_request(run_dir: str, line: str, timeout: float = 5.0) -> str:
    """One line to the supervisor's control socket, its one-line answer ("" if none)."""
    path = os.path.join(run_dir, SUPERVISOR_SOCKET)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return ""
    return data.decode(errors="replace").strip()
