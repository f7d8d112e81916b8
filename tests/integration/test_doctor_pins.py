"""`pgmux doctor` through a real pgmux (transaction mode, pool of 3) whose clients hold session
advisory locks: the doctor reads pgmux's console and warns when most servers are pinned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgmux.cli.main import main
from pgmux.embedded import EmbeddedPostgres, free_port
from tests.integration.adminutil import rows, wait_for
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(60)

Conn = psycopg.Connection[Any]


@pytest.fixture
def mux(pgmux_factory: PgmuxFactory) -> Pgmux:
    # NOTE: the default pin cap is the pool size minus one: two of the three servers may pin.
    return pgmux_factory({"default_pool_size": 3, "max_client_conn": 20})


@pytest.fixture
def clients(mux: Pgmux) -> Iterator[list[Conn]]:
    conns = [psycopg.connect(mux.dsn(dbname="testdb"), autocommit=True,
                             application_name=f"locker-{i}") for i in range(3)]
    yield conns
    for conn in conns:
        conn.close()


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    main(["doctor", *argv, "--json"])
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def findings(data: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in data["findings"] if f["code"] == code]


def pinned(mux: Pgmux) -> int:
    return sum(1 for r in rows(mux, "SHOW SERVERS") if r["database"] == "testdb" and r["pinned"])


def test_doctor_warns_when_most_servers_are_pinned(
        pg: EmbeddedPostgres, mux: Pgmux, clients: list[Conn],
        capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = clients
    c.execute("select 1")  # NOTE: an unpinned client, listed but not counted
    a.execute("select pg_advisory_lock(1)")
    b.execute("select pg_advisory_lock(2)")
    assert wait_for(lambda: pinned(mux) == 2)

    # the doctor's URL goes through pgmux: its console is found with the same credentials
    data = doctor(capsys, mux.dsn(dbname="testdb"))
    [console] = findings(data, "pooler-console")
    assert console["severity"] == "info"
    assert console["evidence"]["source"] == "auto"
    assert console["evidence"]["pinned_servers"] == 2
    [warning] = findings(data, "pinned-servers")
    assert warning["severity"] == "warning"
    ev = warning["evidence"]
    assert (ev["database"], ev["user"], ev["pinned_servers"], ev["pool_size"]) == (
        "testdb", "postgres", 2, 3)
    assert ev["reasons"] == {"advisory lock": 2}
    assert sorted(cl["application_name"] for cl in ev["clients"]) == ["locker-0", "locker-1"]
    assert "pool testdb/postgres: 2 of 3 server connection(s) pinned" in warning["message"]
    assert data["status"] in ("warning", "critical")

    # named with --pooler, against PostgreSQL directly
    direct = doctor(capsys, f"postgresql://postgres@127.0.0.1:{pg.port}/testdb",
                    "--pooler", mux.dsn(dbname="pgbouncer"))
    assert findings(direct, "pooler-console")[0]["evidence"]["source"] == "flag"
    assert len(findings(direct, "pinned-servers")) == 1

    a.execute("select pg_advisory_unlock(1)")
    b.execute("select pg_advisory_unlock(2)")
    assert wait_for(lambda: pinned(mux) == 0)
    data = doctor(capsys, mux.dsn(dbname="testdb"))
    assert findings(data, "pinned-servers") == []
    assert findings(data, "pooler-console")[0]["evidence"]["pinned_servers"] == 0


def test_unreadable_console_is_not_fatal(
        mux: Pgmux, capsys: pytest.CaptureFixture[str]) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/pgbouncer?connect_timeout=2"
    data = doctor(capsys, mux.dsn(dbname="testdb"), "--pooler", nobody)
    [console] = findings(data, "pooler-console")
    assert (console["severity"], console["evidence"]["read"]) == ("warning", False)
    assert findings(data, "pinned-servers") == []
    assert data["status"] in ("warning", "critical")
