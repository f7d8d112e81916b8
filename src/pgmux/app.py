"""Runs one pooler process: loads the config, starts the Pooler with its extras (admin console,
metrics), handles signals and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgmux.config import Config
from pgmux.log import use_syslog
from pgmux.proxy.pooler import Pooler

if TYPE_CHECKING:
    from pgmux.workers import WorkerInfo

log = logging.getLogger("pgmux")

# NOTE: extensions (admin console, metrics, ...) register here: each gets the pooler once it is
# built and returns an optional coroutine function to run at shutdown.
EXTENSIONS: list[Callable[[Pooler], Any]] = []


def _load_extensions() -> None:
    if EXTENSIONS:
        return
    for name in ("pgmux.admin", "pgmux.stats.prometheus", "pgmux.stats.period",
                 "pgmux.workers"):
        try:
            module = __import__(name, fromlist=["install"])
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        install = getattr(module, "install", None)
        if install is not None:
            EXTENSIONS.append(install)


async def serve(config: Config, *, ready: Callable[[Pooler], None] | None = None,
                reload: Callable[[], Config] | None = None,
                worker: WorkerInfo | None = None) -> int:
    """Run the pooler until a shutdown signal; returns the exit code. A port, Unix socket or
    pidfile in use raises StartError (an OSError) with everything undone. A worker (see
    pgmux/workers) runs on the sockets its supervisor bound."""
    _load_extensions()
    use_syslog(config.settings)
    pooler = Pooler(config)
    pooler.worker = worker
    cleanups: list[Any] = []
    for install in EXTENSIONS:
        result = install(pooler)
        if result is not None:
            cleanups.append(result)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    pooler.stop_event = stop
    # NOTE: signals are handled before anything is visible (port, pidfile): a supervisor that
    # signals as soon as it sees either must never hit a default action.
    for sig, handler in pooler.control.signal_handlers(stop, reload).items():
        loop.add_signal_handler(sig, handler)
    try:
        await pooler.start()
        if ready is not None:
            ready(pooler)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGQUIT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        for cleanup in cleanups:
            with contextlib.suppress(Exception):
                await cleanup()
        await pooler.close()
    return 0
