"""Sums a case's runs per target: mean tps, pooled latency percentiles, cost per transaction."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pgbench import Run, percentile


@dataclass
class Summary:
    case: str
    target: str
    runs: list[Run] = field(default_factory=list)
    tps: list[float] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us: float | None = None
    cpu_user_us: float | None = None
    cpu_sys_us: float | None = None
    ctx_vol: float | None = None
    ctx_invol: float | None = None
    errors: list[str] = field(default_factory=list)
    log_trouble: list[str] = field(default_factory=list)
    note: str = ""
    others_pct: list[float] = field(default_factory=list)  # others' CPU, % of the machine

    @property
    def failed(self) -> bool:
        return any(not r.ok for r in self.runs) or not self.runs

    @property
    def tps_mean(self) -> float | None:
        return sum(self.tps) / len(self.tps) if self.tps and not self.failed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case, "target": self.target, "failed": self.failed,
            "tps": self.tps, "tps_mean": self.tps_mean, "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "cpu_us_per_txn": self.cpu_us,
            "cpu_user_us_per_txn": self.cpu_user_us, "cpu_sys_us_per_txn": self.cpu_sys_us,
            "ctx_vol_per_txn": self.ctx_vol, "ctx_invol_per_txn": self.ctx_invol,
            "others_cpu_pct": self.others_pct, "errors": self.errors[:20],
            "log_trouble": self.log_trouble[:20], "note": self.note,
            "runs": [{k: v for k, v in vars(r).items() if k != "latencies_us"}
                     for r in self.runs],
        }


def summarize(case: str, target: str, runs: list[Run]) -> Summary:
    s = Summary(case, target, runs)
    good = [r for r in runs if r.ok]
    s.tps = [r.tps for r in runs if r.tps is not None]
    lat = sorted(x for r in good for x in r.latencies_us)
    p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
    s.p50_ms = None if p50 is None else p50 / 1000
    s.p99_ms = None if p99 is None else p99 / 1000
    txns = sum(r.transactions for r in good)
    if txns and all(r.cpu is not None for r in good):
        s.cpu_user_us = sum(r.cpu_user or 0.0 for r in good) * 1e6 / txns
        s.cpu_sys_us = sum(r.cpu_sys or 0.0 for r in good) * 1e6 / txns
        s.cpu_us = s.cpu_user_us + s.cpu_sys_us
        s.ctx_vol = sum(r.ctx_vol or 0 for r in good) / txns
        s.ctx_invol = sum(r.ctx_invol or 0 for r in good) / txns
    cores = os.cpu_count() or 1
    s.others_pct = [100 * r.others / r.wall / cores for r in runs
                    if r.others is not None and r.wall]
    for r in runs:
        for e in r.errors:
            if e not in s.errors:
                s.errors.append(e)
        r.latencies_us = []  # NOTE: pooled above; the lists are large
    return s
