"""The pooler-console rules (pooler-console, pinned-servers), the console's row parsing and
which console the doctor reads, on hand-built console rows."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgmux.doctor.console import (
    ConsoleFacts,
    _first_line,
    admin_url,
    console_from_rows,
    console_target,
    describe,
)
from pgmux.doctor.findings import Thresholds
from pgmux.doctor.pins import pinned_servers, pooler_console
from pgmux.doctor.rules import diagnose
from tests.doctor.recorded import facts

T = Thresholds()
WHERE = "postgres@127.0.0.1:6432/pgbouncer"


def pool(db: str = "app", user: str = "alice", waiting: int = 0, **kw: Any) -> dict[str, Any]:
    row = {"database": db, "user": user, "cl_active": 0, "cl_waiting": waiting, "sv_active": 0,
           "sv_idle": 0, "sv_used": 0, "sv_tested": 0, "sv_login": 0, "maxwait": 0,
           "maxwait_us": 0, "pool_mode": "transaction"}
    row.update(kw)
    return row


def sock(pinned: str | None, db: str = "app", user: str = "alice", port: int = 40000,
         state: str = "active") -> dict[str, Any]:
    row: dict[str, Any] = {"database": db, "user": user, "state": state, "addr": "10.0.0.5",
                           "port": port, "application_name": "worker"}
    if pinned is not None:  # NOTE: None: PgBouncer's console, no `pinned` column
        row["pinned"] = pinned
    return row


def console(servers: list[str | None], clients: list[str | None] | None = None,
            pool_size: int | None = None, waiting: int = 0, **kw: Any) -> ConsoleFacts:
    """One pool app/alice with a server per entry of `servers` (its pin reasons, "" for none)
    and a client per entry of `clients` (default: one per pinned server, same reasons)."""
    if clients is None:
        clients = [p for p in servers if p]
    databases = [{"name": "app", "pool_size": pool_size}] if pool_size is not None else []
    return console_from_rows(
        WHERE, kw.pop("source", "flag"),
        [pool("pgbouncer", "pgbouncer"), pool(waiting=waiting)],
        [sock(p, port=5000 + i) for i, p in enumerate(servers)],
        [sock(None, "pgbouncer", "postgres")] + [sock(p, port=40000 + i)
                                                 for i, p in enumerate(clients)],
        databases)


@pytest.mark.parametrize(
    ("servers", "pool_size", "warns"),
    [
        ([], None, False),  # no servers: nothing pinned
        (["", ""], None, False),  # none pinned
        (["advisory lock", ""], None, False),  # half is not most
        (["advisory lock", "LISTEN", ""], None, True),  # 2 of 3
        (["advisory lock"], None, True),  # 1 of 1: the only server
        (["advisory lock"], 2, False),  # 1 of a pool of 2: another may open
        (["advisory lock", "advisory lock"], 10, False),  # 2 of 10: 8 more may open
        (["advisory lock", "temp table", "LISTEN"], 4, True),  # 3 of 4
        (["advisory lock", "", "", ""], 2, False),  # 1 of 4 open (more than pool_size)
    ],
)
def test_pinned_servers_table(servers: list[str], pool_size: int | None, warns: bool) -> None:
    found = pinned_servers(facts(console=console(list(servers), pool_size=pool_size)), T)
    assert [f.code for f in found] == (["pinned-servers"] if warns else [])
    if warns:
        assert found[0].severity == "warning"


def test_pinned_servers_names_pool_counts_and_reasons() -> None:
    c = console(["advisory lock", "advisory lock,LISTEN", ""],
                ["advisory lock", "advisory lock,LISTEN", "", ""], waiting=3)
    [finding] = pinned_servers(facts(console=c), T)
    assert finding.message.startswith("pool app/alice: 2 of 3 server connection(s) pinned")
    assert "(advisory lock: 2, LISTEN: 1)" in finding.message
    assert "3 client(s) waiting" in finding.message
    ev = finding.evidence
    assert (ev["database"], ev["user"], ev["pinned_servers"], ev["servers"]) == (
        "app", "alice", 2, 3)
    assert ev["reasons"] == {"advisory lock": 2, "LISTEN": 1}
    assert ev["pinned_clients"] == 2
    assert [c["pinned"] for c in ev["clients"]] == ["advisory lock", "advisory lock,LISTEN"]
    json.dumps(finding.to_json())


def test_reasons_come_from_servers_when_no_client_row_says() -> None:
    [finding] = pinned_servers(facts(console=console(["LISTEN", "LISTEN"], clients=[])), T)
    assert finding.evidence["reasons"] == {"LISTEN": 2}


def test_pools_are_judged_apart() -> None:
    c = console_from_rows(WHERE, "flag", [pool("a"), pool("b")],
                          [sock("LISTEN", "a"), sock("", "b", port=2), sock("", "b", port=3)],
                          [sock("LISTEN", "a")])
    assert [f.evidence["database"] for f in pinned_servers(facts(console=c), T)] == ["a"]


def test_threshold_is_a_setting() -> None:
    c = console(["LISTEN", "LISTEN", "", ""])
    assert pinned_servers(facts(console=c), T) == []
    assert len(pinned_servers(facts(console=c), Thresholds(pinned_share=0.4))) == 1


def test_pgbouncer_console_has_no_pins() -> None:
    c = console([None, None], clients=[None])
    assert not c.shows_pins
    assert pinned_servers(facts(console=c), T) == []
    [info] = pooler_console(facts(console=c), T)
    assert info.severity == "info"
    assert "no `pinned` column" in info.message


def test_no_console_no_findings() -> None:
    f = facts()
    assert pooler_console(f, T) == []
    assert pinned_servers(f, T) == []


@pytest.mark.parametrize(("source", "severity"), [("flag", "warning"), ("auto", "info")])
def test_unreadable_console(source: str, severity: str) -> None:
    c = ConsoleFacts(WHERE, source, error="connection refused")  # type: ignore[arg-type]
    [finding] = pooler_console(facts(console=c), T)
    assert (finding.code, finding.severity) == ("pooler-console", severity)
    assert "connection refused" in finding.message
    assert ("--pooler ADMIN_URL" in finding.message) == (source == "auto")
    assert pinned_servers(facts(console=c), T) == []


def test_console_read_says_what_was_read() -> None:
    [finding] = pooler_console(facts(console=console(["LISTEN", "", ""])), T)
    assert finding.severity == "info"
    assert finding.message == (
        f"read the pooler console {WHERE} (--pooler): 1 pool(s), 3 server connection(s), "
        "1 client(s), 1 server(s) pinned")
    assert finding.evidence["pinned_servers"] == 1


def test_console_rows_skip_the_admin_database() -> None:
    c = console(["LISTEN"], pool_size=5)
    assert [p.database for p in c.pools] == ["app"]
    assert [s.database for s in c.clients] == ["app"]
    assert c.pool_sizes == {"app": 5}


def test_diagnosis_reports_pins_with_advice() -> None:
    d = diagnose(facts(console=console(["advisory lock", "advisory lock", ""])))
    codes = [f.code for f in d.findings]
    assert codes[-2:] == ["pooler-console", "pinned-servers"]
    assert d.status == "warning"
    assert any(a.startswith("Pinned servers in app/alice:") for a in d.advice)


@pytest.mark.parametrize(
    ("pooler", "through", "expected"),
    [
        ("host=p port=6432 dbname=pgbouncer", False,
         ("host=p port=6432 dbname=pgbouncer", "flag")),
        ("host=p port=6432 dbname=pgbouncer", True,
         ("host=p port=6432 dbname=pgbouncer", "flag")),
        (None, False, None),
    ],
)
def test_console_target(pooler: str | None, through: bool, expected: Any) -> None:
    assert console_target("postgresql://u@h:6432/app", pooler, through) == expected


def test_console_target_through_a_pooler_keeps_credentials() -> None:
    target = console_target("postgresql://u:secret@h:6432/app?sslmode=disable", None, True)
    assert target is not None
    url, source = target
    assert source == "auto"
    assert url == admin_url("postgresql://u:secret@h:6432/app?sslmode=disable")
    for part in ("dbname=pgbouncer", "user=u", "password=secret", "host=h", "port=6432",
                 "sslmode=disable"):
        assert part in url
    assert describe(url) == "u@h:6432/pgbouncer"
    assert "secret" not in describe(url)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('connection failed: connection to server at "127.0.0.1", port 6432 failed: FATAL:  '
         "not allowed", "not allowed"),
        ('connection failed: connection to server at "::1", port 6432 failed: Connection '
         "refused\n\tIs the server running on that host?", "Connection refused"),
        ("", "OperationalError"),
        ('connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  '
         'database "pgbouncer" does not exist', 'database "pgbouncer" does not exist'),
        ("server closed the connection unexpectedly", "server closed the connection unexpectedly"),
    ],
)
def test_console_error_keeps_the_reason(text: str, reason: str) -> None:
    assert _first_line(psycopg.OperationalError(text)) == reason
