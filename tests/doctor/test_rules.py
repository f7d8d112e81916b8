"""Each doctor rule, the pooler heuristic and the advice, on recorded (hand-built) facts."""

from __future__ import annotations

import json

import pytest

from pgmux.doctor.facts import DatabaseLimit, Limits, RoleLimit, Session
from pgmux.doctor.poolers import detect_pooler, pooled_by
from pgmux.doctor.rules import (
    RULES,
    Thresholds,
    connection_usage,
    database_limits,
    diagnose,
    idle_connections,
    idle_in_transaction,
    long_running_queries,
    many_from_one_client,
    pooler_connections,
    pooler_in_front,
    role_limits,
)
from tests.doctor.recorded import OWN_PID, direct_endpoints, facts, session

T = Thresholds()


def idle_sessions(count: int, start: int = 1000, **kwargs: object) -> list[Session]:
    return [session(start + i, "idle", **kwargs) for i in range(count)]  # type: ignore[arg-type]


# --- connection usage ------------------------------------------------------------------------


def test_usage_below_80_percent_is_silent() -> None:
    # 100 - 3 reserved = 97 usable; own session + 76 = 77 used (79%)
    f = facts(*idle_sessions(76, client="10.0.0.1", app="a"), max_connections=100)
    assert connection_usage(f, T) == []


def test_usage_at_80_percent_warns() -> None:
    f = facts(*idle_sessions(77), max_connections=100)  # 78 / 97 = 80.4%
    [finding] = connection_usage(f, T)
    assert (finding.code, finding.severity) == ("connections-near-limit", "warning")
    assert finding.evidence["used"] == 78
    assert finding.evidence["usable"] == 97
    assert finding.evidence["reserved"] == 3


def test_usage_at_95_percent_is_critical() -> None:
    f = facts(*idle_sessions(18), max_connections=23)  # 19 / 20 = 95%
    [finding] = connection_usage(f, T)
    assert (finding.code, finding.severity) == ("connections-at-limit", "critical")


def test_usage_counts_reserved_connections_of_pg16() -> None:
    # 20 - 3 - 5 = 12 usable; 10 used is 83%
    f = facts(*idle_sessions(9), max_connections=20, reserved=5)
    [finding] = connection_usage(f, T)
    assert finding.evidence["usable"] == 12
    assert finding.evidence["reserved"] == 8


def test_usage_with_no_usable_slot_is_critical() -> None:
    f = facts(max_connections=3, superuser_reserved=3)
    [finding] = connection_usage(f, T)
    assert finding.severity == "critical"


# --- idle connections ------------------------------------------------------------------------


def test_idle_connections_grouped_by_application_user_and_client() -> None:
    f = facts(
        *idle_sessions(12, app="leaky-worker", in_state=900),
        *idle_sessions(2, start=2000, app="web", in_state=900, client="10.0.0.2"),
        *idle_sessions(3, start=3000, app="leaky-worker", in_state=10),  # too recent
    )
    findings = idle_connections(f, T)
    assert [(x.evidence["application_name"], x.evidence["count"]) for x in findings] == [
        ("leaky-worker", 12),
        ("web", 2),
    ]
    leak, small = findings
    assert leak.severity == "warning"
    assert "leaky-worker" in leak.message
    assert leak.evidence["client_addr"] == "10.0.0.1"
    assert leak.evidence["longest_idle"] == 900
    assert sorted(leak.evidence["pids"]) == list(range(1000, 1012))
    assert small.severity == "info"


def test_big_idle_groups_are_listed_with_their_age_before_the_threshold() -> None:
    # the scenario with default thresholds: 12 leaky-worker connections idle 2s
    f = facts(
        *idle_sessions(12, app="leaky-worker", in_state=2, client="127.0.0.1"),
        *idle_sessions(2, start=2000, app="web", in_state=2),  # small and young: not listed
        max_connections=20,
    )
    [finding] = idle_connections(f, T)
    assert finding.severity == "info"
    assert finding.evidence["count"] == 12
    assert finding.evidence["past_threshold"] is False
    assert finding.evidence["longest_idle"] == 2
    assert "leaky-worker" in finding.message
    assert "12 of 17 usable" in finding.message
    assert "idle past 5m" in finding.message


def test_idle_threshold_zero_catches_fresh_idle_connections() -> None:
    f = facts(*idle_sessions(5, in_state=0.0))
    [finding] = idle_connections(f, Thresholds(idle=0))
    assert finding.evidence["count"] == 5


