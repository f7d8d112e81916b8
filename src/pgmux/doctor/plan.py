"""Capacity arithmetic: how many connections an app deployment needs, and what fits a limit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# NOTE: with a pooler in front, the pooler's server side takes at most this share of the limit and
# the rest stays free for direct connections (migrations, consoles, monitoring, admin), as hosted
# poolers do.
POOLER_SHARE = 0.75


def auto_pool_size(
    max_connections: int,
    reserved: int,
    role_limit: int | None,
    db_limit: int | None,
    fraction: float = POOLER_SHARE,
) -> int:
    """A pool size for one role on one database: `fraction` of what it may use, at least 1.

    `reserved` is every reserved slot (superuser_reserved_connections + reserved_connections);
    `role_limit` / `db_limit` are rolconnlimit / datconnlimit, None when unlimited.
    """
    usable = max(0, max_connections - reserved)
    for limit in (role_limit, db_limit):
        if limit is not None and limit >= 0:
            usable = min(usable, limit)
    return max(1, math.floor(usable * fraction))


@dataclass(frozen=True)
class Deployment:
    """An application deployment as the `plan` command describes it."""

    limit: int  # the connections the app may use (max_connections minus reserved, or a plan's)
    dynos: int = 1  # hosts / containers / dynos running the app
    processes: int = 1  # worker processes per dyno (e.g. web server workers)
    threads: int = 1  # threads per process that each may want a connection
    pool_size: int | None = None  # connections per process; None: one per thread
    preboot: bool = False  # old and new release overlap during deploys: the app part doubles
    one_off: int = 0  # one-off processes (console, migration, cron), one connection each
    other: int = 0  # anything else: monitoring, admin tools, other services

    @property
    def effective_pool_size(self) -> int:
        return self.threads if self.pool_size is None else self.pool_size

    @property
    def app_multiplier(self) -> int:
        """Processes that may hold a pool at once (both releases while preboot overlaps)."""
        return self.dynos * self.processes * (2 if self.preboot else 1)

    @property
    def fixed(self) -> int:
        """Connections that do not scale with the pool size."""
        return self.one_off + self.other


@dataclass(frozen=True)
class WithPooler:
    """The same deployment with pgmux in front, in transaction mode."""

    # NOTE: pgmux's server side: POOLER_SHARE of the limit (`server_cap`), but never more than
    # the app's client connections: a pool larger than its clients would never be filled.
    server_connections: int
    server_cap: int
    direct_headroom: int  # left for direct connections
    client_connections: int  # app connections pgmux accepts (its max_client_conn at least)
    direct_needed: int  # one-off and other connections, which go straight to PostgreSQL
    # NOTE: default_pool_size when one pgmux runs beside each dyno (both releases during preboot);
    # a central pgmux uses server_connections instead. 0 means sidecars cannot fit: go central.
    pool_size_per_dyno: int
    fits: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "server_connections": self.server_connections,
            "server_cap": self.server_cap,
            "direct_headroom": self.direct_headroom,
            "client_connections": self.client_connections,
            "direct_needed": self.direct_needed,
            "pool_size_per_dyno": self.pool_size_per_dyno,
            "fits": self.fits,
        }


@dataclass(frozen=True)
class Plan:
    """Connections needed against the limit, directly and with pgmux in front."""

    deployment: Deployment
    app: int  # dynos * processes * pool size, doubled by preboot
    needed: int
    max_pool_size_per_process: int  # largest pool size that still fits; 0 when none does
    with_pgmux: WithPooler

    @property
    def limit(self) -> int:
        return self.deployment.limit

    @property
    def fits(self) -> bool:
        return self.needed <= self.deployment.limit

    @property
    def threads_wait(self) -> bool:
        """True when the largest fitting pool is smaller than the threads that want one."""
        return self.max_pool_size_per_process < self.deployment.threads

    def to_json(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "needed": self.needed,
            "limit": d.limit,
            "fits": self.fits,
            "max_pool_size_per_process": self.max_pool_size_per_process,
            "breakdown": {
                "dynos": d.dynos,
                "processes": d.processes,
                "threads": d.threads,
                "pool_size": d.effective_pool_size,
                "preboot": d.preboot,
                "app": self.app,
                "one_off": d.one_off,
                "other": d.other,
            },
            "with_pgmux": self.with_pgmux.to_json(),
        }


def plan(deployment: Deployment) -> Plan:
    """Work out a deployment's connection needs; raises ValueError on impossible inputs."""
    d = deployment
    if d.limit < 1:
        raise ValueError("limit must be at least 1")
    for name in ("dynos", "processes", "threads", "one_off", "other"):
        if getattr(d, name) < 0:
            raise ValueError(f"{name} must not be negative")
    if d.pool_size is not None and d.pool_size < 0:
        raise ValueError("pool_size must not be negative")
    app = d.app_multiplier * d.effective_pool_size
    needed = app + d.fixed
    room = d.limit - d.fixed
    if d.app_multiplier == 0:
        largest = 0
    else:
        largest = max(0, room // d.app_multiplier)
    cap = math.floor(d.limit * POOLER_SHARE)
    server = min(cap, app)
    headroom = d.limit - server
    sidecars = max(1, d.dynos * (2 if d.preboot else 1))
    per_dyno_clients = d.processes * d.effective_pool_size
    with_pgmux = WithPooler(
        server_connections=server,
        server_cap=cap,
        direct_headroom=headroom,
        client_connections=app,
        direct_needed=d.fixed,
        pool_size_per_dyno=min(server // sidecars, per_dyno_clients),
        fits=(server >= 1 or app == 0) and d.fixed <= headroom,
    )
    return Plan(
        deployment=d,
        app=app,
        needed=needed,
        max_pool_size_per_process=largest,
        with_pgmux=with_pgmux,
    )
