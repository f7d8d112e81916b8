"""One view over all workers: how the rows of each SHOW from every worker add up to the rows of
one pooler (pure functions), and the `worker` column of the SHOWs whose rows are per worker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

Row = tuple[Any, ...]

# SHOWs whose rows belong to one worker each: the rows of all workers, a `worker` column added.
PER_WORKER = ("clients", "servers", "sockets", "active_sockets", "workers")
# SHOWs that only say something about the process asked (settings, version, ...; FDS: file
# descriptor numbers mean nothing outside their process).
LOCAL = ("config", "version", "state", "peers", "peer_pools", "dns_hosts", "dns_zones", "mem",
         "help", "fds")


def _num(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _group(rowsets: Iterable[Sequence[Row]], key: int, sums: Sequence[int] = (),
           maxes: Sequence[int] = (),
           weighted: Sequence[tuple[int, int]] = ()) -> list[Row]:
    """Rows with the same first `key` columns made one: `sums` added, `maxes` the largest,
    `weighted` (column, weight column) the mean weighted by the other column; the rest as the
    first row has them. Sorted by the key."""
    merged: dict[Row, list[Any]] = {}
    weights: dict[Row, dict[int, list[tuple[int, int]]]] = {}
    for rows in rowsets:
        for row in rows:
            k = tuple(row[:key])
            cur = merged.get(k)
            pairs = weights.setdefault(k, {})
            for col, wcol in weighted:
                pairs.setdefault(col, []).append((_num(row[col]), _num(row[wcol])))
            if cur is None:
                merged[k] = list(row)
                continue
            for col in sums:
                cur[col] = _num(cur[col]) + _num(row[col])
            for col in maxes:
                cur[col] = max(_num(cur[col]), _num(row[col]))
    for k, cur in merged.items():
        for col, _ in weighted:
            got = weights[k].get(col, [])
            total = sum(w for _, w in got)
            cur[col] = sum(v * w for v, w in got) // total if total else \
                max((v for v, _ in got), default=0)
    return [tuple(merged[k]) for k in sorted(merged, key=lambda k: tuple(map(str, k)))]


def _pools(rowsets: list[list[Row]]) -> list[Row]:
    out = _group(rowsets, 2, sums=range(2, 13))
    # NOTE: maxwait is (seconds, microseconds): the longest wait is one pair, not two maxima.
    longest: dict[Row, tuple[int, int]] = {}
    for rows in rowsets:
        for row in rows:
            k = tuple(row[:2])
            longest[k] = max(longest.get(k, (0, 0)), (_num(row[13]), _num(row[14])))
    return [row[:13] + longest[tuple(row[:2])] + row[15:] for row in out]


# SHOW STATS: totals at 1-11, then averages: rates, and times weighted by their counts.
_STATS_TIMES = ((17, 13), (18, 14), (19, 12))
_AVG_TIMES = ((6, 2), (7, 3), (8, 1))
_TOTALS_TIMES = {"avg_xact_time": "avg_xact_count", "avg_query_time": "avg_query_count",
                 "avg_wait_time": "avg_server_assignment_count"}


def _stats(rowsets: list[list[Row]]) -> list[Row]:
    times = {c for c, _ in _STATS_TIMES}
    return _group(rowsets, 1, sums=[c for c in range(1, 23) if c not in times],
                  weighted=_STATS_TIMES)


def _stats_averages(rowsets: list[list[Row]]) -> list[Row]:
    times = {c for c, _ in _AVG_TIMES}
    return _group(rowsets, 1, sums=[c for c in range(1, 12) if c not in times],
                  weighted=_AVG_TIMES)


def _totals(rowsets: list[list[Row]]) -> list[Row]:
    order: list[str] = []
    sums: dict[str, int] = {}
    pairs: dict[str, list[tuple[int, int]]] = {}
    for rows in rowsets:
        values = {str(r[0]): _num(r[1]) for r in rows}
        for name, value in values.items():
            if name not in sums:
                order.append(name)
                sums[name] = 0
            if name in _TOTALS_TIMES:
                pairs.setdefault(name, []).append((value, values.get(_TOTALS_TIMES[name], 0)))
            else:
                sums[name] += value
    for name, got in pairs.items():
        total = sum(w for _, w in got)
        sums[name] = sum(v * w for v, w in got) // total if total else max(v for v, _ in got)
    return [(name, sums[name]) for name in order]


_LIST_SUMS = {"free_clients", "used_clients", "login_clients", "free_servers", "used_servers"}


def _lists(rowsets: list[list[Row]]) -> list[Row]:
    order: list[str] = []
    values: dict[str, int] = {}
    for rows in rowsets:
        for name, items in rows:
            if name not in values:
                order.append(name)
                values[name] = _num(items)
            elif name in _LIST_SUMS:
                values[name] += _num(items)
            else:
                values[name] = max(values[name], _num(items))
    return [(name, values[name]) for name in order]


def _concat(rowsets: list[list[Row]]) -> list[Row]:
    return [row for rows in rowsets for row in rows]


MERGE: dict[str, Callable[[list[list[Row]]], list[Row]]] = {
    "pools": _pools,
    "stats": _stats,
    "stats_totals": lambda rs: _group(rs, 1, sums=range(1, 12)),
    "stats_averages": _stats_averages,
    "totals": _totals,
    "databases": lambda rs: _group(rs, 1, sums=(12, 14), maxes=(15, 16)),
    "users": lambda rs: _group(rs, 1, sums=(5, 7)),
    "lists": _lists,
    **{what: _concat for what in PER_WORKER},
}


def merge(what: str, rowsets: list[list[Row]]) -> list[Row]:
    """The rows one pooler would show, from each worker's rows (the asker's first)."""
    join = MERGE.get(what)
    if join is None:
        return list(rowsets[0]) if rowsets else []
    return join(rowsets)
