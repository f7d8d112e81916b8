"""pgmux's server connections say who they are in pg_stat_activity: application_name pgmux
(unless the [databases] entry names one), a client's own name while it holds the server, and
pgmux's again soon after the server goes idle (no stale name of an earlier client)."""

from __future__ import annotations

import psycopg

from pgmux.embedded import EmbeddedPostgres
from tests.integration.adminutil import wait_for
from tests.integration.conftest import PgmuxFactory


def _names(pg: EmbeddedPostgres) -> list[str]:
    rows = pg.query("select application_name from pg_stat_activity where backend_type = "
                    "'client backend' and pid <> pg_backend_pid() and datname = 'testdb'")
    return sorted(str(r[0]) for r in rows)


def test_server_connections_carry_pgmuxs_name_when_idle(pg: EmbeddedPostgres,
                                                        pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1})
    with psycopg.connect(mux.dsn(dbname="testdb", application_name="report-job"),
                         autocommit=True) as conn:
        row = conn.execute("select current_setting('application_name')").fetchone()
        assert row == ("report-job",)
        assert _names(pg) == ["report-job"]  # its own name while it holds the server
    # idle again: pgmux's name back within a couple of janitor sweeps
    assert wait_for(lambda: _names(pg) == ["pgmux"], timeout=5)
    # a client without a name is told pgmux's, and sees it
    with psycopg.connect(mux.dsn(dbname="testdb"), autocommit=True) as conn:
        assert conn.execute("show application_name").fetchone() == ("pgmux",)


def test_a_database_entry_names_its_server_connections(pg: EmbeddedPostgres,
                                                       pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 1}, databases={
        "testdb": f"host=127.0.0.1 port={pg.port} dbname=testdb application_name=billing"})
    with psycopg.connect(mux.dsn(dbname="testdb", application_name="x"), autocommit=True) as c:
        c.execute("select 1")
    assert wait_for(lambda: _names(pg) == ["billing"], timeout=5)
