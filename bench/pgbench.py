"""Runs pgbench once against a target and measures it: tps, per-transaction latencies (from
pgbench's --log files) and the CPU the measured process spent."""

from __future__ import annotations

import math
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import procstat

TPS = re.compile(r"^tps = ([\d.]+)", re.M)
PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


@dataclass(frozen=True)
class Case:
    """One pgbench row: builtin script, protocol, clients, reconnect per transaction."""

    script: str  # "S" (select-only) or "N" (simple-update)
    protocol: str  # simple | extended | prepared
    clients: int
    connect: bool = False  # -C: a new connection per transaction

    @property
    def key(self) -> str:
        return f"{self.script}-{self.protocol}-{self.clients}" + ("-C" if self.connect else "")

    @property
    def flags(self) -> list[str]:
        out = [f"-{self.script}", "-M", self.protocol, "-c", str(self.clients)]
        if self.connect:
            out.insert(0, "-C")
        return out

    @property
    def label(self) -> str:
        return " ".join(self.flags)


@dataclass
class Run:
    """One pgbench invocation's measurements."""

    target: str
    case: str
    round: int
    command: list[str]
    exit_code: int
    tps: float | None
    transactions: int
    failed: int
    wall: float
    cpu_user: float | None  # seconds of user CPU of the measured process over the run
    cpu_sys: float | None  # seconds of system CPU of it
    ctx_vol: int | None  # its voluntary context switches over the run
    ctx_invol: int | None  # and involuntary ones (preempted)
    p50_ms: float | None
    p99_ms: float | None
    # The machine's CPU over the run, in seconds: all processes' user + system time, the part of
    # it that was neither the measured pooler, PostgreSQL nor pgbench ("others"), and steal.
    machine_busy: float | None = None
    others: float | None = None
    steal: float | None = None
    errors: list[str] = field(default_factory=list)  # first lines of pgbench's stderr trouble
    aborted_clients: int = 0  # clients pgbench reported as aborted
    error_lines: int = 0  # lines of pgbench's stderr that tell of errors (before dedup)
    error_kinds: list[str] = field(default_factory=list)  # distinct server error messages
    latencies_us: list[int] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.tps is not None and not self.errors

    @property
    def cpu(self) -> float | None:
        if self.cpu_user is None or self.cpu_sys is None:
            return None
        return self.cpu_user + self.cpu_sys

    @property
    def cpu_us_per_txn(self) -> float | None:
        cpu = self.cpu
        if cpu is None or not self.transactions:
            return None
        return cpu * 1e6 / self.transactions


def percentile(sorted_values: list[int], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[rank - 1])


def read_latencies(log_dir: Path) -> list[int]:
    """Per-transaction latencies in microseconds from pgbench's --log files (one per thread).

    Each line is `client_id transaction_no time script_no time_epoch time_us`, time being the
    transaction's latency in microseconds; failed transactions carry a word instead of a number.
    """
    out: list[int] = []
    for path in sorted(log_dir.glob("pgbench_log*")):
        with open(path, "rb") as f:
            for line in f:
                parts = line.split(maxsplit=3)
                if len(parts) >= 3 and parts[2].isdigit():
                    out.append(int(parts[2]))
    return out


ABORTED = re.compile(r"client (\d+) (?:script \d+ )?aborted")
ERROR_TEXT = re.compile(r"(?:ERROR|FATAL):\s+(.*)$")


def error_kinds(lines: list[str]) -> list[str]:
    """The distinct server error messages in pgbench's error lines."""
    kinds: list[str] = []
    for line in lines:
        m = ERROR_TEXT.search(line)
        text = m.group(1).strip() if m else ""
        if text and text not in kinds:
            kinds.append(text)
    return kinds


def trouble_lines(stderr: str) -> list[str]:
    """pgbench's stderr lines that tell of errors (progress and notices left out)."""
    keep: list[str] = []
    for line in stderr.splitlines():
        low = line.lower()
        if ("error" in low or "aborted" in low or "fatal" in low or "could not" in low
                or "failed" in low):
            keep.append(line.strip())
    return keep


def run_pgbench(bin_dir: Path, port: int, case: Case, duration: float, *, target: str,
                round_no: int, measure_pid: int | None, threads: int = 2,
                keep_latencies: bool = True, timeout_extra: float = 120,
                server_pid: int | None = None) -> Run:
    """Run pgbench with a per-transaction log in a temporary directory; return its Run."""
    log_dir = Path(tempfile.mkdtemp(prefix="pgbench-log-"))
    cmd = [str(bin_dir / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
           "-n", "-T", str(int(duration)), "-j", str(min(threads, case.clients)),
           *case.flags, "--log", f"--log-prefix={log_dir}/pgbench_log", "postgres"]
    snap0 = procstat.snapshot(measure_pid) if measure_pid else None
    mach0, pg0 = procstat.machine_cpu(), procstat.server_cpu(server_pid) if server_pid else 0.0
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False,
                           timeout=duration + timeout_extra)
        code, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as exc:
        code = -1
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = f"pgbench timed out after {duration + timeout_extra:.0f}s"
    wall = time.monotonic() - t0
    snap1 = procstat.snapshot(measure_pid) if measure_pid else None
    mach1, pg1 = procstat.machine_cpu(), procstat.server_cpu(server_pid) if server_pid else 0.0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pgbench_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    try:
        lat = sorted(read_latencies(log_dir))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    delta = None
    if snap0 is not None and snap1 is not None:
        delta = [b - a for a, b in zip(snap0, snap1, strict=True)]
    m_tps, m_n, m_f = TPS.search(out), PROCESSED.search(out), FAILED.search(out)
    all_trouble = trouble_lines(err)
    errors = list(dict.fromkeys(all_trouble))
    if code != 0 and not errors:
        errors = [f"pgbench exited with {code}"] + err.strip().splitlines()[-3:]
    aborted = len({m.group(1) for m in ABORTED.finditer(err)})
    return Run(
        aborted_clients=aborted, error_kinds=error_kinds(errors), error_lines=len(all_trouble),
        target=target, case=case.key, round=round_no, command=cmd, exit_code=code,
        tps=float(m_tps.group(1)) if m_tps else None,
        transactions=int(m_n.group(1)) if m_n else 0,
        failed=int(m_f.group(1)) if m_f else 0,
        wall=wall,
        cpu_user=delta[0] if delta else None, cpu_sys=delta[1] if delta else None,
        ctx_vol=int(delta[2]) if delta else None, ctx_invol=int(delta[3]) if delta else None,
        p50_ms=_ms(percentile(lat, 0.50)), p99_ms=_ms(percentile(lat, 0.99)),
        machine_busy=mach1[0] - mach0[0],
        others=None if server_pid is None else (
            (mach1[0] - mach0[0]) - (pg1 - pg0) - pgbench_cpu
            - (sum(delta[:2]) if delta else 0.0)),
        steal=mach1[2] - mach0[2],
        errors=errors,
        latencies_us=lat if keep_latencies else [],
    )


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def init_pgbench(bin_dir: Path, port: int, scale: int) -> None:
    cmd = [str(bin_dir / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
           "-i", "-q", "-s", str(scale), "postgres"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"pgbench -i failed:\n{r.stderr[-2000:]}")


def psql(bin_dir: Path, port: int, sql: str) -> str:
    cmd = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
           "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, "postgres"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {sql}\n{r.stderr[-2000:]}")
    return r.stdout.strip()
