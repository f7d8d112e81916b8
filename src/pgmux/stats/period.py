"""The stats_period rollover: snapshots of every pool's counters, the per-second averages of
SHOW STATS / STATS_AVERAGES, and PgBouncer's periodic "stats: ..." log line."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgmux.stats.counters import Counters

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
USEC = 1_000_000
PoolKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Averages:
    """One stats period's rates (per second) and mean durations (microseconds)."""

    server_assignment_count: int = 0
    xact_count: int = 0
    query_count: int = 0
    recv: int = 0              # bytes/s from clients
    sent: int = 0              # bytes/s to clients
    xact_time: int = 0         # mean per transaction
    query_time: int = 0        # mean per query
    wait_time: int = 0         # mean per server assignment
    client_parse_count: int = 0
    server_parse_count: int = 0
    bind_count: int = 0


def total(counters: Iterable[Counters]) -> Counters:
    out = Counters()
    for c in counters:
        out.add(c)
    return out


def averages(cur: Counters, old: Counters, seconds: float) -> Averages:
    """PgBouncer's calc_average: rates over the period, times per event; integers."""
    dur = int(seconds * USEC)
    if dur <= 0:
        return Averages()
    d = cur.minus(old)

    def rate(n: int) -> int:
        return USEC * n // dur

    return Averages(
        server_assignment_count=rate(d.server_assignment_count),
        xact_count=rate(d.xact_count),
        query_count=rate(d.query_count),
        recv=rate(d.bytes_received),
        sent=rate(d.bytes_sent),
        xact_time=d.xact_time // d.xact_count if d.xact_count > 0 else 0,
        query_time=d.query_time // d.query_count if d.query_count > 0 else 0,
        wait_time=d.wait_time // d.server_assignment_count
        if d.server_assignment_count > 0 else 0,
        client_parse_count=rate(d.client_parse_count),
        server_parse_count=rate(d.server_parse_count),
        bind_count=rate(d.bind_count),
    )


def log_line(avg: Averages) -> str:
    """The line PgBouncer logs every stats_period (when log_stats is on)."""
    return (f"stats: {avg.xact_count} xacts/s, {avg.query_count} queries/s, "
            f"{avg.client_parse_count} client parses/s, {avg.server_parse_count} server "
            f"parses/s, {avg.bind_count} binds/s, in {avg.recv} B/s, out {avg.sent} B/s, "
            f"xact {avg.xact_time} us, query {avg.query_time} us, wait {avg.wait_time} us")


class StatsPeriod:
    """Two snapshots per pool (start and end of the last full period) and their stamps."""

    def __init__(self, now: float | None = None) -> None:
        stamp = time.monotonic() if now is None else now
        self.new_stamp = stamp
        self.old_stamp = stamp - 1.0   # NOTE: as PgBouncer: the first period counts 1 s
        self.older: dict[PoolKey, Counters] = {}
        self.newer: dict[PoolKey, Counters] = {}

    def rollover(self, current: dict[PoolKey, Counters], now: float | None = None) -> None:
        self.old_stamp = self.new_stamp
        self.new_stamp = time.monotonic() if now is None else now
        self.older = self.newer
        self.newer = {key: c.copy() for key, c in current.items()}

    def averages(self, keys: Iterable[PoolKey]) -> Averages:
        keys = list(keys)
        cur = total(self.newer[k] for k in keys if k in self.newer)
        old = total(self.older[k] for k in keys if k in self.older)
        return averages(cur, old, self.new_stamp - self.old_stamp)

    def all_averages(self) -> Averages:
        return self.averages(set(self.newer) | set(self.older))


def tracker(pooler: Pooler) -> StatsPeriod:
    """The StatsPeriod of a pooler (made on first use)."""
    found = pooler.stats_period
    if found is None:
        found = pooler.stats_period = StatsPeriod()
    return found


def snapshot(pooler: Pooler) -> dict[PoolKey, Counters]:
    return {key: pool.stats for key, pool in pooler.pools.items()}


def install(pooler: Pooler) -> None:
    """Roll the stats over every stats_period and log the averages (log_stats), from the
    pooler's janitor tick."""
    period = tracker(pooler)

    def tick() -> None:
        try:
            period.rollover(snapshot(pooler))
            if pooler.settings.log_stats:
                log.info("%s", log_line(period.all_averages()))
        except Exception:  # noqa: BLE001 - the rollover must keep running
            log.exception("stats rollover failed")

    pooler.janitor.every(lambda: max(1, pooler.settings.stats_period), tick)
