"""Writes docs/BENCHMARKS.md and the profile part of docs/PERFORMANCE.md from a run's results."""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from memory import IdleMemory
from pgbench import Case
from summary import Summary

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench/run.py: generated from here -->"
END = "<!-- bench/run.py: generated up to here -->"
LABELS = {"pgmux": "pgmux", "pgmux-pure": "pgmux pure", "pgbouncer": "PgBouncer",
          "direct": "PostgreSQL direct"}


# ---- the machine -----------------------------------------------------------------------------
def environment(vers: dict[str, str], nofile: tuple[int, int],
                loop: str | None = None) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    from pgmux import runtime

    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "loop": _loop_name(runtime.loop_name, loop), "versions": vers, "nofile": list(nofile),
        "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _loop_name(default: Any, forced: str | None) -> str:
    if forced == "asyncio":
        return "asyncio (PGMUX_LOOP=asyncio)"
    return str(default())


def _commit() -> str:
    def git(*args: str) -> str:
        try:
            r = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return ""
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "?"
    dirty = git("status", "--porcelain", "--", "src")
    return head + (" (with uncommitted changes in src/)" if dirty else "")


# ---- formatting ------------------------------------------------------------------------------
def _f(x: float | None, fmt: str = "{:.0f}", none: str = "–") -> str:
    return none if x is None else fmt.format(x)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A Markdown table; the first `left` columns align left, the rest (numbers) right."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _bouncer_version(env: dict[str, Any]) -> tuple[int, int]:
    m = re.search(r"(\d+)\.(\d+)", env.get("versions", {}).get("pgbouncer", ""))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def failure_text(s: Summary, env: dict[str, Any]) -> str:
    if s.target == "pgbouncer" and s.case.startswith("S-prepared") \
            and _bouncer_version(env) < (1, 21):
        v = ".".join(map(str, _bouncer_version(env)))
        return f"n/a (PgBouncer {v} lacks max_prepared_statements)"
    if not s.runs:
        return s.note or "not run"
    return "FAILED: " + failure_detail(s)


def failure_detail(s: Summary) -> str:
    """What went wrong in a failed row's first failed run, in a few words."""
    r = next((r for r in s.runs if not r.ok), None)
    if r is None:
        return "no run"
    clients = int(s.case.split("-")[2]) if s.case.count("-") >= 2 else 0
    parts = []
    if r.aborted_clients:
        parts.append(f"{r.aborted_clients} of {clients} clients aborted")
    elif r.exit_code:
        parts.append(f"pgbench exited {r.exit_code}")
    else:
        parts.append(f"pgbench exited 0 with {r.tps or 0:.0f} tps but")
    n = r.error_lines or len(r.errors)
    if r.error_kinds:
        parts.append(f"{n} error line(s): " + "; ".join(f"`{k}`" for k in r.error_kinds[:3]))
    elif r.errors and all(e.replace("pgbench:", "").replace("error:", "").strip() == ""
                          for e in r.errors):
        parts.append(f"{n} error line(s) `pgbench: error:` with an empty message (pgbench "
                     "logs PQerrorMessage() when a PQprepare() result is not "
                     "PGRES_COMMAND_OK: the answer to Parse+Sync was not ParseComplete + "
                     "ReadyForQuery, and libpq had no error text for it)")
    elif r.errors:
        parts.append(f"{n} error line(s), first `{r.errors[0]}`")
    return ", ".join(parts) or "errors"


def _cell_tps(s: Summary | None, env: dict[str, Any]) -> str:
    if s is None or not s.runs:
        return (s.note.split(":")[0] if s and s.note else "–")
    if s.failed:
        return failure_text(s, env)
    spread = ""
    if len(s.tps) > 1:
        spread = " (" + ", ".join(f"{t:.0f}" for t in s.tps) + ")"
    return f"{s.tps_mean:.0f}{spread}"


def _others(s: Summary | None) -> str:
    if s is None or not s.others_pct:
        return "–"
    return ", ".join(f"{max(0.0, x):.0f}%" for x in s.others_pct)


def _index(summaries: list[Summary]) -> dict[tuple[str, str], Summary]:
    return {(s.case, s.target): s for s in summaries}


