"""Prometheus exposition: with `[pgmux] metrics_port` set, serves /metrics (text format, made by
prometheus_client) with per-pool series labelled database and user, read at scrape time (with
workers, from every worker, added up: the supervisor's one socket is served by all)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pgmux.admin.show import pin_reason

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
LABELS = ["database", "user"]
USEC = 1_000_000

# (metric name, help, value from a pool core) for the per-pool gauges, all list lengths.
GAUGES: tuple[tuple[str, str, Callable[[Any], float]], ...] = (
    ("pgmux_pool_clients_active", "Clients linked to a server or idle (cl_active).",
     lambda core: len(core.clients)),
    ("pgmux_pool_clients_waiting", "Clients waiting for a server (cl_waiting).",
     lambda core: len(core.waiting)),
    ("pgmux_pool_servers_active", "Server connections linked to a client (sv_active).",
     lambda core: len(core.active)),
    ("pgmux_pool_servers_idle", "Server connections ready for use (sv_idle).",
     lambda core: len(core.idle)),
    ("pgmux_pool_servers_used", "Server connections waiting for a check (sv_used).",
     lambda core: len(core.used)),
    ("pgmux_pool_servers_tested", "Server connections running a reset or check query "
     "(sv_tested).", lambda core: len(core.tested)),
    ("pgmux_pool_servers_login", "Server connections logging in (sv_login).",
     lambda core: len(core.login)),
    ("pgmux_pool_size", "The pool's pool_size limit.", lambda core: core.limits.pool_size),
)

# (metric name without _total, help, counter field, divisor) for the per-pool counters.
COUNTERS: tuple[tuple[str, str, str, int], ...] = (
    ("pgmux_server_assignments", "Times a server was assigned to a client.",
     "server_assignment_count", 1),
    ("pgmux_transactions", "Transactions pooled.", "xact_count", 1),
    ("pgmux_queries", "Queries pooled.", "query_count", 1),
    ("pgmux_received_bytes", "Bytes received from clients.", "bytes_received", 1),
    ("pgmux_sent_bytes", "Bytes sent to clients.", "bytes_sent", 1),
    ("pgmux_transaction_seconds", "Time spent in transactions on servers.", "xact_time", USEC),
    ("pgmux_query_seconds", "Time spent running queries on servers.", "query_time", USEC),
    ("pgmux_wait_seconds", "Time clients spent waiting for a server.", "wait_time", USEC),
    ("pgmux_client_parses", "Prepared statements created by clients.",
     "client_parse_count", 1),
    ("pgmux_server_parses", "Prepared statements created on servers.",
     "server_parse_count", 1),
    ("pgmux_binds", "Prepared statements bound.", "bind_count", 1),
    ("pgmux_session_replays", "Session state (settings, SQL prepared statements) brought to "
     "a server when a client got it.", "session_replays", 1),
    ("pgmux_session_readbacks", "Session state read back after a transaction that may have "
     "changed it.", "session_readbacks", 1),
)


def figures(pooler: Pooler) -> dict[str, Any]:
    """Every number the exposition shows, as plain data: one row per pool (database, user,
    the GAUGES, maxwait in seconds, the COUNTERS), the client count and the pause flag."""
    now = time.monotonic()
    rows = []
    for key in sorted(pooler.pools):
        pool = pooler.pools[key]
        rows.append([pool.name, pool.user, *(get(pool.core) for _, _, get in GAUGES),
                     pool.core.max_wait(now),
                     *(getattr(pool.stats, attr) for _, _, attr, _ in COUNTERS)])
    pinned: dict[tuple[str, str, str], int] = {}
    for client in pooler.clients:
        reason = pin_reason(client)
        if reason and client.pool is not None:
            for one in reason.split(","):
                key3 = (client.pool.name, client.pool.user, one)
                pinned[key3] = pinned.get(key3, 0) + 1
    return {"pools": rows, "clients": len(pooler.clients), "paused": int(pooler.control.paused),
            "pinned": [[*k, n] for k, n in sorted(pinned.items())]}


_POOL_SIZE = 2 + len(GAUGES) - 1   # the one gauge that is a limit, not a count
_MAXWAIT = 2 + len(GAUGES)


def merge_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several workers as one pooler's: counts and counters added, the pool
    size and the longest wait the largest."""
    pools: dict[tuple[str, str], list[Any]] = {}
    for part in parts:
        for row in part.get("pools", []):
            key = (row[0], row[1])
            have = pools.get(key)
            if have is None:
                pools[key] = list(row)
                continue
            for i in range(2, len(row)):
                have[i] = max(have[i], row[i]) if i in (_POOL_SIZE, _MAXWAIT) else \
                    have[i] + row[i]
    pinned: dict[tuple[str, str, str], int] = {}
    for part in parts:
        for db, user, reason, n in part.get("pinned", []):
            pinned[(db, user, reason)] = pinned.get((db, user, reason), 0) + n
    return {"pools": [pools[k] for k in sorted(pools)],
            "clients": sum(p.get("clients", 0) for p in parts),
            "paused": max((p.get("paused", 0) for p in parts), default=0),
            "pinned": [[*k, n] for k, n in sorted(pinned.items())]}


