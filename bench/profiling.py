"""Samples a running pgmux with py-spy and sums the samples by function.

py-spy's raw format is one line per distinct stack: `frame;frame;...;leaf COUNT`, each frame
`function (file:line)` (or `0xADDR (library)` for native code without symbols). Here a
function's *self* share is the samples where it is the leaf; its *total* share the samples
where it is anywhere on the stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
IDLE_LEAVES = ("epoll_wait", "epoll_pwait", "epoll_pwait2")
# Native leaves that are a system call's libc wrapper: a sample there is in the kernel (running
# the call, or preempted in it), not running pgmux's user-space code.
SYSCALL_LEAVES = IDLE_LEAVES + (
    "write", "read", "writev", "readv", "send", "recv", "sendto", "recvfrom", "sendmsg",
    "recvmsg", "accept4", "accept", "close", "shutdown", "setsockopt", "getsockopt",
    "epoll_ctl", "__GI___libc_write", "__GI___libc_read", "__libc_write", "__libc_read")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record_command(pid: int, seconds: float, out: Path, native: bool, rate: int) -> list[str]:
    exe = py_spy() or "py-spy"
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
           str(rate), "--format", "raw", "--output", str(out)]
    # NOTE: --native needs the process stopped for each sample; without it py-spy samples
    # without stopping it (--nonblocking) and the profile perturbs the run least.
    cmd += ["--native"] if native else ["--nonblocking"]
    return cmd


def record(pid: int, seconds: float, out: Path, native: bool, rate: int = 200) -> str:
    """Run py-spy; returns its stderr (empty on success)."""
    cmd = record_command(pid, seconds, out, native, rate)
    r = subprocess.run(cmd, capture_output=True, text=True, check=False,
                       timeout=seconds + 60)
    return "" if r.returncode == 0 else (r.stderr.strip() or f"py-spy exited {r.returncode}")


def frame_key(frame: str) -> str:
    """`function (file)`, without the line: samples of one function on several lines add up."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    name, file = m.group("name"), m.group("file")
    if name.startswith("0x"):
        return f"? ({file})"
    return f"{name} ({file})"


@dataclass
class Profile:
    samples: int = 0
    idle: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    total_counts: Counter[str] = field(default_factory=Counter)
    lines: Counter[str] = field(default_factory=Counter)  # leaf frames with line numbers
    # Native profiles only: samples outside system calls, by innermost Python frame (self) and
    # by every Python frame on the stack (total); samples in system calls, by call and caller.
    in_syscalls: int = 0
    user_self: Counter[str] = field(default_factory=Counter)
    user_total: Counter[str] = field(default_factory=Counter)
    syscall_callers: Counter[str] = field(default_factory=Counter)

    def top_self(self, n: int) -> list[tuple[str, int]]:
        return self.self_counts.most_common(n)

    def top_total(self, n: int, prefix: str = "pgmux/") -> list[tuple[str, int]]:
        out = [(k, c) for k, c in self.total_counts.most_common() if f"({prefix}" in k]
        return out[:n]


def parse_raw(path: Path) -> Profile:
    prof = Profile()
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        leaf_key = frame_key(leaf)
        prof.samples += count
        if leaf_key.split(" (")[0] in IDLE_LEAVES:
            prof.idle += count
        prof.self_counts[leaf_key] += count
        prof.lines[leaf.strip()] += count
        for key in {frame_key(f) for f in frames}:
            prof.total_counts[key] += count
        py = [f.strip() for f in frames if _is_python(f)]
        leaf_name = leaf_key.split(" (")[0]
        if leaf_name in SYSCALL_LEAVES:
            prof.in_syscalls += count
            if leaf_name not in IDLE_LEAVES:
                caller = py[-1] if py else "(no Python frame)"
                prof.syscall_callers[f"{leaf_name} <- {caller}"] += count
        else:
            inner = frame_key(py[-1]) if py else "(no Python frame)"
            # NOTE: native code under the innermost Python frame is charged to that frame
            prof.user_self[inner] += count
            for key in {frame_key(f) for f in py}:
                prof.user_total[key] += count
    return prof


def _is_python(frame: str) -> bool:
    m = FRAME.match(frame.strip())
    return bool(m) and (m.group("file").endswith(".py") or m.group("file").startswith("<frozen"))


# ---- perf: where the CPU goes, on-CPU samples only ---------------------------------------------
PERF_LINE = re.compile(r"^\s*([\d.]+)%\s+(.*?)\s*$")


def perf_record_command(pid: int, seconds: float, out: Path, freq: int = 999) -> list[str]:
    return ["perf", "record", "-F", str(freq), "-p", str(pid), "-o", str(out), "--",
            "sleep", str(int(seconds))]


def perf_record(pid: int, seconds: float, out: Path) -> str:
    """Sample pid's on-CPU time (user and kernel) with perf; returns an error text or ''."""
    if shutil.which("perf") is None:
        return "perf is not installed (apt-get install linux-perf)"
    r = subprocess.run(perf_record_command(pid, seconds, out), capture_output=True, text=True,
                       check=False, timeout=seconds + 60)
    if r.returncode != 0 or not out.exists():
        return r.stderr.strip()[-500:] or f"perf record exited {r.returncode}"
    return ""


def perf_report(data: Path, sort: str, limit: int) -> list[tuple[float, str]]:
    """perf report's rows for a --sort key: [(percent, what)], highest first."""
    r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "-q",
                        "--sort", sort], capture_output=True, text=True, check=False,
                       timeout=120)
    rows: list[tuple[float, str]] = []
    for line in r.stdout.splitlines():
        m = PERF_LINE.match(line)
        if m:
            rows.append((float(m.group(1)), " ".join(m.group(2).split())))
    return rows[:limit]
