"""`pgmux top` rendering without a terminal: the pools, the waiting highlight, the summary."""

from __future__ import annotations

from rich.console import Console

from pgmux.cli.top import Snapshot, render


def text_of(snap: Snapshot) -> tuple[str, str]:
    console = Console(record=True, width=200, force_terminal=True, color_system="truecolor")
    console.print(render(snap))
    return console.export_text(clear=False), console.export_text(styles=True)


POOL = {"database": "app", "user": "u", "cl_active": 3, "cl_waiting": 2, "sv_active": 2,
        "sv_idle": 0, "sv_used": 0, "sv_tested": 0, "sv_login": 0, "maxwait": 1,
        "maxwait_us": 500000, "pool_mode": "transaction"}


def test_render_shows_pools_and_summary() -> None:
    snap = Snapshot(pools=[POOL], stats=[{"database": "app", "avg_xact_count": 12,
                                          "avg_wait_time": 300}],
                    state={"paused": "yes"}, version="PgBouncer 1.25.0 (pgmux x)")
    plain, _ = text_of(snap)
    for word in ("PAUSED", "clients 5", "waiting 2", "servers 2", "waiting", "1.500s",
                 "app", "transaction", "PgBouncer 1.25.0"):
        assert word in plain, word


def test_waiting_clients_are_highlighted() -> None:
    calm = dict(POOL, cl_waiting=0, maxwait=0, maxwait_us=0)
    _, styled_busy = text_of(Snapshot(pools=[POOL]))
    _, styled_calm = text_of(Snapshot(pools=[calm]))
    red = "\x1b[1;31"  # bold red (maybe with a background)
    assert red in styled_busy
    assert red not in styled_calm


POOL_HEADER = ["database", "user", "mode", "active", "waiting", "active", "idle", "used",
               "tested", "login", "maxwait"]
STATS_HEADER = ["database", "xact/s", "query/s", "in", "B/s", "out", "B/s", "xact", "us", "query",
                "us", "wait", "us"]


def headers_are_whole(text: str, width: int) -> None:
    """Every header of both tables is there in full, and no line is wider than the terminal."""
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), text
    assert "…" not in "\n".join(line for line in lines if "database" in line), text
    pool = next(i for i, line in enumerate(lines) if line.split()[:1] == ["database"])
    assert lines[pool].split() == POOL_HEADER, text
    assert lines[pool - 1].split() == ["cl", "cl", "sv", "sv", "sv", "sv", "sv"], text
    stats = next(i for i, line in enumerate(lines) if i > pool and "xact/s" in line)
    assert lines[stats].split() == STATS_HEADER, text


def test_no_header_is_cut_at_80_columns() -> None:
    pools = [dict(POOL, database="postgres", user="postgres"),
             dict(POOL, database="pgbouncer", user="pgbouncer", pool_mode="statement")]
    stats = [{"database": "postgres", "avg_xact_count": 1200, "avg_recv": 123456,
              "avg_sent": 1234567, "avg_xact_time": 850, "avg_query_time": 400}]
    snap = Snapshot(pools=pools, stats=stats, version="PgBouncer 1.25.0 (pgmux 0.1.0)",
                    url="postgresql://postgres@127.0.0.1:6432/pgbouncer")
    for width in (80, 120):
        console = Console(record=True, width=width, force_terminal=False)
        console.print(render(snap, width=width))
        text = console.export_text()
        headers_are_whole(text, width)
        assert ("transaction" in text) == (width >= 90)  # the mode is shortened when narrow
        assert "txn" in text or "transaction" in text
