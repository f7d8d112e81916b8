"""Sums a case's runs per target: mean tps, pooled latency percentiles, cost per transaction."""

from __future__ import annotations

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
    syscalls: float | None = None
    ctx: float | None = None
    errors: list[str] = field(default_factory=list)
    log_trouble: list[str] = field(default_factory=list)
    note: str = ""

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
            "syscalls_per_txn": self.syscalls, "ctx_switches_per_txn": self.ctx,
            "errors": self.errors[:20], "log_trouble": self.log_trouble[:20], "note": self.note,
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
        s.cpu_us = sum(r.cpu or 0.0 for r in good) * 1e6 / txns
        s.syscalls = sum(r.syscalls or 0 for r in good) / txns
        s.ctx = sum(r.ctx_switches or 0 for r in good) / txns
    for r in runs:
        for e in r.errors:
            if e not in s.errors:
                s.errors.append(e)
        r.latencies_us = []  # NOTE: pooled above; the lists are large
    return s
