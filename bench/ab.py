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

import sidebyside  # noqa: E402


def short_rev(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                          capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the commit to compare the work tree with")
    sidebyside.add_args(ap, cases="S-simple-64", rounds=4)
    args = ap.parse_args(argv)
    base_rev, work_rev = short_rev(args.base), short_rev("HEAD")
    tree = Path(tempfile.mkdtemp(prefix="pgmux-ab-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree),
                    base_rev], check=True)
    t0 = time.monotonic()
    bench = sidebyside.start("pgmux-ab-")
    try:
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
        labels = {"pgbouncer": "PgBouncer", "base": f"pgmux {base_rev}",
                  "work": f"pgmux {work_rev} + work tree"}
        rows = sidebyside.compare(bench, labels, args)
        sidebyside.print_table(f"bench/ab.py --base {args.base} --cases {args.cases} "
                               f"--duration {args.duration:g} --rounds {args.rounds}", t0, rows)
    finally:
        bench.close()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
