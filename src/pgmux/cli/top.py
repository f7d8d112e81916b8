"""`pgmux top [ADMIN_URL]`: a live terminal view of SHOW POOLS and SHOW STATS from any
PgBouncer-compatible admin console, waiting clients and wait times highlighted."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

DEFAULT_URL = "postgresql://pgbouncer@/pgbouncer?host=/tmp&port=6432"
POOL_COUNTS = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested",
               "sv_login")
# NOTE: below this width the pool mode is shortened; the tables are laid out (two-line
# headers, one space between columns) so that no header is cut at 80 columns.
WIDE = 90
SHORT_MODES = {"session": "sess", "transaction": "txn", "statement": "stmt"}

Rows = list[dict[str, Any]]


@dataclass
class Snapshot:
    """What one refresh read from the console."""

    pools: Rows = field(default_factory=list)
    stats: Rows = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    version: str = ""
    url: str = ""
    workers: Rows = field(default_factory=list)  # SHOW WORKERS: pgmux with workers only
    taken: float = field(default_factory=time.time)


def fetch(conn: Any, url: str = "") -> Snapshot:
    """Read SHOW POOLS / STATS / STATE / VERSION over an open psycopg connection."""
    import psycopg
    from psycopg.rows import dict_row

    def rows(query: str) -> Rows:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query)
            return list(cur.fetchall())

    state = {str(r["key"]): str(r["value"]) for r in rows("SHOW STATE")}
    version = rows("SHOW VERSION")
    try:
        workers = rows("SHOW WORKERS")
    except psycopg.Error:
        workers = []  # NOTE: PgBouncer, or pgmux with one worker
    return Snapshot(pools=rows("SHOW POOLS"), stats=rows("SHOW STATS"), state=state,
                    version=str(version[0]["version"]) if version else "", url=url,
                    workers=workers)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _wait_text(seconds: int, micros: int) -> Text:
    wait = seconds + micros / 1e6
    style = "bold red" if wait >= 1 else ("yellow" if wait > 0 else "dim")
    return Text(f"{wait:.3f}s", style=style)


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                 padding=0, pad_edge=False, collapse_padding=True,
                 show_edge=False)


def _column(table: Table, header: str, *, right: bool = True, shrink: bool = False) -> None:
    """A column whose header is never cut: `cl_active` is written `cl` over `active`."""
    title = header.replace("_", "\n", 1) if header.count("_") == 1 else header
    widest = max(len(line) for line in title.split("\n"))
    table.add_column(title, justify="right" if right else "left", vertical="bottom",
                     no_wrap=True, overflow="ellipsis",
                     min_width=min(widest, 8) if shrink else widest)


def pools_table(pools: Sequence[Mapping[str, Any]], wide: bool = True) -> Table:
    table = _table("pools")
    _column(table, "database", right=False, shrink=True)
    _column(table, "user", right=False, shrink=True)
    _column(table, "mode", right=False)
    for name in POOL_COUNTS:
        _column(table, name)
    _column(table, "maxwait")
    for row in pools:
        waiting = _int(row.get("cl_waiting"))
        mode = str(row.get("pool_mode") or "")
        cells: list[RenderableType] = [str(row.get("database", "")), str(row.get("user", "")),
                                       mode if wide else SHORT_MODES.get(mode, mode)]
        for name in POOL_COUNTS:
            value = _int(row.get(name))
            style = ""
            if name == "cl_waiting" and value:
                style = "bold red"
            elif not value:
                style = "dim"
            cells.append(Text(str(value), style=style))
        cells.append(_wait_text(_int(row.get("maxwait")), _int(row.get("maxwait_us"))))
        table.add_row(*cells, style="on grey15" if waiting else "")
    return table


def stats_table(stats: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("traffic (averages over the last stats_period)")
    _column(table, "database", right=False, shrink=True)
    for name in ("xact/s", "query/s", "in B/s", "out B/s", "xact us", "query us", "wait us"):
        _column(table, name)
    for row in stats:
        wait = _int(row.get("avg_wait_time"))
        table.add_row(str(row.get("database", "")), str(_int(row.get("avg_xact_count"))),
                      str(_int(row.get("avg_query_count"))), str(_int(row.get("avg_recv"))),
                      str(_int(row.get("avg_sent"))), str(_int(row.get("avg_xact_time"))),
                      str(_int(row.get("avg_query_time"))),
                      Text(str(wait), style="yellow" if wait else "dim"))
    return table


def render(snap: Snapshot, error: str | None = None, width: int = WIDE) -> RenderableType:
    """The whole screen for one snapshot at a terminal `width` (pure: tests render it)."""
    paused = snap.state.get("paused") == "yes"
    waiting = sum(_int(r.get("cl_waiting")) for r in snap.pools)
    clients = sum(_int(r.get("cl_active")) for r in snap.pools) + waiting
    servers = sum(_int(r.get(n)) for r in snap.pools for n in POOL_COUNTS[2:])
    head = Text()
    head.append("pgmux top", style="bold")
    head.append(f"  {snap.version}  {snap.url}  ", style="dim")
    head.append(time.strftime("%H:%M:%S", time.localtime(snap.taken)))
    summary = Text()
    summary.append("PAUSED  " if paused else "active  ", style="bold red" if paused else "green")
    summary.append(f"clients {clients}  ")
    summary.append(f"waiting {waiting}  ", style="bold red" if waiting else "")
    summary.append(f"servers {servers}")
    if snap.workers:
        summary.append(f"  workers {sum(1 for w in snap.workers if not _int(w.get('retiring')))}")
    parts: list[RenderableType] = [head, summary, pools_table(snap.pools, width >= WIDE)]
    if snap.stats:
        parts.append(stats_table(snap.stats))
    if error:
        parts.append(Text(f"error: {error}", style="bold red"))
    return Group(*parts)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "top", help="live view of the pools of a running pgmux or PgBouncer",
        description="Show SHOW POOLS and SHOW STATS of an admin console, refreshing. Waiting "
                    "clients and wait times are highlighted.")
    p.add_argument("url", nargs="?", metavar="ADMIN_URL",
                   default=os.environ.get("PGMUX_ADMIN_URL", DEFAULT_URL),
                   help="admin console URL (default: $PGMUX_ADMIN_URL or %(default)s)")
    p.add_argument("-n", "--interval", type=float, default=1.0,
                   help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true",
                   help="print one snapshot and exit (for scripts and tests)")
    p.set_defaults(func=run_top)


def _connect(url: str) -> Any:
    import psycopg

    # NOTE: client-side binding sends plain simple-protocol queries, which PgBouncer's own
    # console needs too (pgmux's answers both).
    return psycopg.connect(url, autocommit=True, connect_timeout=5,
                           cursor_factory=psycopg.ClientCursor)


def run_top(args: argparse.Namespace) -> int:
    import psycopg

    console = Console()
    if args.once:
        try:
            with _connect(args.url) as once:
                snap = fetch(once, args.url)
        except psycopg.Error as exc:
            print(f"pgmux top: {exc}".strip(), file=sys.stderr)
            return 1
        console.print(render(snap, width=console.width))
        return 0
    from rich.live import Live

    conn: Any = None
    snap = Snapshot(url=args.url)
    try:
        with Live(render(snap, width=console.width), console=console, refresh_per_second=4,
                  screen=console.is_terminal) as live:
            while True:
                error = None
                try:
                    if conn is None:
                        conn = _connect(args.url)
                    snap = fetch(conn, args.url)
                except psycopg.Error as exc:
                    error = str(exc).strip() or type(exc).__name__
                    if conn is not None:
                        conn.close()
                    conn = None
                live.update(render(snap, error, console.width))
                time.sleep(max(0.1, args.interval))
    except KeyboardInterrupt:
        return 0
    finally:
        if conn is not None:
            conn.close()