def test_idle_in_transaction_is_not_plain_idle() -> None:
    f = facts(session(1, "idle in transaction", in_state=900, xact=950))
    assert idle_connections(f, T) == []


def test_unix_socket_clients_are_named_local_socket() -> None:
    f = facts(*idle_sessions(6, client=None, in_state=900))
    [finding] = idle_connections(f, T)
    assert finding.evidence["client_addr"] == "local socket"


def test_the_doctors_own_session_never_counts_as_idle() -> None:
    own = session(OWN_PID, "idle", in_state=9999)
    f = facts(sessions=(own,))
    assert idle_connections(f, Thresholds(idle=0)) == []


# --- idle in transaction ---------------------------------------------------------------------


def test_idle_in_transaction_found_with_oldest_transaction_age() -> None:
    f = facts(
        session(7, "idle in transaction", app="stuck-job", in_state=40, xact=100),
        session(8, "idle in transaction (aborted)", app="stuck-job", in_state=35, xact=50),
        session(9, "idle in transaction", app="quick", in_state=0.2, xact=0.3),  # in flight
    )
    [finding] = idle_in_transaction(f, T)
    assert finding.code == "idle-in-transaction"
    assert finding.severity == "warning"
    assert finding.evidence["application_name"] == "stuck-job"
    assert finding.evidence["pids"] == [7, 8]
    assert finding.evidence["oldest_transaction"] == 100
    assert finding.evidence["longest_idle_in_transaction"] == 40
    assert "stuck-job" in finding.message


@pytest.mark.parametrize(
    ("seconds", "severity"), [(2, "info"), (29, "info"), (30, "warning"), (299, "warning"),
                              (300, "critical"), (3600, "critical")]
)  # fmt: skip
def test_idle_in_transaction_at_any_age_with_severity_by_age(seconds: int, severity: str) -> None:
    f = facts(session(7, "idle in transaction", app="stuck-job", in_state=seconds, xact=seconds))
    [finding] = idle_in_transaction(f, T)
    assert finding.severity == severity
    assert "hold their locks" in finding.message


def test_young_idle_in_transaction_is_info_and_gets_no_advice() -> None:
    d = diagnose(facts(session(7, "idle in transaction", app="stuck-job", in_state=2, xact=2)))
    assert [f.severity for f in d.findings] == ["info"]
    assert d.status == "ok"
    assert not any("idle_in_transaction_session_timeout" in a for a in d.advice)


# --- long-running queries --------------------------------------------------------------------


def test_long_running_queries_longest_first() -> None:
    f = facts(
        session(1, "active", query_age=90, in_state=90, xact=90, query="SELECT pg_sleep(1000)"),
        session(2, "active", query_age=600, in_state=600, xact=600, wait_event="transactionid"),
        session(3, "active", query_age=5, in_state=5),
        session(4, "idle", query_age=900, in_state=900),  # the last query, not running
    )
    [finding] = long_running_queries(f, T)
    assert finding.evidence["count"] == 2
    assert [q["pid"] for q in finding.evidence["queries"]] == [2, 1]
    assert finding.evidence["queries"][0]["wait_event"] == "transactionid"
    assert "pid 2" in finding.message


def test_no_long_queries_no_finding() -> None:
    assert long_running_queries(facts(session(1, "active", query_age=3)), T) == []


# --- role and database limits ----------------------------------------------------------------


def test_role_limit_below_server_limit_is_reported_by_its_use() -> None:
    f = facts(
        role_limits=(
            RoleLimit("reporting", 10, 9),  # 90%: warning
            RoleLimit("batch", 4, 4),  # full: critical
            RoleLimit("web", 50, 3),  # below the server's 97 but barely used: info
            RoleLimit("huge", 500, 100),  # above the server's limit: never bites first
        )
    )
    found = {x.evidence["role"]: x.severity for x in role_limits(f, T)}
    assert found == {"reporting": "warning", "batch": "critical", "web": "info"}


def test_database_limit_bites_first() -> None:
    f = facts(database_limits=(DatabaseLimit("analytics", 5, 4), DatabaseLimit("big", 200, 1)))
    [finding] = database_limits(f, T)
    assert finding.code == "database-limit"
    assert finding.severity == "warning"
    assert finding.evidence == {"database": "analytics", "limit": 5, "connections": 4}


