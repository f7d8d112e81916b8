#!/usr/bin/env python3
"""pgmux at two commits, and PgBouncer, side by side in one run: did a change make pgmux
faster? Each round runs the three in a rotated order, so drift hits all of them.

    .venv/bin/python bench/ab.py --base 2ba0d6e                  # base commit vs the work tree
    .venv/bin/python bench/ab.py --base HEAD~3 --cases S-simple-64,S-extended-64 --rounds 5

The base is checked out with `git worktree` into a temporary directory and run with its own
`src/` first on PYTHONPATH (the same venv, so the same dependencies). Prints a Markdown table:
tps, each / PgBouncer, CPU per transaction split into user and system time, and involuntary
context switches per transaction. Needs what bench/run.py needs (see bench/README.md).
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
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from ceiling import parse_case, per_txn_us  # noqa: E402
from pgbench import Case, Run, init_pgbench, run_pgbench  # noqa: E402
from targets import Bench  # noqa: E402

NAMES = ("pgbouncer", "base", "work")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the commit to compare the work tree with")
    ap.add_argument("--cases", default="S-simple-64",
                    help="row keys as in bench/run.py (S-simple-64, S-simple-16-C, ...)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    base_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
                              capture_output=True, text=True, check=True).stdout.strip()
    work_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix="pgmux-ab-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree),
                    base_rev], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="pgmux-ab-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    bench = Bench(workdir, 300)
    t0 = time.monotonic()
    try:
        pg = bench.start_postgres()
        init_pgbench(bench.bin_dir, pg.port, 10)
        bench.start_pgbouncer()
        bench.targets["work"] = bench.start_pgmux()
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(tree / "src") + (os.pathsep + saved if saved else "")
        try:
            bench.targets["base"] = bench.start_pgmux()
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
        for name in NAMES:
            run_pgbench(bench.bin_dir, bench.targets[name].port, Case("S", "simple", 16), 2,
                        target=name, round_no=-1, measure_pid=None, keep_latencies=False)
        rows: list[str] = []
        for key in args.cases.split(","):
            case = parse_case(key)
            runs: dict[str, list[Run]] = {n: [] for n in NAMES}
            for rnd in range(args.rounds):
                for name in NAMES[rnd % 3:] + NAMES[:rnd % 3]:
                    t = bench.targets[name]
                    r = run_pgbench(bench.bin_dir, t.port, case, args.duration, target=name,
                                    round_no=rnd, measure_pid=t.pid, keep_latencies=False)
                    runs[name].append(r)
                    inv = (r.ctx_invol or 0) / r.transactions if r.transactions else 0.0
                    print(f"{case.label:<24} {name:<10} round {rnd + 1}: tps {r.tps or 0:8.0f}"
                          f"  user {per_txn_us(r.cpu_user, r):5.1f}"
                          f"  sys {per_txn_us(r.cpu_sys, r):5.1f} us/txn  invol {inv:.2f}"
                          + (f"  ERRORS {r.errors[0]}" if r.errors else ""), flush=True)
            tps = {n: sum(r.tps or 0 for r in rs) / len(rs) for n, rs in runs.items()}
            for name in NAMES:
                rs = runs[name]
                label = {"pgbouncer": "PgBouncer", "base": f"pgmux {base_rev}",
                         "work": f"pgmux {work_rev} + work tree"}[name]
                user = sum(per_txn_us(r.cpu_user, r) for r in rs) / len(rs)
                sys_ = sum(per_txn_us(r.cpu_sys, r) for r in rs) / len(rs)
                inv = sum((r.ctx_invol or 0) / r.transactions for r in rs if r.transactions) \
                    / len(rs)
                ratio = tps[name] / tps["pgbouncer"] if tps["pgbouncer"] else 0.0
                rows.append(f"| `{case.label}` | {label} | {tps[name]:.0f} | {ratio:.2f} | "
                            f"{user:.1f} | {sys_:.1f} | {inv:.2f} |")
        print()
        print(f"`bench/ab.py --base {args.base} --cases {args.cases} --duration "
              f"{args.duration:g} --rounds {args.rounds}`, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
              f"{(time.monotonic() - t0) / 60:.1f} min")
        print()
        print("| row (pgbench ...) | pooler | tps | / PgBouncer | user µs/txn | system µs/txn "
              "| involuntary switches/txn |")
        print("|---|---|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    finally:
        bench.close()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
