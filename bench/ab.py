#!/usr/bin/env python3
"""pgmux at two commits, and PgBouncer, side by side in one run: did a change make pgmux
faster? Each round runs them all in a rotated order, so drift hits all of them.

    .venv/bin/python bench/ab.py --base 2ba0d6e                  # base commit vs the work tree
    .venv/bin/python bench/ab.py --base HEAD~3 --cases S-simple-64,S-extended-64 --rounds 5
    .venv/bin/python bench/ab.py --base HEAD~1 --build compiled  # only the compiled builds

The base is checked out with `git worktree` into a temporary directory and run with its own
`src/` first on PYTHONPATH (the same venv, so the same dependencies). Each side runs in each
build `--build` asks for (both by default): compiled (the work tree's install; the base is
compiled in place with its own setup.py and the venv's mypyc, if it has one) and pure Python
(PGMUX_PURE=1). Prints a Markdown table: tps, each / PgBouncer, CPU per transaction split into
user and system time, and involuntary context switches per transaction. Needs what
bench/run.py needs (see bench/README.md).
"""

from __future__ import annotations

import argparse
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


def compile_in_place(tree: Path) -> None:
    """Compile the base's hot modules beside its sources, as an editable install would (its
    setup.py, the venv's mypyc); a base without setup.py has no compiled build."""
    if not (tree / "setup.py").exists():
        print("note: the base has no setup.py: it runs pure Python only", flush=True)
        return
    print("compiling the base with mypyc ...", flush=True)
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                       capture_output=True, text=True, check=False)
    if r.returncode:
        print(f"note: compiling the base failed:\n{r.stderr[-2000:]}", flush=True)


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
    if args.build != "pure":
        compile_in_place(tree)
    bench = sidebyside.start("pgmux-ab-")
    try:
        labels = {"pgbouncer": "PgBouncer"}
        labels |= sidebyside.start_builds(bench, args, "base", f"pgmux {base_rev}",
                                          tree / "src")
        labels |= sidebyside.start_builds(bench, args, "work", f"pgmux {work_rev} + work tree")
        rows = sidebyside.compare(bench, labels, args)
        sidebyside.print_table(f"bench/ab.py --base {args.base} --cases {args.cases} "
                               f"--duration {args.duration:g} --rounds {args.rounds} "
                               f"--build {args.build}", t0, rows)
    finally:
        bench.close()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