def test_zero_limit_is_critical() -> None:
    [finding] = role_limits(facts(role_limits=(RoleLimit("locked", 0, 0),)), T)
    assert finding.severity == "critical"


# --- many connections from one client --------------------------------------------------------


def test_many_connections_from_one_client_address() -> None:
    f = facts(
        *idle_sessions(7, app="a", client="10.0.0.9"),
        *[session(2000 + i, "active", app="b", client="10.0.0.9") for i in range(3)],
        *idle_sessions(9, start=3000, client="10.0.0.8"),
    )
    [finding] = many_from_one_client(f, T)
    assert finding.severity == "warning"
    assert finding.evidence["client_addr"] == "10.0.0.9"
    assert finding.evidence["count"] == 10
    assert finding.evidence["applications"] == {"a": 7, "b": 3}


def test_many_connections_message_names_the_applications() -> None:
    f = facts(
        *idle_sessions(12, app="leaky-worker", client="127.0.0.1", in_state=2),
        *[session(2000 + i, "idle in transaction", app="stuck-job", client="127.0.0.1")
          for i in range(2)],
    )  # fmt: skip
    [finding] = many_from_one_client(f, T)
    assert "14 connections from 127.0.0.1 (12 'leaky-worker', 2 'stuck-job')" in finding.message


# --- a pooler's own server connections -------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "query", "pooler"),
    [
        ("pgmux", "select 1", "pgmux"),
        ("pgmux auth_query", "select 1", "pgmux"),
        ("PgBouncer", "select 1", "PgBouncer"),
        ("web - 10.1.2.3:40312", "select 1", "a pooler"),  # application_name_add_host
        ("", "DISCARD ALL", "a pool"),  # released by a pool's reset query
        ("pgmux-doctor", "select 1", None),  # this tool is no pooler
        ("web", "select 1", None),
        ("pgmuxer", "select 1", None),
        ("web - not an address", "select 1", None),
    ],
)
def test_pooled_by(app: str, query: str, pooler: str | None) -> None:
    found = pooled_by(session(1, "idle", app=app, query=query))
    assert (found.pooler if found else None) == pooler


def test_a_poolers_idle_connections_are_its_pool_not_a_leak() -> None:
    pool = idle_sessions(8, app="pgmux", client="10.0.0.5", in_state=900)
    unnamed = [session(3000 + i, "idle", app="", client="10.0.0.5", in_state=900,
                       query="DISCARD ALL") for i in range(4)]  # fmt: skip
    f = facts(*pool, *unnamed, session(50, "active", app="pgmux", client="10.0.0.5"))
    assert idle_connections(f, Thresholds(idle=1)) == []
    assert many_from_one_client(f, T) == []
    found = {x.evidence["pooler"]: x for x in pooler_connections(f, T)}
    assert set(found) == {"pgmux", "a pool"}
    assert (found["pgmux"].evidence["count"], found["pgmux"].evidence["idle"]) == (9, 8)
    assert found["pgmux"].severity == "info"
    assert "pgmux holds 9 server connection(s) from 10.0.0.5" in found["pgmux"].message
    d = diagnose(f, Thresholds(idle=1))
    assert d.status == "ok"
    assert not any("Put pgmux between" in a for a in d.advice)
    assert any("A pooler already holds connections here (" in a for a in d.advice)


def test_a_pool_larger_than_its_share_is_a_warning() -> None:
    # 20 - 3 = 17 usable, 75% = 12: a pool of 17 leaves nothing for direct connections
    f = facts(*idle_sessions(17, app="pgmux", in_state=5), max_connections=20)
    [finding] = pooler_connections(f, T)
    assert finding.severity == "warning"
    assert "more than 12" in finding.message


def test_beside_a_pooler_a_leak_is_pointed_at_it() -> None:
    f = facts(
        *idle_sessions(4, app="pgmux", client="127.0.0.1", in_state=900),
        *idle_sessions(12, start=2000, app="leaky-worker", client="127.0.0.1", in_state=900),
    )
    d = diagnose(f)
    [leak] = [x for x in d.findings if x.code == "idle-connections"]
    assert leak.evidence["count"] == 12
    [crowd] = [x for x in d.findings if x.code == "many-connections-from-one-client"]
    assert crowd.evidence["count"] == 12
    assert any("point 'leaky-worker' at it" in a for a in d.advice)