def _ok(s: Summary | None) -> bool:
    return s is not None and bool(s.runs) and not s.failed


# ---- BENCHMARKS.md ---------------------------------------------------------------------------
def render_benchmarks(data: dict[str, Any], cases: list[Case], summaries: list[Summary],
                      mem: list[IdleMemory], args: argparse.Namespace) -> str:
    env = data["env"]
    idx = _index(summaries)
    cmd = ".venv/bin/python bench/run.py" + ("".join(f" {a}" for a in args.argv))
    L: list[str] = [BEGIN, ""]
    L += [f"Made by `{cmd}` (from the repository root) on {env['date']}, commit "
          f"{env['commit']}; the run took {data['elapsed'] / 60:.1f} min. Each pgbench run lasts "
          f"{args.duration:.0f} s; each row ran {args.rounds} round(s) per pooler, in "
          "alternation (each round in a rotated order), PostgreSQL direct once. pgmux builds: "
          f"{_builds(env)}.", ""]

    # Ratios
    L += ["## pgmux / PgBouncer", "",
          "Throughput: above 1 means pgmux is faster. Latency and CPU per transaction: below 1 "
          "means pgmux is better.", ""]
    rows = []
    for c in cases:
        a, b = idx.get((c.key, "pgmux")), idx.get((c.key, "pgbouncer"))
        row = [f"`{c.label}`"]
        if not _ok(a) or not _ok(b):
            why = []
            if not _ok(a):
                why.append("pgmux " + failure_text(a, env) if a and a.runs else "pgmux not run")
            elif a is not None:
                d = idx.get((c.key, "direct"))
                vs = _ratio(a.tps_mean, d.tps_mean if _ok(d) and d else None)
                why.append(f"pgmux {a.tps_mean:.0f} tps, p99 {_f(a.p99_ms, '{:.2f}')} ms"
                           + (f" ({vs:.2f} x direct)" if vs else ""))
            if not _ok(b) and b is not None:
                why.append("PgBouncer: " + failure_text(b, env))
            row += ["; ".join(why)] + [""] * 3
        else:
            assert a is not None and b is not None
            row += [_f(_ratio(a.tps_mean, b.tps_mean), "{:.2f}"),
                    _f(_ratio(a.p50_ms, b.p50_ms), "{:.2f}"),
                    _f(_ratio(a.p99_ms, b.p99_ms), "{:.2f}"),
                    _f(_ratio(a.cpu_us, b.cpu_us), "{:.2f}")]
        rows.append(row)
    L += _table(["row (pgbench ...)", "tps", "p50 latency", "p99 latency",
                 "pooler CPU / txn"], rows)
    L += _pure_table(cases, idx)
    by_mem = {m.target: m for m in mem}
    if "pgmux" in by_mem and "pgbouncer" in by_mem:
        a_kib, b_kib = by_mem["pgmux"].kib_per_client, by_mem["pgbouncer"].kib_per_client
        L += ["", f"Memory per idle client ({by_mem['pgmux'].clients:,} clients): pgmux "
              f"{_f(a_kib, '{:.1f}')} KiB, PgBouncer {_f(b_kib, '{:.1f}')} KiB "
              f"(ratio {_f(_ratio(a_kib, b_kib), '{:.2f}')})."]

    # Throughput
    L += ["", "## Throughput (tps)", "",
          "Mean over rounds, each round in parentheses; pgbench's `tps` excluding the initial "
          "connection time (with `-C` it includes every reconnection). 'Others' CPU' is the "
          "share of the machine's CPU (all busy time of all cores, from `/proc/stat`) used during "
          "the pgmux / PgBouncer runs by processes other than the pooler under test, "
          "PostgreSQL and pgbench: the noise the run could not control.", ""]
    rows = []
    for c in cases:
        a, b, d = (idx.get((c.key, t)) for t in ("pgmux", "pgbouncer", "direct"))
        rows.append([f"`{c.label}`", _cell_tps(a, env), _cell_tps(b, env),
                     _f(_ratio(a.tps_mean if a else None, b.tps_mean if b else None), "{:.2f}"),
                     _cell_tps(d, env),
                     _f(_ratio(a.tps_mean if a else None, d.tps_mean if _ok(d) else None),
                        "{:.2f}"), f"{_others(a)} / {_others(b)}"])
    L += _table(["row", "pgmux", "PgBouncer", "pgmux / PgBouncer", "PostgreSQL direct",
                 "pgmux / direct", "others' CPU"], rows)

    # Latency
    L += ["", "## Latency (ms)", "",
          "Percentiles of every transaction's latency from pgbench's per-transaction log "
          "(`--log`), pooled over the rounds.", ""]
    rows = []
    for c in cases:
        a, b, d = (idx.get((c.key, t)) for t in ("pgmux", "pgbouncer", "direct"))

        def lat(s: Summary | None, which: str) -> str:
            if not _ok(s):
                return "–"
            assert s is not None
            return _f(getattr(s, which), "{:.2f}")

        rows.append([f"`{c.label}`", lat(a, "p50_ms"), lat(b, "p50_ms"), lat(a, "p99_ms"),
                     lat(b, "p99_ms"), lat(d, "p50_ms"), lat(d, "p99_ms")])
    L += _table(["row", "pgmux p50", "PgBouncer p50", "pgmux p99", "PgBouncer p99",
                 "direct p50", "direct p99"], rows)

    # Cost
    L += ["", "## Pooler cost per transaction", "",
          "CPU: the pooler process's utime + stime (from `/proc/PID/stat`, 10 ms ticks) over the "
          "pgbench run, divided by the transactions pgbench counted; in parentheses user + "
          "system. Context switches: voluntary / involuntary (preempted), from "
          "`/proc/PID/task/*/status`.", ""]
    rows = []
    for c in cases:
        a, b = idx.get((c.key, "pgmux")), idx.get((c.key, "pgbouncer"))

        def cpu(s: Summary | None) -> str:
            if not _ok(s) or s is None or s.cpu_us is None:
                return "–"
            return f"{s.cpu_us:.1f} ({s.cpu_user_us:.1f} + {s.cpu_sys_us:.1f})"

        def ctx(s: Summary | None) -> str:
            if not _ok(s) or s is None or s.ctx_vol is None:
                return "–"
            return f"{s.ctx_vol:.2f} / {s.ctx_invol:.2f}"

        rows.append([f"`{c.label}`", cpu(a), cpu(b),
                     _f(_ratio(a.cpu_us if _ok(a) and a else None,
                               b.cpu_us if _ok(b) and b else None), "{:.2f}"),
                     ctx(a), ctx(b)])
    L += _table(["row", "pgmux CPU µs", "PgBouncer CPU µs", "pgmux / PgBouncer",
                 "pgmux ctx switches", "PgBouncer ctx switches"], rows)
    L += _syscall_table(data.get("syscalls", []), cases)

    # Memory
    L += ["", f"## Memory with {args.idle_clients:,} idle clients", "",
          "A separate Python process opens the connections with raw sockets, each sending a "
          "StartupMessage and reading up to ReadyForQuery (trust auth), 100 at a time, and holds "
          "them. The pooler's RSS (`VmRSS`) is read before, 2 s after all are open, and 2 s after "
          "they closed. KiB per client = (RSS held - RSS before) / clients held.", ""]
    rows = []
    for m in mem:
        rows.append([LABELS[m.target], f"{m.opened:,}", str(m.failed),
                     f"{m.open_seconds:.1f}", f"{m.rss_before_kib:,}", f"{m.rss_held_kib:,}",
                     _f(m.kib_per_client, "{:.1f}"), f"{m.rss_after_kib:,}"])
    L += _table(["pooler", "clients held", "failed", "open time s", "RSS before KiB",
                 "RSS held KiB", "KiB / client", "RSS after close KiB"], rows)
    for e in data.get("memory_errors", []):
        L.append(f"\nMemory test error: {e}")

    # Targets
    L += ["", "## Targets of issue 6", ""]
    L += _targets(cases, idx, mem)

    # Errors
    L += ["", "## Errors and warnings seen", ""]
    L += _errors(cases, summaries, data, env)

    # Method
    L += ["", "## How it was run", "",
          f"- PostgreSQL {env['versions'].get('postgres', '?').split()[-1]}: the embedded server "
          "(`pgmux.embedded`), `fsync=off`, `synchronous_commit=off`, `shared_buffers=256MB`, "
          f"`max_connections={args.max_connections}`; `pgbench -i -s {args.scale}`.",
          "- PgBouncer and pgmux read the same `pgbouncer.ini` settings (only the port and "
          "socket directory differ); PgBouncer runs as an unprivileged user, pgmux as "
          f"`python -m pgmux serve pgbouncer.ini` on {env['loop']}; {_builds(env)}. Everything "
          "talks TCP over 127.0.0.1.",
          "- Every pgbench run: `pgbench -h 127.0.0.1 -p PORT -U postgres -n -T "
          f"{args.duration:.0f} -j 2 <row> --log --log-prefix=DIR/pgbench_log postgres` "
          "(`-j` is at most the clients). Before each `-N` run, pgbench_history is truncated and "
          "the tables vacuumed directly on PostgreSQL. Before the rows, each target gets a 2 s "
          "warm-up (`-S -c 16`).",
          "- A run fails when pgbench exits non-zero or prints errors; a pooler failing a "
          "`-M prepared` row is not run again in later rounds.",
          f"- Other processes' CPU during the timed pooler runs: {_others_overall(summaries)}.",
          "- Load average (1, 5, 15 min) before: "
          + ", ".join(f"{x:.2f}" for x in data["load_before"]) + "; after: "
          + ", ".join(f"{x:.2f}" for x in data["load_after"])
          + ". The machine may be shared: other processes' load shows here.",
          "", "The pgbouncer.ini (pgmux's copy):", "", "```ini", data["ini"].rstrip(), "```"]

    # Machine
    v = env["versions"]
    L += ["", "## Machine and versions", "",
          f"- CPU: {env['cpu']}, {env['cores']} cores; memory {env['memory']}",
          f"- Kernel: {env['kernel']}",
          f"- Python: {env['implementation']} {env['python']}; event loop: {env['loop']} "
          f"(uvloop {v.get('uvloop')})",
          f"- pgmux {v.get('pgmux')} (commit {env['commit']}), {_builds(env)}",
          f"- {v.get('pgbouncer')}",
          f"- {v.get('postgres')}; {v.get('pgbench')}",
          f"- Open files limit (RLIMIT_NOFILE) for the poolers: {env['nofile'][0]}",
          f"- Date: {env['date']}", "", END]
    return "\n".join(L) + "\n"


