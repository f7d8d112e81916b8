"""Helpers for the admin console tests: psql and psycopg against `pgbouncer`, waiting."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import Pgmux


def psql(pg: EmbeddedPostgres, pgmux: Pgmux, *sql: str, user: str = "postgres",
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """psql -A (unaligned, '|' separated, no footer) against the console, one -c per sql."""
    cmd = [str(pg.bin_dir / "psql"), "-X", "-A", "-P", "footer=off", "-h", "127.0.0.1",
           "-p", str(pgmux.port), "-U", user, "-v", "ON_ERROR_STOP=1", "pgbouncer"]
    for s in sql:
        cmd += ["-c", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=check,
                          env={"PGCONNECT_TIMEOUT": "5", "PATH": "/usr/bin:/bin"})


def admin(pgmux: Pgmux, user: str = "postgres") -> psycopg.Connection[dict[str, Any]]:
    """A psycopg connection to the console, rows as dicts (psycopg sends a query without
    parameters as a simple Query; prepare=True, binary=True or parameters use the extended
    protocol)."""
    return psycopg.connect(pgmux.dsn(user=user, dbname="pgbouncer"), autocommit=True,
                           row_factory=dict_row, connect_timeout=5)


def rows(pgmux: Pgmux, sql: str) -> list[dict[str, Any]]:
    with admin(pgmux) as conn:
        return conn.execute(sql).fetchall()


def pool(pgmux: Pgmux, database: str = "postgres", user: str = "postgres") -> dict[str, Any]:
    for row in rows(pgmux, "SHOW POOLS"):
        if row["database"] == database and row["user"] == user:
            return row
    return {}


def wait_for(cond: Callable[[], Any], timeout: float = 10, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run fn in a daemon thread (a command that blocks, such as PAUSE or SUSPEND); the dict
    gets "value" or "error" when it returns."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out