# --- pooler in front -------------------------------------------------------------------------


def test_direct_connection_is_not_a_pooler() -> None:
    guess = detect_pooler(direct_endpoints())
    assert guess.kind == "none"
    assert pooler_in_front(facts(), T) == []


def test_backend_pid_changing_means_transaction_pooler() -> None:
    guess = detect_pooler(direct_endpoints(backend_pids=(100, 101)))
    assert guess.kind == "pooler"
    assert "pg_backend_pid" in guess.signals[0]


def test_tcp_client_seen_as_unix_socket_is_a_relay() -> None:
    e = direct_endpoints(
        dialled_port=6432, seen_client_addr=None, seen_client_port=None, server_addr=None,
        server_port=None,
    )  # fmt: skip
    assert detect_pooler(e).kind == "relay"


def test_port_mismatch_alone_is_not_enough() -> None:
    # e.g. a container port mapping: the URL says 55432, the server listens on 5432
    e = direct_endpoints(dialled_port=55432)
    guess = detect_pooler(e)
    assert guess.kind == "none"
    assert guess.signals  # still recorded


def test_other_peer_address_and_port_mismatch_make_a_relay() -> None:
    e = direct_endpoints(dialled_port=6432, seen_client_addr="10.1.1.1", seen_client_port=33333)
    guess = detect_pooler(e)
    assert guess.kind == "relay"
    assert len(guess.signals) == 2
    [finding] = pooler_in_front(facts(endpoints=e), T)
    assert finding.severity == "info"
    assert finding.evidence["detected"] is True


def test_ipv4_mapped_address_is_the_same_peer() -> None:
    e = direct_endpoints(seen_client_addr="::ffff:127.0.0.1")
    assert detect_pooler(e).signals == ()


# --- the whole diagnosis ---------------------------------------------------------------------


def test_healthy_server_is_ok_with_sizing_advice() -> None:
    d = diagnose(facts(session(1, "active"), session(2, "idle", in_state=3)))
    assert d.status == "ok"
    assert d.exit_code == 0
    assert d.findings == ()
    assert any("72 connection(s) or fewer" in a for a in d.advice)  # 75% of 97


def test_leak_scenario_is_a_warning_naming_the_application() -> None:
    f = facts(
        *idle_sessions(12, app="leaky-worker", in_state=600),
        session(50, "idle in transaction", app="stuck-job", in_state=120, xact=130),
        session(51, "idle in transaction", app="stuck-job", in_state=120, xact=125),
        max_connections=40,
    )
    d = diagnose(f)
    assert d.status == "warning"
    assert d.exit_code == 1
    codes = [x.code for x in d.findings]
    assert codes == ["idle-connections", "idle-in-transaction", "many-connections-from-one-client"]
    data = json.loads(json.dumps(d.to_json()))
    assert set(data) == {"findings", "advice", "status"}
    assert data["findings"][0]["evidence"]["application_name"] == "leaky-worker"
    for item in data["findings"]:
        assert set(item) == {"code", "severity", "message", "evidence"}
    advice = " ".join(d.advice)
    assert "pool_mode = transaction" in advice
    assert "idle_in_transaction_session_timeout" in advice
    assert "leaky-worker" in advice


def test_critical_when_at_the_limit() -> None:
    d = diagnose(facts(*idle_sessions(19, in_state=1), max_connections=23))
    assert d.status == "critical"
    assert d.exit_code == 2
    assert any("killall" in a for a in d.advice)


def test_role_limit_advice_sizes_the_pool_under_the_role_limit() -> None:
    d = diagnose(facts(role_limits=(RoleLimit("reporting", 8, 7),)))
    assert any("Role reporting" in a and "6 connection(s)" in a for a in d.advice)


def test_pool_budget_respects_the_current_roles_limit() -> None:
    f = facts(limits=Limits(100, 3, 0, role_limit=20))
    assert any("15 connection(s) or fewer" in a for a in diagnose(f).advice)


def test_rules_table_names_are_unique_and_all_run() -> None:
    names = [name for name, _ in RULES]
    assert len(names) == len(set(names)) == 11


@pytest.mark.parametrize("threshold", [0.0, 30.0, 300.0])
def test_rules_are_pure(threshold: float) -> None:
    f = facts(*idle_sessions(6, in_state=301))
    t = Thresholds(idle=threshold)
    assert diagnose(f, t) == diagnose(f, t)
