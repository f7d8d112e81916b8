"""Render the doctor's results for people (rich on a terminal, plain text otherwise) and JSON."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pgmux.doctor.facts import ServerFacts, Termination
from pgmux.doctor.findings import Diagnosis, Severity, Thresholds
from pgmux.doctor.plan import POOLER_SHARE, Plan
from pgmux.doctor.poolers import PoolerGuess, detect_pooler
from pgmux.doctor.units import format_bytes, format_duration

SEVERITY_STYLE: dict[str, str] = {
    "info": "cyan",
    "warning": "yellow",
    "critical": "bold red",
    "ok": "green",
}
STATE_STYLE: dict[str, str] = {
    "active": "green",
    "idle": "dim",
    "idle in transaction": "yellow",
    "idle in transaction (aborted)": "red",
}
QUERY_WIDTH = 60


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and, on a terminal, its rich style."""

    text: str
    style: str | None = None


def cell(value: object, style: str | None = None) -> Cell:
    return Cell("-" if value is None else str(value), style)


class Output:
    """Where a command writes: rich on a terminal, plain aligned text when piped or captured."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.tty = _isatty(self.stdout)
        self.console = Console(file=self.stdout, highlight=False) if self.tty else None
        self.err_console = Console(file=self.stderr, highlight=False, stderr=True)

    def write(self, text: str = "", style: str | None = None) -> None:
        if self.console is not None:
            self.console.print(Text(text, style=style or ""))
        else:
            print(text, file=self.stdout)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str), file=self.stdout)

    def error(self, text: str) -> None:
        if _isatty(self.stderr):
            self.err_console.print(Text(text, style="bold red"))
        else:
            print(text, file=self.stderr)

    def table(
        self,
        headers: Sequence[str] | None,
        rows: Sequence[Sequence[Cell]],
        *,
        wrap_last: bool = False,
    ) -> None:
        """Aligned columns; the last column may wrap (terminal) or run on (plain)."""
        if self.console is not None:
            table = Table(
                show_header=headers is not None,
                header_style="bold",
                box=None,
                pad_edge=False,
                padding=(0, 2, 0, 0),
            )
            width = len(headers) if headers is not None else max((len(r) for r in rows), default=0)
            for index in range(width):
                last = index == width - 1
                title = headers[index] if headers is not None else ""
                # NOTE: only the last column (query, message) gives way on a narrow terminal;
                # cut pids and states would be useless.
                natural = max([len(title), *(len(r[index].text) for r in rows if index < len(r))])
                table.add_column(
                    title,
                    no_wrap=not (last and wrap_last),
                    overflow="fold" if last and wrap_last else "ellipsis",
                    min_width=None if last else natural,
                )
            for row in rows:
                table.add_row(*(Text(c.text, style=c.style or "") for c in row))
            self.console.print(table)
            return
        lines = [list(headers)] if headers is not None else []
        lines += [[c.text for c in row] for row in rows]
        if not lines:
            return
        widths = [
            max(len(line[i]) for line in lines if i < len(line)) for i in range(len(lines[0]))
        ]
        for line in lines:
            padded = [text.ljust(widths[i]) for i, text in enumerate(line[:-1])] + line[-1:]
            print("  ".join(padded).rstrip(), file=self.stdout)

    @contextlib.contextmanager
    def status(self, text: str) -> Iterator[None]:
        """A spinner on stderr while something slow runs, only when stderr is a terminal."""
        if _isatty(self.stderr):
            with self.err_console.status(text):
                yield
        else:
            yield


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def one_line(query: str, width: int = QUERY_WIDTH) -> str:
    """A query on one line, cut at `width` characters with an ellipsis."""
    flat = " ".join(query.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- info ----------------------------------------------------------------------------------


def usage_severity(used: int, usable: int, t: Thresholds | None = None) -> Severity:
    t = t or Thresholds()
    share = used / usable if usable else 1.0
    if share >= t.at_limit:
        return "critical"
    return "warning" if share >= t.near_limit else "info"


def info_json(facts: ServerFacts) -> dict[str, Any]:
    """`info --json`; `connections` keys are a contract."""
    limits = facts.limits
    used = len(facts.sessions)
    guess = detect_pooler(facts.endpoints) if facts.endpoints else PoolerGuess("none")
    return {
        "server_version": facts.server_version,
        "server_version_num": facts.server_version_num,
        "user": facts.current_user,
        "database": facts.current_database,
        "database_size": facts.database_size,
        "cluster_size": facts.cluster_size,
        "tables": facts.table_count,
        "connections": {
            "used": used,
            "max_connections": limits.max_connections,
            "reserved": limits.reserved_total,
            "usable": limits.usable,
            "available": max(0, limits.usable - used),
        },
        "reserved_detail": {
            "superuser_reserved_connections": limits.superuser_reserved,
            "reserved_connections": limits.reserved,
        },
        "limits": {
            "roles": [
                {"role": r.role, "limit": r.limit, "connections": r.connections}
                for r in facts.role_limits
            ],
            "databases": [
                {"database": d.database, "limit": d.limit, "connections": d.connections}
                for d in facts.database_limits
            ],
        },
        "pooler": guess.to_json(),
        "collected_at": facts.collected_at.isoformat(),
    }


def render_info(out: Output, facts: ServerFacts, where: str) -> None:
    data = info_json(facts)
    conn = data["connections"]
    severity = usage_severity(conn["used"], conn["usable"])
    reserved = f"{facts.limits.superuser_reserved} superuser"
    if facts.limits.reserved:
        reserved += f" + {facts.limits.reserved} reserved_connections"
    rows = [
        [cell("server"), cell(f"{where}  PostgreSQL {facts.server_version}")],
        [
            cell("database"),
            cell(
                f"{facts.current_database} as {facts.current_user}: "
                f"{format_bytes(facts.database_size)}, {facts.table_count} table(s); "
                f"{format_bytes(facts.cluster_size)} in all databases"
            ),
        ],
        [
            cell("connections"),
            cell(
                f"{conn['used']} used / {conn['usable']} usable "
                f"(max_connections {conn['max_connections']} - {reserved}), "
                f"{conn['available']} available",
                None if severity == "info" else SEVERITY_STYLE[severity],
            ),
        ],
    ]
    for role in facts.role_limits:
        rows.append([cell("role limit"), cell(f"{role.role}: {role.connections} / {role.limit}")])
    for db in facts.database_limits:
        rows.append([cell("database limit"), cell(f"{db.database}: {db.connections} / {db.limit}")])
    pooler = data["pooler"]
    if pooler["detected"]:
        label = "transaction pooler" if pooler["kind"] == "pooler" else "relay (pooler or proxy)"
        text = f"{label} likely: " + "; ".join(pooler["signals"])
    else:
        text = "none detected (direct connection)"
    rows.append([cell("pooler"), cell(text, "cyan" if pooler["detected"] else None)])
    out.table(None, rows, wrap_last=True)


# --- ps ------------------------------------------------------------------------------------

PS_HEADERS = (
    "PID",
    "USER",
    "DATABASE",
    "APPLICATION",
    "CLIENT",
    "STATE",
    "IN STATE",
    "XACT",
    "WAIT",
    "QUERY",
)


def ps_table_rows(rows: Sequence[dict[str, Any]]) -> list[list[Cell]]:
    return [
        [
            cell(r["pid"]),
            cell(r["user"]),
            cell(r["database"]),
            cell(r["application_name"] or "-"),
            cell(r["client_addr"] or "local"),
            cell(r["state"], STATE_STYLE.get(r["state"] or "")),
            cell(format_duration(r["state_duration"])),
            cell(format_duration(r["xact_age"])),
            cell(r["wait_event"]),
            cell(one_line(r["query"]) or "-"),
        ]
        for r in rows
    ]


def render_ps(out: Output, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        out.write("no other sessions")
        return
    out.table(PS_HEADERS, ps_table_rows(rows))


# --- doctor --------------------------------------------------------------------------------


def render_diagnosis(out: Output, diagnosis: Diagnosis) -> None:
    status = diagnosis.status
    out.write(f"status: {status}", SEVERITY_STYLE[status])
    if diagnosis.findings:
        out.write()
        out.table(
            ("SEVERITY", "CODE", "FINDING"),
            [
                [
                    cell(f.severity, SEVERITY_STYLE[f.severity]),
                    cell(f.code),
                    cell(f.message),
                ]
                for f in diagnosis.findings
            ],
            wrap_last=True,
        )
    else:
        out.write("no findings: connection use looks healthy")
    out.write()
    out.write("advice:", "bold")
    for number, advice in enumerate(diagnosis.advice, 1):
        out.write(f"{number}. {advice}")


# --- plan ----------------------------------------------------------------------------------


def _yes_no(value: bool) -> Cell:
    return Cell("yes", "green") if value else Cell("no", "bold red")


def render_plan(out: Output, result: Plan) -> None:
    d = result.deployment
    p = result.with_pgmux
    overlap = " x 2 (preboot)" if d.preboot else ""
    out.table(
        ("", "DIRECT", "WITH PGMUX"),
        [
            [
                cell("app"),
                cell(
                    f"{d.dynos} dyno(s) x {d.processes} process(es) x pool "
                    f"{d.effective_pool_size}{overlap} = {result.app}"
                ),
                cell(f"{p.client_connections} client conn. -> {p.server_connections} server"),
            ],
            [
                cell("one-off + other"),
                cell(f"{d.one_off} + {d.other} = {d.fixed}"),
                cell(f"{p.direct_needed} direct"),
            ],
            [cell("needed"), cell(result.needed), cell(p.server_connections + p.direct_needed)],
            [
                cell("limit"),
                cell(d.limit),
                cell(
                    f"{d.limit} ({p.server_connections} pooled = {POOLER_SHARE:.0%}, "
                    f"{p.direct_headroom} direct)"
                    if p.server_connections == p.server_cap
                    else f"{d.limit} ({p.server_connections} pooled: one per client "
                    f"connection, below {POOLER_SHARE:.0%} = {p.server_cap}; "
                    f"{p.direct_headroom} direct)"
                ),
            ],
            [cell("fits"), _yes_no(result.fits), _yes_no(p.fits)],
        ],
    )
    out.write()
    largest = result.max_pool_size_per_process
    line = f"largest pool size per process that fits directly: {largest}"
    if largest == 0:
        line += " (nothing fits: fewer processes, or a pooler)"
    elif result.threads_wait:
        line += f" (below {d.threads} threads: some threads will wait for a connection)"
    out.write(line)
    sidecar = (
        f"or {p.pool_size_per_dyno} per dyno with one pgmux beside each dyno"
        if p.pool_size_per_dyno
        else "too few server connections for one pgmux per dyno: run it centrally"
    )
    out.write(
        f"with pgmux (pool_mode = transaction): default_pool_size = {p.server_connections} "
        f"for one central pgmux, {sidecar}"
    )


# --- kill ----------------------------------------------------------------------------------


def render_terminations(out: Output, results: Sequence[Termination]) -> None:
    out.table(
        ("PID", "RESULT", "REASON"),
        [
            [
                cell(r.pid),
                Cell("terminated", "green") if r.terminated else Cell("not terminated", "red"),
                cell(r.reason or ""),
            ]
            for r in results
        ],
    )


def terminations_json(
    results: Sequence[Termination],
    matched: Sequence[int] | None = None,
    dry_run: bool = False,
    skipped_pooled: int | None = None,
) -> dict[str, Any]:
    """`kill --json` / `killall --json`: `terminated` lists the pids that were ended;
    killall's `skipped_pooled` counts a pooler's server connections it left alone."""
    data: dict[str, Any] = {
        "terminated": [r.pid for r in results if r.terminated],
        "failed": [{"pid": r.pid, "reason": r.reason} for r in results if not r.terminated],
        "dry_run": dry_run,
    }
    if matched is not None:
        data["matched"] = list(matched)
    if skipped_pooled is not None:
        data["skipped_pooled"] = skipped_pooled
    return data
