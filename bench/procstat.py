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



def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of pid in seconds; zeros if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of pid's threads."""
    vol = invol = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0, 0
    for task in tasks:
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return vol, invol


def snapshot(pid: int) -> tuple[float, float, int, int]:
    """(user CPU s, system CPU s, voluntary, involuntary context switches) of pid and its
    descendants."""
    user = system = 0.0
    vol = invol = 0
    for p in tree(pid):
        u, s_ = cpu_split(p)
        v, i = context_switches(p)
        user, system, vol, invol = user + u, system + s_, vol + v, invol + i
    return user, system, vol, invol


def machine_cpu() -> tuple[float, float, float]:
    """Whole machine since boot, in seconds: (busy, irq + softirq, steal).

    busy is user + nice + system + irq + softirq: with tick-based accounting a tick spent in
    (soft)irq context is counted in /proc/stat's irq columns and in the interrupted task's
    stime as well, so the tasks' times add up to this sum, not to user + nice + system.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) / CLK_TCK for x in fields] + [0.0] * 10
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq, irq + softirq, steal


def children_cutime(pid: int) -> float:
    """CPU of pid's children that exited and were reaped (cutime + cstime), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def server_cpu(postmaster: int) -> float:
    """CPU of a PostgreSQL server: the postmaster, its live children, its reaped children."""
    return tree_cpu_seconds(postmaster) + children_cutime(postmaster)
