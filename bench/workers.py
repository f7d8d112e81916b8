#!/usr/bin/env python3
"""pgmux with workers = 1, 2 and auto against PgBouncer (one process, and two so_reuseport
processes with their doubled budget) in one alternating run: how far pgmux scales past one
core here, and what each target spends per transaction (all its processes summed).

    .venv/bin/python bench/workers.py                       # -S simple at 64 clients, 2 rounds
    .venv/bin/python bench/workers.py --cases S-simple-64,S-simple-16-C --rounds 3

Every target gets the same settings (bench/targets.py: transaction mode, pool 16); the
two-PgBouncer target gets pool 16 in each process, 32 server connections in all, since its
processes cannot share a budget. Prints a Markdown table. Needs what bench/run.py needs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import procstat  # noqa: E402
import sidebyside  # noqa: E402
from pgbench import Case, run_pgbench  # noqa: E402
from targets import Bench, interrupt, render_ini, wait_port  # noqa: E402

from pgmux.embedded import free_port  # noqa: E402


@dataclass
class Group:
    """One target: one port, one or more processes (each measured with its descendants)."""

    key: str
    label: str
    port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: int = 16

    def cpu(self) -> tuple[float, float]:
        user = system = 0.0
        for p in self.procs:
            u, s, _, _ = procstat.snapshot(p.pid)
            user, system = user + u, system + s
        return user, system

    def stop(self) -> None:
        for p in self.procs:
            interrupt(p)


def _files(bench: Bench, name: str, port: int, extra: str = "") -> tuple[Path, Path]:
    assert bench.pg is not None
    d = bench.workdir / name
    sock = d / "sock"
    sock.mkdir(parents=True, mode=0o755)
    auth = d / "userlist.txt"
    auth.write_text('"postgres" ""\n')
    ini = d / "pgbouncer.ini"
    ini.write_text(render_ini(bench.pg.port, port, sock, auth) + extra)
    if os.geteuid() == 0:
        uid, gid = bench._uid or 0, bench._gid or 0
        for p in (d, sock, auth, ini):
            os.chown(p, uid, gid)
    return ini, d


def _spawn(bench: Bench, cmd: list[str], d: Path, port: int,
           env: dict[str, str] | None = None, as_user: bool = True) -> subprocess.Popen[bytes]:
    kwargs: dict[str, Any] = {}
    # NOTE: PgBouncer refuses to run as root; pgmux runs as bench/targets.py runs it.
    if bench._uid is not None and as_user:
        kwargs = {"user": bench._uid, "group": bench._gid, "extra_groups": []}
    log = d / "stderr.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=d, start_new_session=True,
                                env=env, **kwargs)
    wait_port(port, proc, log)
    return proc


def pgbouncers(bench: Bench, count: int) -> Group:
    exe = shutil.which("pgbouncer")
    if exe is None:
        raise RuntimeError("pgbouncer is not installed: apt-get install -y pgbouncer")
    port = free_port()
    key = "pgbouncer" if count == 1 else f"pgbouncer-x{count}"
    label = "PgBouncer" if count == 1 else f"PgBouncer x{count} (so_reuseport)"
    group = Group(key, label, port, servers=16 * count)
    for i in range(count):
        extra = "so_reuseport = 1\n" if count > 1 else ""
        # NOTE: [pgbouncer] is the ini's last section, so the line lands in it.
        ini, d = _files(bench, f"{key}-{i}", port, extra)
        group.procs.append(_spawn(bench, [exe, str(ini)], d, port))
    return group


def pgmux(bench: Bench, workers: str) -> Group:
    port = free_port()
    key = f"pgmux-w{workers}"
    ini, d = _files(bench, key, port, f"\n[pgmux]\nworkers = {workers}\n")
    env = dict(os.environ)
    proc = _spawn(bench, [sys.executable, "-m", "pgmux", "serve", str(ini)], d, port, env,
                  as_user=False)
    time.sleep(1.0)  # NOTE: the workers come up after the supervisor binds the port
    return Group(key, f"pgmux workers = {workers}", port, [proc])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sidebyside.add_args(ap, cases="S-simple-64", rounds=2)
    ap.add_argument("--targets", default="pgbouncer,pgbouncer-x2,pgmux-w1,pgmux-w2,pgmux-wauto",
                    help="which targets, the first one being the reference")
    args = ap.parse_args(argv)
    makers = {"pgbouncer": (pgbouncers, 1), "pgbouncer-x2": (pgbouncers, 2),
              "pgmux-w1": (pgmux, "1"), "pgmux-w2": (pgmux, "2"),
              "pgmux-wauto": (pgmux, "auto")}
    t0 = time.monotonic()
    bench = sidebyside.start("pgmux-workers-")
    bench.targets.pop("pgbouncer").stop()   # NOTE: started by sidebyside.start; ours below
    groups: list[Group] = []
    try:
        for name in args.targets.split(","):
            start, arg = makers[name]
            groups.append(start(bench, arg))  # type: ignore[operator]
        rows = compare(bench, groups, args)
        cores = len(os.sched_getaffinity(0))
        print()
        print(f"`bench/workers.py --cases {args.cases} --duration {args.duration:g} "
              f"--rounds {args.rounds}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{cores} cores (workers = auto is {cores} here), "
              f"{(time.monotonic() - t0) / 60:.1f} min")
        print()
        print(f"| row (pgbench ...) | pooler | server connections | tps | / {groups[0].label} | "
              "CPU µs/txn (user + system, all its processes) | CPU cores busy |")
        print("|---|---|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    finally:
        for g in groups:
            g.stop()
        bench.close()
    return 0


def compare(bench: Bench, groups: list[Group], args: argparse.Namespace) -> list[str]:
    for g in groups:   # warm-up: pools filled, workers up
        run_pgbench(bench.bin_dir, g.port, Case("S", "simple", 16), 2, target=g.key,
                    round_no=-1, measure_pid=None, keep_latencies=False)
    rows: list[str] = []
    for key in args.cases.split(","):
        case = sidebyside.parse_case(key)
        tps: dict[str, list[float]] = {g.key: [] for g in groups}
        cpu: dict[str, list[float]] = {g.key: [] for g in groups}
        busy: dict[str, list[float]] = {g.key: [] for g in groups}
        for rnd in range(args.rounds):
            shift = rnd % len(groups)
            for g in groups[shift:] + groups[:shift]:
                u0, s0 = g.cpu()
                r = run_pgbench(bench.bin_dir, g.port, case, args.duration, target=g.key,
                                round_no=rnd, measure_pid=None, keep_latencies=False)
                u1, s1 = g.cpu()
                used = (u1 - u0) + (s1 - s0)
                tps[g.key].append(r.tps or 0.0)
                cpu[g.key].append(1e6 * used / r.transactions if r.transactions else 0.0)
                busy[g.key].append(used / r.wall if r.wall else 0.0)
                print(f"{case.label:<24} {g.label:<34} round {rnd + 1}: tps {r.tps or 0:8.0f}"
                      f"  cpu {cpu[g.key][-1]:6.1f} us/txn  cores {busy[g.key][-1]:.2f}"
                      + (f"  ERRORS {r.errors[0]}" if r.errors else ""), flush=True)
        base = sum(tps[groups[0].key]) / len(tps[groups[0].key])
        for g in groups:
            mean = sum(tps[g.key]) / len(tps[g.key])
            rows.append(f"| `{case.label}` | {g.label} | {g.servers} | {mean:.0f} | "
                        f"{mean / base if base else 0:.2f} | "
                        f"{sum(cpu[g.key]) / len(cpu[g.key]):.1f} | "
                        f"{sum(busy[g.key]) / len(busy[g.key]):.2f} |")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
