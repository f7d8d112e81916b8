"""Reads a process's CPU time and memory from /proc (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Direct children of pid, over all its threads."""
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        out += [int(x) for x in text.split()]
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid (all threads), in seconds; 0.0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # NOTE: the command name (field 2) may hold spaces; fields after it are split at ')'.
    fields = text[text.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree(pid))


def rss_kib(pid: int) -> int:
    """Resident set size of pid in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += rss_kib(p)
        except OSError:
            pass
    return total


def syscalls(pid: int) -> int:
    """Read plus write system calls pid has made (syscr + syscw of /proc/PID/io): the socket
    reads, recvs, writes and sends, but not epoll or accept."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith(("syscr:", "syscw:")):
                total += int(line.split()[1])
    except OSError:
        return 0
    return total


def context_switches(pid: int) -> int:
    """Voluntary plus involuntary context switches of pid's threads."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def snapshot(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, read+write syscalls, context switches) of pid and its descendants."""
    pids = tree(pid)
    return (sum(cpu_seconds(p) for p in pids), sum(syscalls(p) for p in pids),
            sum(context_switches(p) for p in pids))
