"""`pgmux serve --url URL`: pools one server in transaction mode; the URL's user runs the
admin console."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from pgmux.embedded import EmbeddedPostgres, free_port
from tests.integration.conftest import wait_port


def test_url_mode_pools_and_its_user_is_admin(pg: EmbeddedPostgres) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pgmux", "serve", "--url", pg.url,
                             "--port", str(port), "--pool-size", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/pgbouncer",
                             autocommit=True) as admin:
            cur = admin.execute("SHOW POOLS")
            assert cur.description is not None
            cols = [d.name for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        pool = next(r for r in rows if r["database"] == "postgres")
        assert pool["pool_mode"] == "transaction"
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.stdout is not None
    with proc.stdout:
        printed = proc.stdout.read().decode().strip()
    assert printed == f"postgresql://postgres@127.0.0.1:{port}/postgres"