def _builds(env: dict[str, Any]) -> str:
    builds = env.get("builds") or {"pgmux": "build not recorded"}
    return "; ".join(f"'{LABELS.get(n, n)}' {b}" for n, b in builds.items())


def _pure_table(cases: list[Case], idx: dict[tuple[str, str], Summary]) -> list[str]:
    """Compiled pgmux against its pure Python (the same install with PGMUX_PURE=1), when the
    run had both."""
    if not any(t == "pgmux-pure" for _, t in idx):
        return []
    rows = []
    for c in cases:
        a, p, b = (idx.get((c.key, t)) for t in ("pgmux", "pgmux-pure", "pgbouncer"))
        ok_a, ok_p, ok_b = _ok(a), _ok(p), _ok(b)

        def get(s: Summary | None, ok: bool, what: str) -> float | None:
            return getattr(s, what) if ok and s is not None else None

        rows.append([f"`{c.label}`", _f(get(p, ok_p, "tps_mean")),
                     _f(_ratio(get(a, ok_a, "tps_mean"), get(p, ok_p, "tps_mean")), "{:.2f}"),
                     _f(_ratio(get(p, ok_p, "tps_mean"), get(b, ok_b, "tps_mean")), "{:.2f}"),
                     _f(get(p, ok_p, "cpu_us"), "{:.1f}"),
                     _f(_ratio(get(a, ok_a, "cpu_us"), get(p, ok_p, "cpu_us")), "{:.2f}")])
    return ["", "## pgmux compiled / pure Python", "",
            "The same install run as pure Python (`PGMUX_PURE=1`) in the same alternation: what "
            "compiling with mypyc buys, row by row.", "",
            *_table(["row", "pure tps", "compiled / pure tps", "pure / PgBouncer tps",
                     "pure CPU µs / txn", "compiled / pure CPU"], rows)]


