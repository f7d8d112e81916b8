"""Counts a pooler's system calls per transaction with `perf stat` on syscall tracepoints.

Counting tracepoints costs each system call a little, so this runs in its own short pgbench
runs, apart from the timed ones.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgbench import Case, run_pgbench
from targets import interrupt

TOTAL = "raw_syscalls:sys_enter"
NAMES = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
         "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "accept4", "accept",
         "close", "shutdown", "setsockopt", "getsockopt", "getsockname", "getpeername", "fcntl",
         "ioctl", "futex", "poll", "ppoll", "socket", "connect")
TRACING = (Path("/sys/kernel/tracing/events/syscalls"),
           Path("/sys/kernel/debug/tracing/events/syscalls"))


@dataclass
class Census:
    target: str
    case: str
    transactions: int
    counts: dict[str, int] = field(default_factory=dict)  # syscall name -> count ("total")
    error: str = ""

    def per_txn(self, name: str) -> float | None:
        if not self.transactions or name not in self.counts:
            return None
        return self.counts[name] / self.transactions


def available() -> str | None:
    """None when perf can count syscall tracepoints here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (apt-get install linux-perf)"
    if not any(d.is_dir() for d in TRACING):
        return "no syscall tracepoints under /sys/kernel/tracing"
    return None


def _events() -> list[str]:
    base = next((d for d in TRACING if d.is_dir()), None)
    names = [n for n in NAMES if base is not None and (base / f"sys_enter_{n}").is_dir()]
    return [TOTAL] + [f"syscalls:sys_enter_{n}" for n in names]


def census(target: str, pid: int, bin_dir: Path, port: int, case: Case,
           seconds: float) -> Census:
    out = Path(tempfile.mkstemp(prefix="perf-stat-", suffix=".csv")[1])
    cmd = ["perf", "stat", "-x", ",", "-e", ",".join(_events()), "-p", str(pid), "-o", str(out)]
    perf = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        if perf.poll() is not None:
            err = perf.stderr.read() if perf.stderr else ""
            return Census(target, case.key, 0, error=f"perf stat exited: {err.strip()[-300:]}")
        r = run_pgbench(bin_dir, port, case, seconds, target=target, round_no=0,
                        measure_pid=None, keep_latencies=False)
    finally:
        interrupt(perf)
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) < 3 or line.startswith("#") or not parts[0].isdigit():
            continue
        name = parts[2]
        name = "total" if name == TOTAL else name.rsplit("sys_enter_", 1)[-1]
        counts[name] = int(parts[0])
    out.unlink(missing_ok=True)
    c = Census(target, case.key, r.transactions, counts)
    if r.errors:
        c.error = r.errors[0]
    return c
