#!/usr/bin/env python3
"""How close pgmux is to what any Python pooler can do here: PgBouncer, pgmux and a bare
pass-through pooler (bench/bare_pooler.py, same asyncio.Protocol + uvloop base, no features)
side by side in one run, in alternation, each round in a rotated order.

    .venv/bin/python bench/ceiling.py                      # -S simple at 16 and 64 clients
    .venv/bin/python bench/ceiling.py --cases S-simple-64,S-simple-16-C --rounds 4

Prints a Markdown table: tps, each pooler / PgBouncer, and each pooler's CPU per transaction
split into user and system time. Needs what bench/run.py needs (see bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pgbench import Case, Run, init_pgbench, run_pgbench  # noqa: E402
from targets import Bench, Target, wait_port  # noqa: E402

from pgmux.embedded import free_port  # noqa: E402

NAMES = ("pgbouncer", "pgmux", "bare")
LABELS = {"pgbouncer": "PgBouncer", "pgmux": "pgmux", "bare": "bare pooler"}


def parse_case(key: str) -> Case:
    parts = key.split("-")
    return Case(parts[0], parts[1], int(parts[2]), connect=len(parts) > 3 and parts[3] == "C")


def start_bare(bench: Bench, pg_port: int) -> Target:
    port = free_port()
    log = bench.workdir / "bare.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / "bare_pooler.py"), str(pg_port),
                                 str(port), "16"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, proc, log)
    t = Target("bare", "bare pooler", port, proc.pid, log, proc)
    bench.targets["bare"] = t
    return t


def per_txn_us(seconds: float | None, run: Run) -> float:
    return 1e6 * (seconds or 0.0) / run.transactions if run.transactions else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="S-simple-16,S-simple-64",
                    help="row keys as in bench/run.py (S-simple-64, S-simple-16-C, ...)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pgmux-ceiling-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    bench = Bench(workdir, 300)
    t0 = time.monotonic()
    try:
        pg = bench.start_postgres()
        init_pgbench(bench.bin_dir, pg.port, 10)
        bench.start_pgbouncer()
        bench.start_pgmux()
        start_bare(bench, pg.port)
        for name in NAMES:
            run_pgbench(bench.bin_dir, bench.targets[name].port, Case("S", "simple", 16), 2,
                        target=name, round_no=-1, measure_pid=None, keep_latencies=False)
        rows: list[str] = []
        for key in args.cases.split(","):
            case = parse_case(key)
            runs: dict[str, list[Run]] = {n: [] for n in NAMES}
            for rnd in range(args.rounds):
                order = NAMES[rnd % 3:] + NAMES[:rnd % 3]
                for name in order:
                    t = bench.targets[name]
                    r = run_pgbench(bench.bin_dir, t.port, case, args.duration, target=name,
                                    round_no=rnd, measure_pid=t.pid, keep_latencies=False)
                    runs[name].append(r)
                    print(f"{case.label:<24} {name:<10} round {rnd + 1}: tps {r.tps or 0:8.0f}"
                          f"  user {per_txn_us(r.cpu_user, r):5.1f} us/txn"
                          f"  sys {per_txn_us(r.cpu_sys, r):5.1f} us/txn"
                          + (f"  ERRORS {r.errors[0]}" if r.errors else ""), flush=True)
            tps = {n: sum(r.tps or 0 for r in rs) / len(rs) for n, rs in runs.items()}
            for name in NAMES:
                rs = runs[name]
                user = sum(per_txn_us(r.cpu_user, r) for r in rs) / len(rs)
                sys_ = sum(per_txn_us(r.cpu_sys, r) for r in rs) / len(rs)
                ratio = tps[name] / tps["pgbouncer"] if tps["pgbouncer"] else 0.0
                rows.append(f"| `{case.label}` | {LABELS[name]} | {tps[name]:.0f} | "
                            f"{ratio:.2f} | {user:.1f} | {sys_:.1f} |")
        print()
        print(f"`bench/ceiling.py --cases {args.cases} --duration {args.duration:g} "
              f"--rounds {args.rounds}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},"
              f" {os.cpu_count()} cores, {(time.monotonic() - t0) / 60:.1f} min")
        print()
        print("| row (pgbench ...) | pooler | tps | / PgBouncer | user µs/txn | system µs/txn |")
        print("|---|---|---:|---:|---:|---:|")
        print("\n".join(rows))
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
