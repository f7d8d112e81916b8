"""Each pooler host's share of a role's connections (several pgmux hosts, one budget)."""

from __future__ import annotations

from pgmux.doctor.facts import RoleLimit, Session
from pgmux.doctor.rules import Thresholds, pooler_connections
from tests.doctor.recorded import facts, session

T = Thresholds()


def pooled(start: int, n: int, host: str, app: str = "pgmux") -> list[Session]:
    return [session(start + i, "idle", app=app, client=host, in_state=30) for i in range(n)]


def test_each_host_says_its_share_of_the_role_limit() -> None:
    f = facts(*pooled(1000, 12, "10.0.0.5"), *pooled(2000, 9, "10.0.0.6"),
              session(3000, "active", app="psql", client="10.0.0.9"),
              role_limits=(RoleLimit("app", 30, 22),))
    found = {x.evidence["client_addr"]: x for x in pooler_connections(f, T)}
    five, six = found["10.0.0.5"], found["10.0.0.6"]
    assert five.severity == six.severity == "info"
    assert five.message.endswith(
        "; this host's share: 12 of role app's CONNECTION LIMIT 30 (40%), 1 other host(s) 9 "
        "(10.0.0.6 9), 8 left")
    assert "this host's share: 9 of role app's CONNECTION LIMIT 30 (30%)" in six.message
    assert (five.evidence["budget"], five.evidence["left"]) == (30, 8)
    assert five.evidence["other_hosts"] == {"10.0.0.6": 9}


def test_a_spent_role_limit_is_a_warning_that_names_53300() -> None:
    f = facts(*pooled(1000, 5, "10.0.0.5"), *pooled(2000, 5, "10.0.0.6"),
              role_limits=(RoleLimit("app", 10, 10),))
    findings = pooler_connections(f, T)
    assert len(findings) == 2
    for finding in findings:
        assert finding.severity == "warning"
        assert "53300" in finding.message and finding.evidence["left"] == 0


def test_without_a_role_limit_the_share_is_of_the_server() -> None:
    # 100 - 3 reserved = 97 usable; 11 sessions with the doctor's own
    f = facts(*pooled(1000, 10, "10.0.0.5", app="pgbouncer"))
    [finding] = pooler_connections(f, T)
    assert "this host's share: 10 of the server's 97 usable connections (10%), 86 left" in \
        finding.message


def test_a_full_server_is_not_the_pools_warning() -> None:
    # 20 - 3 = 17 usable, all taken, but by someone else's leak: the pool is not to blame
    f = facts(*pooled(1000, 4, "10.0.0.5"),
              *[session(2000 + i, "idle", app="leaky", client="10.0.0.7") for i in range(12)],
              max_connections=20)
    [finding] = pooler_connections(f, T)
    assert finding.severity == "info"
    assert "this host's share: 4 of the server's 17 usable connections (24%), 0 left" in \
        finding.message
