"""Pooler memory with many idle clients: RSS before, with the clients held, and after they left."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import procstat

HERE = Path(__file__).resolve().parent


@dataclass
class IdleMemory:
    target: str
    clients: int
    opened: int
    failed: int
    open_seconds: float
    rss_before_kib: int
    rss_held_kib: int
    rss_after_kib: int
    first_error: str

    @property
    def kib_per_client(self) -> float | None:
        if not self.opened:
            return None
        return (self.rss_held_kib - self.rss_before_kib) / self.opened


def measure_idle_clients(target: str, port: int, pid: int, count: int,
                         timeout: float = 300) -> IdleMemory:
    time.sleep(1.0)
    before = procstat.tree_rss_kib(pid)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "idle_clients.py"), "127.0.0.1", str(port), str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = _readline(proc, timeout)
        parts = line.split(maxsplit=4)
        if len(parts) < 4 or parts[0] != "READY":
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise RuntimeError(f"idle client process said {line!r} {err[-2000:]}")
        opened, failed, took = int(parts[1]), int(parts[2]), float(parts[3])
        first_error = parts[4].strip() if len(parts) > 4 else ""
        time.sleep(2.0)  # NOTE: let the pooler finish whatever it does for new clients
        held = procstat.tree_rss_kib(pid)
        proc.stdin.write("close\n")
        proc.stdin.flush()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(2.0)
    after = procstat.tree_rss_kib(pid)
    return IdleMemory(target, count, opened, failed, took, before, held, after, first_error)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"idle clients not open after {timeout:.0f}s")
    finally:
        sel.close()
    return proc.stdout.readline()
