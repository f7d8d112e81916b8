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
    for word in ("PAUSED", "clients 5", "waiting 2", "servers 2", "cl_waiting", "1.500s",
                 "app", "transaction", "PgBouncer 1.25.0"):
        assert word in plain, word


def test_waiting_clients_are_highlighted() -> None:
    calm = dict(POOL, cl_waiting=0, maxwait=0, maxwait_us=0)
    _, styled_busy = text_of(Snapshot(pools=[POOL]))
    _, styled_calm = text_of(Snapshot(pools=[calm]))
    red = "\x1b[1;31"  # bold red (maybe with a background)
    assert red in styled_busy
    assert red not in styled_calm
