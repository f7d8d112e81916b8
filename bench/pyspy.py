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
    return prof
