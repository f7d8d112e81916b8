"""Plugs one pooler process into its siblings: the shared budget and board, the cancel router,
and, in a worker, numbering apart, the `worker` column, SHOW WORKERS and the private socket
its siblings ask it through."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from pgmux.workers import rpc
from pgmux.workers.cancel import CancelRouter
from pgmux.workers.keys import KeyLayout
from pgmux.workers.shared import Shared

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler
    from pgmux.workers import WorkerInfo

log = logging.getLogger("pgmux")

IDENT_STEP = 1000  # NOTE: a worker's clients and servers get ids ending in its number


def attach(pooler: Pooler, info: WorkerInfo | None, budget_path: str | None
           ) -> Callable[[], Awaitable[None]]:
    shared: Shared | None = None
    if budget_path:
        shared = Shared(pooler, budget_path)
        pooler.budget = shared
        shared.start()
    pooler.cancel_router = CancelRouter(
        pooler, KeyLayout(pooler.settings.peer_id, info.id if info is not None else None),
        info.run_dir if info is not None else None)
    servers: list[asyncio.AbstractServer] = []
    if info is not None:
        pooler.number_idents(info.id, IDENT_STEP)
        _add_worker_shows(info.id)
        pooler.janitor.every(lambda: 0.0, Welcomes(pooler, info).tick)
        pooler.on_reload.append(lambda _config: _tell_supervisor(pooler, info, "reloaded"))

        async def listen() -> None:
            servers.append(await rpc.serve(rpc.socket_for(info.run_dir, info.id),
                                           lambda request: answer(pooler, request)))

        pooler.spawn(listen())

    async def cleanup() -> None:
        for server in servers:
            server.close()
        if info is not None:
            with contextlib.suppress(OSError):
                os.unlink(rpc.socket_for(info.run_dir, info.id))
        if shared is not None:
            shared.close()

    return cleanup


async def answer(pooler: Pooler, request: dict[str, Any]) -> dict[str, Any]:
    """What a sibling (or the supervisor) asks of this worker."""
    op = request.get("op")
    if op == "cancel":
        pooler.login.cancel(int(request["pid"]), int(request["key"]))
        return {}
    if op == "show":
        from pgmux.admin import show

        spec = show.SHOWS[str(request["what"])]
        return {"rows": [list(r) for r in spec.rows(pooler)]}
    if op == "admin":
        from pgmux.admin.commands import answer_admin

        return await answer_admin(pooler, str(request["query"]))
    if op == "metrics":
        from pgmux.stats.prometheus import figures

        return dict(figures(pooler))
    if op == "welcome":
        pool = pooler.pools.get((str(request["db"]), str(request["user"])))
        return {"params": pool.welcome if pool is not None else None}
    if op == "retire":
        retire(pooler)
        return {}
    return {"error": f"unknown request {op!r}"}


class Welcomes:
    """A pool new to this worker needs the parameters of a server login to welcome its first
    clients; when the shared budget has no slot for that login (all held by siblings, maybe
    busy), a sibling that has the pool's welcome gives it (same server, same user)."""

    def __init__(self, pooler: Pooler, info: WorkerInfo) -> None:
        self.pooler = pooler
        self.info = info
        self.asking: set[tuple[str, str]] = set()

    def tick(self) -> None:
        for key, pool in list(self.pooler.pools.items()):
            if pool.welcome is None and pool.welcome_waiters and key not in self.asking:
                self.asking.add(key)
                self.pooler.spawn(self._ask(key))

    async def _ask(self, key: tuple[str, str]) -> None:
        try:
            answers = await rpc.ask_all(self.info.run_dir, self.info.id,
                                        {"op": "welcome", "db": key[0], "user": key[1]}, 2.0)
            params = next((a["params"] for a in answers if a.get("params")), None)
            pool = self.pooler.pools.get(key)
            if params and pool is not None and pool.welcome is None:
                self.pooler.launcher.welcome(pool, {str(k): str(v) for k, v in params.items()})
        finally:
            self.asking.discard(key)


def _tell_supervisor(pooler: Pooler, info: WorkerInfo, line: str) -> None:
    from pgmux.workers.console import supervisor_request

    async def tell() -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, supervisor_request, info.run_dir, line)

    pooler.spawn(tell())


def retire(pooler: Pooler) -> None:
    """The supervisor replaces this worker: stop accepting on every shared socket (the others
    accept), and exit once the last client (console sessions aside) has left. Unlike a
    shutdown, the operator's verbs (PAUSE, RESUME, ...) still apply here meanwhile."""
    global _retiring
    if _retiring:
        return
    _retiring = True
    log.info("worker replaced: no new clients, exiting when the last one leaves")
    pooler.listener.stop()

    def check() -> None:
        if not any(c.admin is None for c in pooler.clients) and pooler.stop_event is not None \
                and not pooler.stop_event.is_set():
            log.info("worker replaced: all clients disconnected, exiting")
            pooler.stop_event.set()

    pooler.janitor.every(lambda: 0.1, check)


_retiring = False


# ---- the worker column and SHOW WORKERS --------------------------------------------------

def _add_worker_shows(worker: int) -> None:
    from pgmux.admin import show
    from pgmux.admin.show import Column, Show, cols

    column = (Column("worker", "i"),)
    for what in ("clients", "servers", "sockets", "active_sockets"):
        spec = show.SHOWS[what]
        if spec.columns[-1].name == "worker":
            continue

        def rows(pooler: Pooler, inner: Any = spec.rows) -> Iterator[tuple[Any, ...]]:
            for row in inner(pooler):
                yield tuple(row) + (worker,)

        show.SHOWS[what] = Show(spec.columns + column, rows)

    def workers_rows(pooler: Pooler) -> Iterator[tuple[Any, ...]]:
        pools = list(pooler.pools.values())
        yield (worker, os.getpid(), sum(1 for c in pooler.clients if c.admin is None),
               sum(p.core.server_count for p in pools), sum(len(p.core.waiting) for p in pools),
               int(_retiring))

    show.SHOWS["workers"] = Show(cols("iiiiii", "worker", "pid", "clients", "servers",
                                      "waiting", "retiring"), workers_rows)
