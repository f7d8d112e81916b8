"""Past one core: `[pgmux] workers = N | auto` runs N pooler processes on the same listening
sockets under a supervisor (supervisor.py), sharing one server budget (budget.py, shared.py),
one view (console.py, view.py) and cancel keys that name their worker (keys.py, cancel.py);
`budget_file` and `peer_id` bring the budget and cancels to separately started processes.

`install` plugs this process's part into a pooler (an app extension); with one worker, no
budget file and no peer_id it does nothing, and the pooler runs exactly as without it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pgmux.config.settings import MAX_WORKERS, WORKERS_AUTO

if TYPE_CHECKING:
    from pgmux.config import Config
    from pgmux.proxy.pooler import Pooler


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker process is and what its supervisor handed it."""

    id: int                    # 0-255: in its cancel keys, its `worker` column, its socket
    run_dir: str               # the supervisor's private directory (sockets, budget, board)
    supervisor: int            # the supervisor's pid
    budget_path: str
    sockets: list[socket.socket] = field(default_factory=list)  # the shared listeners
    metrics: socket.socket | None = None   # the shared /metrics listener, if any


def worker_count(config: Config) -> int:
    """[pgmux] workers, with `auto` = the CPUs this process may run on."""
    n = config.pgmux.workers
    if n == WORKERS_AUTO:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
    return max(1, min(n, MAX_WORKERS))


def install(pooler: Pooler) -> Callable[[], Awaitable[None]] | None:
    """Join the shared budget (workers, or [pgmux] budget_file), mark and route cancel keys
    (workers, or peer_id), and in a worker serve its siblings; nothing otherwise."""
    info = pooler.worker
    budget_path = info.budget_path if info is not None else pooler.config.pgmux.budget_file
    if info is None and not budget_path and not pooler.settings.peer_id:
        return None
    from pgmux.workers.process import attach

    return attach(pooler, info, budget_path)
