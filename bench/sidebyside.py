"""Shared by bench/ceiling.py and bench/ab.py: a PostgreSQL and PgBouncer to compare against,
pgmux in its builds (compiled, pure Python), then pgbench against several poolers in rotated
rounds, summed up as a Markdown table."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pgbench import Case, Run, init_pgbench, run_pgbench
from targets import Bench

COMPILED, PURE = "compiled (mypyc)", "pure Python"  # as pgmux.build_kind() says


def add_args(ap: argparse.ArgumentParser, cases: str, rounds: int) -> None:
    ap.add_argument("--cases", default=cases,
                    help="row keys as in bench/run.py (S-simple-64, S-simple-16-C, ...)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--build", choices=("both", "compiled", "pure"), default="both",
                    help="pgmux's builds to run: the installed compiled build and the same "
                    "install's pure Python (PGMUX_PURE=1), or one of them (both)")


def short_build(build: str) -> str:
    return {COMPILED: "compiled", PURE: "pure"}.get(build, build)


def start_builds(bench: Bench, args: argparse.Namespace, name: str = "pgmux",
                 label: str = "pgmux", src: Path | None = None) -> dict[str, str]:
    """Start pgmux in each build args.build asks for, as targets `name` (the installed build)
    and `name`-pure; returns target -> label. When no compiled build is there, says so and
    runs the pure one once."""
    labels: dict[str, str] = {}
    for pure in {"both": (False, True), "compiled": (False,), "pure": (True,)}[args.build]:
        tname = f"{name}-pure" if pure else name
        t = bench.start_pgmux(name=tname, pure=pure, src=src)
        if not pure and t.build != COMPILED:
            print(f"note: {label} runs {t.build}: no compiled build there", flush=True)
            if args.build == "both":
                t.stop()
                del bench.targets[tname]
                continue
        labels[tname] = f"{label}, {short_build(t.build)}"
    return labels


def parse_case(key: str) -> Case:
    parts = key.split("-")
    return Case(parts[0], parts[1], int(parts[2]), connect=len(parts) > 3 and parts[3] == "C")


def per_txn_us(seconds: float | None, run: Run) -> float:
    return 1e6 * (seconds or 0.0) / run.transactions if run.transactions else 0.0


def start(prefix: str) -> Bench:
    """A work directory, the embedded PostgreSQL with pgbench's tables, and PgBouncer."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(workdir, 0o755)
    bench = Bench(workdir, 300)
    pg = bench.start_postgres()
    init_pgbench(bench.bin_dir, pg.port, 10)
    bench.start_pgbouncer()
    return bench


def compare(bench: Bench, labels: dict[str, str], args: argparse.Namespace) -> list[str]:
    """Run every case against every target in `labels` (PgBouncer first), each round in a
    rotated order; print each run, return the table rows."""
    names = tuple(labels)
    for name in names:
        run_pgbench(bench.bin_dir, bench.targets[name].port, Case("S", "simple", 16), 2,
                    target=name, round_no=-1, measure_pid=None, keep_latencies=False)
    rows: list[str] = []
    for key in args.cases.split(","):
        case = parse_case(key)
        runs: dict[str, list[Run]] = {n: [] for n in names}
        for rnd in range(args.rounds):
            shift = rnd % len(names)
            for name in names[shift:] + names[:shift]:
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
        for name in names:
            rs = runs[name]
            user = sum(per_txn_us(r.cpu_user, r) for r in rs) / len(rs)
            sys_ = sum(per_txn_us(r.cpu_sys, r) for r in rs) / len(rs)
            inv = sum((r.ctx_invol or 0) / r.transactions for r in rs if r.transactions) \
                / len(rs)
            ratio = tps[name] / tps[names[0]] if tps[names[0]] else 0.0
            rows.append(f"| `{case.label}` | {labels[name]} | {tps[name]:.0f} | {ratio:.2f} | "
                        f"{user:.1f} | {sys_:.1f} | {inv:.2f} |")
    return rows


def print_table(command: str, started: float, rows: list[str]) -> None:
    print()
    print(f"`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, {(time.monotonic() - started) / 60:.1f} min")
    print()
    print("| row (pgbench ...) | pooler | tps | / PgBouncer | user µs/txn | system µs/txn "
          "| involuntary switches/txn |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