def _syscall_table(census: list[Any], cases: list[Case]) -> list[str]:
    if not census:
        return []
    from syscalls import NAMES

    labels = {c.key: c.label for c in cases}
    names = [n for n in NAMES
             if any((x.per_txn(n) or 0) >= 0.005 for x in census if not x.error)]
    out = ["", "### System calls per transaction", "",
           "Counted with `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_<name>,... -p "
           "PID` in separate, untimed pgbench runs of a few seconds each (counting costs each "
           "call a little). 'other' is the total less the named ones.", ""]
    rows = []
    for x in census:
        label = labels.get(x.case, x.case)
        if x.error and not x.counts:
            rows.append([f"`{label}`", LABELS[x.target], x.error] + [""] * (len(names) + 1))
            continue
        total = x.per_txn("total")
        named = sum(x.per_txn(n) or 0 for n in names)
        rows.append([f"`{label}`", LABELS[x.target], _f(total, "{:.2f}")]
                    + [_f(x.per_txn(n), "{:.2f}") for n in names]
                    + [_f(None if total is None else total - named, "{:.2f}")])
    out += _table(["row", "pooler", "total"] + names + ["other"], rows, left=2)
    return out


def _others_overall(summaries: list[Summary]) -> str:
    vals = [max(0.0, x) for s in summaries if s.target != "direct" for x in s.others_pct]
    if not vals:
        return "not measured"
    vals.sort()
    return (f"median {vals[len(vals) // 2]:.0f}%, max {vals[-1]:.0f}% of the machine over "
            f"{len(vals)} runs")