class PoolCollector:
    """Reads the pooler when scraped (or the figures given); nothing is counted twice."""

    def __init__(self, pooler: Pooler, given: dict[str, Any] | None = None) -> None:
        self.pooler = pooler
        self.given = given

    def collect(self) -> Iterator[Any]:
        from pgmux.cli.main import version_line

        fig = self.given if self.given is not None else figures(self.pooler)
        rows = fig["pools"]
        info = InfoMetricFamily("pgmux", "pgmux build and the PgBouncer it stands in for.")
        info.add_metric([], {"version": version_line()})
        yield info
        yield GaugeMetricFamily("pgmux_paused", "1 while the pooler is paused (PAUSE).",
                                value=fig["paused"])
        yield GaugeMetricFamily("pgmux_clients", "Client connections, all pools and the "
                                "console.", value=fig["clients"])
        for i, (name, doc, _) in enumerate(GAUGES):
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            for row in rows:
                g.add_metric([row[0], row[1]], row[2 + i])
            yield g
        g = GaugeMetricFamily("pgmux_pool_maxwait_seconds",
                              "How long the oldest waiting client has waited (maxwait).",
                              labels=LABELS)
        for row in rows:
            g.add_metric([row[0], row[1]], row[_MAXWAIT])
        yield g
        g = GaugeMetricFamily("pgmux_pinned_clients", "Clients that keep their server across "
                              "transactions, by why (docs/session-state.md).",
                              labels=[*LABELS, "reason"])
        for db, user, reason, n in fig.get("pinned", []):
            g.add_metric([db, user, reason], n)
        yield g
        for i, (name, doc, _, div) in enumerate(COUNTERS):
            c = CounterMetricFamily(name, doc, labels=LABELS)
            for row in rows:
                value = row[_MAXWAIT + 1 + i]
                c.add_metric([row[0], row[1]], value / div if div != 1 else value)
            yield c


def registry_for(pooler: Pooler, given: dict[str, Any] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(pooler, given))
    return registry


async def _whole(pooler: Pooler) -> CollectorRegistry:
    """With workers: a registry over the figures of every worker."""
    from pgmux.workers import rpc

    info = pooler.worker
    assert info is not None
    others = await rpc.ask_all(info.run_dir, info.id, {"op": "metrics"})
    return registry_for(pooler, merge_figures([figures(pooler), *others]))


def render(pooler: Pooler) -> bytes:
    """The /metrics body for pooler."""
    return bytes(generate_latest(registry_for(pooler)))


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                registry: CollectorRegistry, pooler: Pooler) -> None:
    """A minimal HTTP/1.0 answer; it runs on the pooler's loop, so scrapes read the pools
    without locks."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, ctype, body = "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        elif path in ("/metrics", "/"):
            if pooler.worker is not None:
                registry = await _whole(pooler)
            status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
        else:
            status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
        writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        if method != "HEAD":
            writer.write(body)
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ConnectionError, ValueError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def listen_socket(addr: str, port: int) -> socket.socket:
    """A listening socket for metrics_addr (empty or `*`: every address) and metrics_port,
    bound now, so that a port in use or an address not on this host stops the start with a
    clear error instead of a log line after the pooler is up. Raises OSError."""
    host = addr.strip()
    try:
        if host in ("", "*"):
            if socket.has_dualstack_ipv6():
                return socket.create_server(("::", port), family=socket.AF_INET6,
                                            dualstack_ipv6=True)
            return socket.create_server(("", port))
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address, family=family)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(f"metrics: cannot listen on metrics_addr {addr or '*'} metrics_port "
                      f"{port}: {reason[:1].lower() + reason[1:]}") from None


def install(pooler: Pooler) -> Callable[[], Awaitable[None]] | None:
    """Start the /metrics endpoint when [pgmux] metrics_port is set (0 = off); raises OSError
    when it cannot listen."""
    conf = pooler.config.pgmux
    if not conf.metrics_port:
        return None
    registry = registry_for(pooler)
    # NOTE: a worker serves the supervisor's socket, as every other worker does.
    worker = pooler.worker
    sock = worker.metrics if worker is not None and worker.metrics is not None else \
        listen_socket(conf.metrics_addr, conf.metrics_port)
    servers: list[asyncio.Server] = []

    async def start() -> None:
        server = await asyncio.start_server(lambda r, w: _http(r, w, registry, pooler),
                                            sock=sock)
        servers.append(server)
        log.info("metrics: serving http://%s:%d/metrics", conf.metrics_addr or "*",
                 conf.metrics_port)

    task = asyncio.get_running_loop().create_task(start())

    async def cleanup() -> None:
        if not task.done():
            task.cancel()
            sock.close()
        for server in servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    return cleanup
