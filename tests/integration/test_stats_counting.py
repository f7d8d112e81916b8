"""SHOW STATS counts as PgBouncer's usage.md defines its columns, in every pool mode: a
transaction per ReadyForQuery that ends one, a query per ReadyForQuery, xact_time including
idle-in-transaction time and query_time not, wait_time for clients queued for a server."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from tests.integration.adminutil import rows
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(60)

FIELDS = ("total_xact_count", "total_query_count", "total_xact_time", "total_query_time",
          "total_wait_time", "total_server_assignment_count", "total_received", "total_sent")


def totals(pgm: Pgmux, database: str = "postgres") -> dict[str, int]:
    for row in rows(pgm, "SHOW STATS"):
        if row["database"] == database:
            return {k: int(row[k]) for k in FIELDS}
    return dict.fromkeys(FIELDS, 0)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in FIELDS}


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_transactions_and_queries_are_counted_per_ready_for_query(
        mode: str, pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory({"pool_mode": mode})
    with psycopg.connect(pgm.dsn(), autocommit=True, prepare_threshold=None) as c:
        c.execute("select 0")  # the server is made and linked before counting starts
        before = totals(pgm)
        for _ in range(5):
            with c.transaction():  # BEGIN, two queries, COMMIT: four queries, one transaction
                c.execute("select 1")
                c.execute("select 2")
        for _ in range(5):
            c.execute("select 3")  # autocommit: one query, one transaction each
        got = delta(before, totals(pgm))
    assert (got["total_xact_count"], got["total_query_count"]) == (10, 25), got
    assert got["total_received"] > 0 and got["total_sent"] > 0


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_xact_time_includes_idle_in_transaction_and_query_time_does_not(
        mode: str, pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory({"pool_mode": mode})
    with psycopg.connect(pgm.dsn(), autocommit=True) as c:
        c.execute("select 0")
        before = totals(pgm)
        with c.transaction():
            c.execute("select pg_sleep(0.2)")
            time.sleep(0.3)  # idle in transaction
        got = delta(before, totals(pgm))
    assert got["total_xact_count"] == 1
    assert 200_000 <= got["total_query_time"] < 450_000, got
    assert got["total_xact_time"] >= 500_000, got
    assert got["total_xact_time"] - got["total_query_time"] >= 250_000, got


def test_wait_time_and_server_assignments(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory({"pool_mode": "transaction", "default_pool_size": 1})
    holder = psycopg.connect(pgm.dsn(), autocommit=True)
    waiter = psycopg.connect(pgm.dsn(), autocommit=True)
    try:
        holder.execute("select 0")
        before = totals(pgm)
        holder.execute("begin")
        holder.execute("select 1")
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.setdefault(
            "v", waiter.execute("select 2").fetchone()), daemon=True)
        t.start()
        time.sleep(0.3)  # the waiter queues: the only server is in holder's transaction
        holder.execute("commit")
        t.join(5)
        assert out == {"v": (2,)}
        got = delta(before, totals(pgm))
    finally:
        holder.close()
        waiter.close()
    assert got["total_server_assignment_count"] == 2, got
    assert got["total_wait_time"] >= 250_000, got