def _targets(cases: list[Case], idx: dict[tuple[str, str], Summary],
             mem: list[IdleMemory]) -> list[str]:
    rows: list[list[str]] = []
    ratios = []
    for c in cases:
        a, b = idx.get((c.key, "pgmux")), idx.get((c.key, "pgbouncer"))
        if _ok(a) and _ok(b):
            assert a is not None and b is not None
            ratios.append((c, _ratio(a.tps_mean, b.tps_mean) or 0.0))
    if ratios:
        worst = min(ratios, key=lambda x: x[1])
        met = all(r >= 1.0 for _, r in ratios)
        failing = [c for c in cases if not _ok(idx.get((c.key, "pgmux")))]
        rows.append(["throughput >= 1.0 x PgBouncer on every row",
                     f"lowest {worst[1]:.2f} (`{worst[0].label}`); "
                     f"{sum(1 for _, r in ratios if r >= 1.0)} of {len(ratios)} comparable rows "
                     "at or above 1.0"
                     + (f"; pgmux failed {len(failing)} row(s)" if failing else ""),
                     "yes" if met and not failing else "no"])
        rows.append(["stretch: >= 1.2 x", f"{sum(1 for _, r in ratios if r >= 1.2)} of "
                     f"{len(ratios)} rows", "yes" if all(r >= 1.2 for _, r in ratios) else "no"])
    p99 = []
    for c in cases:
        if c.clients == 64:
            a, b = idx.get((c.key, "pgmux")), idx.get((c.key, "pgbouncer"))
            if _ok(a) and _ok(b):
                assert a is not None and b is not None
                p99.append((c, _ratio(a.p99_ms, b.p99_ms) or 0.0))
    if p99:
        worst = max(p99, key=lambda x: x[1])
        rows.append(["p99 latency <= 1.1 x PgBouncer at 64 clients",
                     ", ".join(f"`{c.label}` {r:.2f}" for c, r in p99),
                     "yes" if worst[1] <= 1.1 else "no"])
    churn = [c for c in cases if c.connect]
    for c in churn:
        a, b = idx.get((c.key, "pgmux")), idx.get((c.key, "pgbouncer"))
        if _ok(a) and _ok(b):
            assert a is not None and b is not None
            r = _ratio(a.tps_mean, b.tps_mean) or 0.0
            rows.append([f"connection churn (`{c.label}`) >= 1.0 x", f"{r:.2f}",
                         "yes" if r >= 1.0 else "no"])
    for m in mem:
        if m.target == "pgmux" and m.kib_per_client is not None:
            rows.append([f"{m.clients:,} idle clients at <= 10 KiB each",
                         f"{m.kib_per_client:.1f} KiB per client ({m.opened:,} held)",
                         "yes" if m.kib_per_client <= 10 and m.opened == m.clients else "no"])
    return _table(["target", "this run", "met"], rows, left=3)


