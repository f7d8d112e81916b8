#!/usr/bin/env python3
"""How close pgmux is to what any Python pooler can do here: PgBouncer, pgmux (compiled and
pure Python) and a bare pass-through pooler (bench/bare_pooler.py, same asyncio.Protocol +
uvloop base, no features) side by side in one run, in alternation, each round in a rotated
order.

    .venv/bin/python bench/ceiling.py                      # -S simple at 16 and 64 clients
    .venv/bin/python bench/ceiling.py --cases S-simple-64,S-simple-16-C --rounds 4

Prints a Markdown table: tps, each pooler / PgBouncer, each pooler's CPU per transaction split
into user and system time, and its involuntary context switches per transaction. Needs what
bench/run.py needs (see bench/README.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sidebyside  # noqa: E402
from targets import Bench, Target, wait_port  # noqa: E402

from pgmux.embedded import free_port  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sidebyside.add_args(ap, cases="S-simple-16,S-simple-64", rounds=3)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    bench = sidebyside.start("pgmux-ceiling-")
    try:
        labels = {"pgbouncer": "PgBouncer"} | sidebyside.start_builds(bench, args)
        assert bench.pg is not None
        start_bare(bench, bench.pg.port)
        labels["bare"] = "bare pooler"
        rows = sidebyside.compare(bench, labels, args)
        sidebyside.print_table(f"bench/ceiling.py --cases {args.cases} --duration "
                               f"{args.duration:g} --rounds {args.rounds} --build {args.build}",
                               t0, rows)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
