#!/usr/bin/env python3
"""pgmux and PgBouncer side by side, on one machine, in one run.

Starts the embedded PostgreSQL, PgBouncer (Debian's package) and pgmux in its two builds
(compiled with mypyc, and the same install's pure Python with PGMUX_PURE=1), all from the same
pgbouncer.ini settings (transaction mode, pool 16), runs pgbench against each in alternation
(each round in a rotated order, so drift hits all of them), profiles compiled pgmux with
py-spy, measures pgmux's and PgBouncer's memory with many idle clients, and writes
docs/BENCHMARKS.md (and the profile into docs/PERFORMANCE.md).

    .venv/bin/python bench/run.py            # the full run (about 10 minutes)
    .venv/bin/python bench/run.py --quick    # a smoke run (2-3 minutes)

Needs: Linux, root or a user that can read /proc of the poolers, `apt-get install pgbouncer`,
and `pip install py-spy` in the venv for the profile (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import memory  # noqa: E402
import profiling  # noqa: E402
import report  # noqa: E402
import report_profile  # noqa: E402
import syscalls  # noqa: E402
from pgbench import Case, Run, init_pgbench, psql, run_pgbench  # noqa: E402
from sidebyside import COMPILED  # noqa: E402
from summary import Summary, summarize  # noqa: E402
from targets import TROUBLE, Bench, Target, versions  # noqa: E402

# NOTE: the pair the profile, system call count and memory test compare; the timed rows also
# run "pgmux-pure" (the same install's pure Python) when the compiled build is there.
POOLERS = ("pgmux", "pgbouncer")
POOL_SIZE = 16
CORES = os.cpu_count() or 1


def all_cases() -> list[Case]:
    cases = [Case("S", proto, c) for proto in ("simple", "extended", "prepared")
             for c in (16, 64, 256)]
    cases.append(Case("N", "simple", 64))
    cases.append(Case("S", "simple", 16, connect=True))
    return cases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3 s per run, 1 round, 1,000 idle clients, 3 s profile")
    p.add_argument("--duration", type=float, help="seconds per pgbench run (10; quick: 3)")
    p.add_argument("--rounds", type=int, help="runs per pooler and row (2; quick: 1)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale (10)")
    p.add_argument("--idle-clients", type=int, help="idle clients for memory (10000; quick: 1000)")
    p.add_argument("--profile-seconds", type=float, help="py-spy seconds per profile (10; quick 3)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    p.add_argument("--no-memory", action="store_true", help="skip the idle-clients memory test")
    p.add_argument("--no-syscalls", action="store_true",
                   help="skip counting system calls per transaction with perf")
    p.add_argument("--cases", help="comma-separated row keys to run (e.g. S-simple-64,N-simple-64)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"),
                   help="pgmux's event loop (default: its own choice, uvloop when installed)")
    p.add_argument("--build", choices=("both", "compiled", "pure"), default="both",
                   help="pgmux's builds in the timed rows: the installed compiled build and its "
                   "pure Python (PGMUX_PURE=1), or one of them as 'pgmux' (both)")
    p.add_argument("--max-connections", type=int, default=300,
                   help="PostgreSQL max_connections (300); direct rows above it are skipped")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--perf-out", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    p.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    args = p.parse_args(argv)
    q = args.quick
    args.duration = args.duration or (3.0 if q else 10.0)
    args.rounds = args.rounds or (1 if q else 2)
    args.idle_clients = args.idle_clients or (1000 if q else 10000)
    args.profile_seconds = args.profile_seconds or (3.0 if q else 10.0)
    args.argv = sys.argv[1:] if argv is None else argv
    return args


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit, for us and the poolers we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        workdir = Path(tempfile.mkdtemp(prefix="pgmux-bench-", dir="/tmp"))
        os.chmod(workdir, 0o755)  # NOTE: PgBouncer runs as an unprivileged user
        self.workdir = workdir
        self.bench = Bench(workdir, args.max_connections)
        self.summaries: list[Summary] = []
        self.poolers: list[str] = list(POOLERS)  # the timed rows' poolers, set by start()
        self.log_trouble: dict[str, list[str]] = {t: [] for t in (*POOLERS, "pgmux-pure")}
        self.crashes: list[str] = []
        self.profile: dict[str, Any] = {}
        self.memory: list[memory.IdleMemory] = []
        self.memory_errors: list[str] = []
        self.env: dict[str, Any] = {}
        self.census: list[syscalls.Census] = []

    # ---- set-up -----------------------------------------------------------------------------
    def start(self) -> None:
        b = self.bench
        pg = b.start_postgres()
        say(f"PostgreSQL {pg.version} on port {pg.port} (max_connections "
            f"{self.args.max_connections}); pgbench -i -s {self.args.scale}")
        init_pgbench(b.bin_dir, pg.port, self.args.scale)
        psql(b.bin_dir, pg.port, "VACUUM ANALYZE")
        bouncer = b.start_pgbouncer()
        mux = self.start_pgmux("pgmux")
        say(f"PgBouncer pid {bouncer.pid} port {bouncer.port}; "
            f"pgmux, {mux.build}, pid {mux.pid} port {mux.port}")
        if self.args.build == "both" and mux.build == COMPILED:
            pure = self.start_pgmux("pgmux-pure")
            say(f"pgmux pure, {pure.build}, pid {pure.pid} port {pure.port}")
            self.poolers = ["pgmux", "pgmux-pure", "pgbouncer"]
        elif self.args.build == "both":
            say(f"!! pgmux runs {mux.build}: no compiled build installed, so no pure twin")
        for name in (*self.poolers, "direct"):
            t = b.targets[name]
            run_pgbench(b.bin_dir, t.port, Case("S", "simple", POOL_SIZE), 2, target=name,
                        round_no=-1, measure_pid=None, keep_latencies=False)
            t.mark_log()

    def start_pgmux(self, name: str) -> Target:
        pure = name == "pgmux-pure" or self.args.build == "pure"
        return self.bench.start_pgmux(loop=self.args.loop, name=name, pure=pure)

    def restart_if_dead(self, t: Target, during: str) -> None:
        if t.alive():
            return
        code = t.proc.returncode if t.proc else None
        msg = f"{t.label} exited (code {code}) during {during}"
        self.crashes.append(msg + ":\n" + "\n".join(t.new_log_lines()[-20:]))
        say("!! " + msg + "; restarting it")
        new = (self.start_pgmux(t.name) if t.name.startswith("pgmux")
               else self.bench.start_pgbouncer())
        new.mark_log()

    # ---- the rows ---------------------------------------------------------------------------
    def direct_fits(self, case: Case) -> bool:
        # NOTE: both poolers hold up to POOL_SIZE server connections each, plus reserved slots
        return case.clients <= self.args.max_connections - 2 * POOL_SIZE - 10

    def prepare_case(self, case: Case) -> None:
        if case.script == "N":
            # NOTE: every -N run starts from the same tables, whoever ran before it
            port = self.bench.targets["direct"].port
            psql(self.bench.bin_dir, port, "TRUNCATE pgbench_history")
            psql(self.bench.bin_dir, port,
                 "VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts")

    def run_case(self, case: Case) -> None:
        args, b = self.args, self.bench
        runs: dict[str, list[Run]] = {t: [] for t in (*self.poolers, "direct")}
        skip: set[str] = set()
        notes: dict[str, str] = {}
        for rnd in range(args.rounds):
            shift = rnd % len(self.poolers)
            order = self.poolers[shift:] + self.poolers[:shift]
            order += ["direct"] if rnd == 0 and self.direct_fits(case) else []
            for name in order:
                if name in skip:
                    continue
                t = b.targets[name]
                self.prepare_case(case)
                t.mark_log()
                r = run_pgbench(b.bin_dir, t.port, case, args.duration, target=name,
                                round_no=rnd, measure_pid=t.pid, server_pid=b.pg_pid)
                runs[name].append(r)
                trouble = [ln for ln in t.new_log_lines() if TROUBLE.search(ln)]
                if trouble and name in self.log_trouble:
                    self.log_trouble[name] += [f"[{case.label}] {ln}" for ln in trouble]
                cpu = r.cpu_us_per_txn
                say(f"{case.label:<28} {name:<10} round {rnd + 1}: "
                    f"tps {r.tps or 0:9.0f}  p50 {r.p50_ms or 0:6.2f} ms  "
                    f"p99 {r.p99_ms or 0:6.2f} ms"
                    + (f"  cpu {cpu:6.1f} us/txn" if cpu is not None else "")
                    + (f"  others {100 * r.others / r.wall / CORES:3.0f}%"
                       if r.others is not None and r.wall else "")
                    + (f"  ERRORS: {r.errors[0]} (+{len(r.errors) - 1})" if r.errors else "")
                    + (f"  log: {len(trouble)} trouble lines" if trouble else ""))
                if name in self.poolers:
                    self.restart_if_dead(t, case.label)
                if not r.ok and case.protocol == "prepared":
                    # NOTE: a pooler without prepared-statement support fails the same way
                    # every round; once is enough to show it.
                    skip.add(name)
                    notes[name] = "failed in round 1; later rounds skipped"
        if not self.direct_fits(case):
            notes["direct"] = (f"skipped: {case.clients} clients exceed what max_connections "
                               f"{args.max_connections} leaves beside the poolers' pools")
        for name, rs in runs.items():
            s = summarize(case.key, name, rs)
            s.note = notes.get(name, "")
            self.summaries.append(s)

    # ---- profile ----------------------------------------------------------------------------
    def _under_load(self, name: str, case: Case, seconds: float,
                    work: Any) -> tuple[Run | None, Any]:
        """Run pgbench against target name for seconds while work(pid) runs after 2 s."""
        b = self.bench
        t = b.targets[name]
        assert t.pid is not None
        result: dict[str, Run] = {}
        th = threading.Thread(target=lambda: result.setdefault("run", run_pgbench(
            b.bin_dir, t.port, case, seconds, target=name, round_no=0, measure_pid=t.pid,
            keep_latencies=False)))
        th.start()
        try:
            time.sleep(2)
            out = work(t.pid)
        finally:
            th.join()
        t.new_log_lines()
        return result.get("run"), out

    def run_profile(self) -> None:
        secs = self.args.profile_seconds
        perf_secs = 2.0 if self.args.quick else 5.0
        native_secs = 2.0 if self.args.quick else 6.0
        case = Case("S", "simple", 64)
        work = self.workdir / "profile"
        work.mkdir(exist_ok=True)
        out: dict[str, Any] = {"case": case.label, "seconds": secs, "perf_seconds": perf_secs,
                               "profiles": {}, "perf": {}}

        def pgmux_work(pid: int) -> None:
            path = work / "py-spy.txt"
            cmd = profiling.record_command(pid, secs, path, False, 200)
            entry: dict[str, Any] = {"command": " ".join(["py-spy", *cmd[1:]])}
            if profiling.py_spy() is None:
                entry["error"] = "py-spy is not installed (pip install py-spy)"
            else:
                say(f"py-spy on pgmux ({secs:.0f} s) during {case.label}")
                err = profiling.record(pid, secs, path, False)
                if err or not path.exists():
                    entry["error"] = err or "py-spy wrote nothing"
                else:
                    entry["profile"] = profiling.parse_raw(path)
                    shutil.copy(path, self.args.json.parent / "py-spy-pgmux.txt")
            out["profiles"]["python"] = entry
            if profiling.py_spy() is not None:
                path = work / "py-spy-native.txt"
                cmd = profiling.record_command(pid, native_secs, path, True, 200)
                entry = {"command": " ".join(["py-spy", *cmd[1:]])}
                say(f"py-spy --native on pgmux ({native_secs:.0f} s) during {case.label}")
                err = profiling.record(pid, native_secs, path, True)
                if err or not path.exists():
                    entry["error"] = err or "py-spy wrote nothing"
                else:
                    entry["profile"] = profiling.parse_raw(path)
                    shutil.copy(path, self.args.json.parent / "py-spy-pgmux-native.txt")
                out["profiles"]["native"] = entry
            perf_work("pgmux", pid)

        def perf_work(name: str, pid: int) -> None:
            path = work / f"perf-{name}.data"
            cmd = profiling.perf_record_command(pid, perf_secs, path)
            entry: dict[str, Any] = {"command": " ".join(cmd)}
            say(f"perf on {name} ({perf_secs:.0f} s) during {case.label}")
            err = profiling.perf_record(pid, perf_secs, path)
            if err:
                entry["error"] = err
            else:
                entry["dso"] = profiling.perf_report(path, "dso", 8)
                entry["sym"] = profiling.perf_report(path, "dso,sym", 25)
            out["perf"][name] = entry

        r, _ = self._under_load("pgmux", case, secs + native_secs + perf_secs + 7, pgmux_work)
        if r is not None:
            out["tps"] = r.tps
            out["pgbench"] = " ".join(["pgbench", *r.command[1:]])
            out["errors"] = r.errors
        self._under_load("pgbouncer", case, perf_secs + 4,
                         lambda pid: perf_work("pgbouncer", pid))
        for name in POOLERS:
            self.restart_if_dead(self.bench.targets[name], "the profile")
        self.profile = out

    # ---- system calls -----------------------------------------------------------------------
    def run_syscalls(self, cases: list[Case]) -> None:
        why = syscalls.available()
        if why:
            say(f"system call count skipped: {why}")
            return
        secs = 2.0 if self.args.quick else 4.0
        keys = {"S-simple-64", "S-extended-64", "S-simple-16-C"}
        for case in [c for c in cases if c.key in keys]:
            for name in POOLERS:
                t = self.bench.targets[name]
                assert t.pid is not None
                t.mark_log()
                c = syscalls.census(name, t.pid, self.bench.bin_dir, t.port, case, secs)
                self.census.append(c)
                total = c.per_txn("total")
                say(f"syscalls {case.label:<24} {name:<9} "
                    + (f"{total:.2f} per transaction" if total is not None else c.error))
                t.new_log_lines()
                self.restart_if_dead(t, f"the system call count of {case.label}")

    # ---- memory -----------------------------------------------------------------------------
    def run_memory(self) -> None:
        for name in POOLERS:
            t = self.bench.targets[name]
            assert t.pid is not None
            say(f"memory: {self.args.idle_clients} idle clients on {name}")
            t.mark_log()
            try:
                m = memory.measure_idle_clients(name, t.port, t.pid, self.args.idle_clients)
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                self.memory_errors.append(f"{name}: {exc}")
                say(f"!! memory test on {name} failed: {exc}")
                continue
            self.memory.append(m)
            trouble = [ln for ln in t.new_log_lines() if TROUBLE.search(ln)]
            if trouble:
                self.log_trouble[name] += [f"[idle clients] {ln}" for ln in trouble]
            per = m.kib_per_client
            say(f"  {name}: {m.opened} opened ({m.failed} failed) in {m.open_seconds:.1f} s, "
                f"RSS {m.rss_before_kib} -> {m.rss_held_kib} KiB -> {m.rss_after_kib} KiB "
                f"after close: {per:.1f} KiB/client" if per is not None else "")
            self.restart_if_dead(t, "the idle-clients test")

    def close(self) -> None:
        self.bench.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _jsonable(o: Any) -> Any:
    return vars(o) if hasattr(o, "__dict__") else str(o)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bench/run.py reads /proc: Linux only", file=sys.stderr)
        return 2
    if shutil.which("pgbouncer") is None:
        print("pgbouncer is not installed: apt-get install -y pgbouncer", file=sys.stderr)
        return 2
    nofile = raise_nofile()
    if nofile[0] < args.idle_clients + 1000:
        print(f"RLIMIT_NOFILE is {nofile[0]}: too low for {args.idle_clients} idle clients "
              f"(raise the hard limit, or pass --idle-clients)", file=sys.stderr)
        return 2
    cases = all_cases()
    if args.cases:
        wanted = {c.strip() for c in args.cases.split(",")}
        cases = [c for c in cases if c.key in wanted]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    per_run = args.duration + 1.5
    estimate = len(cases) * per_run * ((3 if args.build == "both" else 2) * args.rounds + 1)
    say(f"{len(cases)} rows x {args.rounds} rounds x {args.duration:.0f} s; about "
        f"{estimate / 60:.0f} min of pgbench, plus profile and memory")
    started = time.time()
    load_before = os.getloadavg()
    runner = Runner(args)
    try:
        runner.start()
        runner.env = report.environment(versions(runner.bench.bin_dir), nofile, args.loop)
        runner.env["builds"] = {n: runner.bench.targets[n].build for n in runner.poolers
                                if n.startswith("pgmux")}
        for case in cases:
            runner.run_case(case)
        if not args.no_syscalls:
            runner.run_syscalls(cases)
        if not args.no_profile:
            runner.run_profile()
        if not args.no_memory:
            runner.run_memory()
        ini = runner.bench.targets["pgmux"].ini
        ini_text = ini.read_text() if ini else ""
    finally:
        runner.close()
    elapsed = time.time() - started
    data = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started": started, "elapsed": elapsed, "load_before": load_before,
        "load_after": os.getloadavg(), "env": runner.env, "ini": ini_text,
        "summaries": [s.as_dict() for s in runner.summaries],
        "memory": [vars(m) | {"kib_per_client": m.kib_per_client} for m in runner.memory],
        "memory_errors": runner.memory_errors, "log_trouble": runner.log_trouble,
        "crashes": runner.crashes, "syscalls": runner.census,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1, default=_jsonable))
    report.write_benchmarks(args.out, data, cases, runner.summaries, runner.memory, args)
    if runner.profile:
        report_profile.write_performance(args.perf_out, runner.profile, data)
    say(f"done in {elapsed / 60:.1f} min: {args.out}"
        + (f", {args.perf_out}" if runner.profile else ""))
    print(report.console_table(cases, runner.summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