def _errors(cases: list[Case], summaries: list[Summary], data: dict[str, Any],
            env: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for c in cases:
        for s in summaries:
            if s.case != c.key or not s.errors:
                continue
            out.append(f"- `{c.label}` against {LABELS[s.target]}: "
                       + (failure_text(s, env) + ": " + failure_detail(s)
                          if s.target == "pgbouncer" and "n/a" in failure_text(s, env)
                          else failure_text(s, env) if s.failed else failure_detail(s))
                       + f"; first error line: `{s.errors[0]}`"
                       + (f"; {s.note}" if s.note else ""))
    for name, lines in data.get("log_trouble", {}).items():
        if lines:
            out.append(f"- {LABELS[name]}'s log: {len(lines)} warning/error line(s); first ones:")
            out += ["  ```", *[f"  {ln[:300]}" for ln in lines[:10]], "  ```"]
    for crash in data.get("crashes", []):
        out += [f"- Crash: {crash.splitlines()[0]}", "  ```",
                *[f"  {ln[:300]}" for ln in crash.splitlines()[1:]], "  ```"]
    if not out:
        out.append("None: every pgbench run exited 0 without errors, and neither pooler logged "
                   "a warning or error.")
    return out


def write_between_markers(path: Path, title: str, block: str) -> None:
    """Replace the generated block of path (or write the file with it); text outside stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + block.rstrip("\n") + tail)
            return
        path.write_text(text.rstrip("\n") + "\n\n" + block)
        return
    path.write_text(f"# {title}\n\n" + block)


def write_benchmarks(path: Path, data: dict[str, Any], cases: list[Case],
                     summaries: list[Summary], mem: list[IdleMemory],
                     args: argparse.Namespace) -> None:
    write_between_markers(path, "Benchmarks: pgmux and PgBouncer side by side",
                          render_benchmarks(data, cases, summaries, mem, args))


# ---- console ---------------------------------------------------------------------------------
def console_table(cases: list[Case], summaries: list[Summary]) -> str:
    idx = _index(summaries)
    pure = any(s.target == "pgmux-pure" for s in summaries)
    lines = [f"{'row':<28} {'pgmux':>9} {'PgBouncer':>9} {'ratio':>6} {'direct':>9} "
             f"{'p99 ratio':>9} {'cpu ratio':>9}" + (f" {'pure':>9} {'ratio':>6}" if pure else "")]
    for c in cases:
        a, b, d, p = (idx.get((c.key, t)) for t in ("pgmux", "pgbouncer", "direct", "pgmux-pure"))
        ta = a.tps_mean if a else None
        tb = b.tps_mean if b else None
        td = d.tps_mean if d else None
        tp = p.tps_mean if p else None
        lines.append(
            f"{c.label:<28} {_f(ta, '{:9.0f}', 'fail'):>9} {_f(tb, '{:9.0f}', 'fail'):>9} "
            f"{_f(_ratio(ta, tb), '{:6.2f}'):>6} {_f(td, '{:9.0f}'):>9} "
            f"{_f(_ratio(a.p99_ms if a else None, b.p99_ms if b else None), '{:9.2f}'):>9} "
            f"{_f(_ratio(a.cpu_us if a else None, b.cpu_us if b else None), '{:9.2f}'):>9}"
            + (f" {_f(tp, '{:9.0f}', 'fail'):>9} {_f(_ratio(tp, tb), '{:6.2f}'):>6}"
               if pure else ""))
    return "\n".join(lines)
