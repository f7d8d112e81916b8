"""changes_session: which statements leave session state behind in transaction mode."""

from __future__ import annotations

import pytest

from pgmux.protocol.sql import NONE, TRACKED, UNTRACKED, changes_session, set_config_query

LEAVES_STATE = [
    b"SET search_path = x", b"set\ttimezone to 'UTC'", b"  create temp table t ()",
    b"CREATE TEMPORARY TABLE t ()", b"create local temp table t ()", b"RESET ALL",
    b"DISCARD ALL", b"listen chan", b"prepare p as select 1", b"DEALLOCATE p",
    b"declare c cursor with hold for select 1", b"load 'auto_explain'",
    b"set session characteristics as transaction read only", b"unlisten *",
    b"close c", b"drop table t", b"select pg_advisory_unlock(1)",
    b"select pg_advisory_xact_lock(1)",
    b"set session authorization bob", b"select pg_advisory_lock(1)",
    b"SELECT pg_try_advisory_lock_shared(1)", b"select set_config('x.y', '1', false)",
    b"SELECT Set_Config('x.y', '1', false)", b"select dblink_connect('c')",
    b"select 1; set x = 1", b"select 1;\n  SET x = 1;",
    # NOTE: non-ASCII text (UTF-8, or bytes invalid in it) around the statement
    "SELECT 'größe'; SET application_name = 'ä'".encode(), b"select '\xff\xfe'; set x = 1",
    "SELECT set_config('app.name', '日本', false)".encode(),
]
STAYS_CLEAN = [
    b"select 1", b"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    b"set local statement_timeout = 5", b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    b"set constraints all deferred", b"begin", b"commit", b"select 1; select 2;",
    b"insert into settings values ('set x')", b"create table t ()", b"selected",
    "SELECT 'ŞET x' AS größe;".encode(), b"select '\xff\xfe set x = 1'",
]


@pytest.mark.parametrize("sql", LEAVES_STATE)
def test_leaves_state(sql: bytes) -> None:
    assert changes_session(sql)


@pytest.mark.parametrize("sql", STAYS_CLEAN)
def test_stays_clean(sql: bytes) -> None:
    assert not changes_session(sql)


@pytest.mark.parametrize(("sql", "verdict"), [
    (b"select 1", NONE), (b"set x = 1", TRACKED), (b"select pg_advisory_lock(1)", TRACKED),
    (b"load 'auto_explain'", UNTRACKED), (b"select dblink_connect('c')", UNTRACKED),
    (b"set x = 1; load 'y'", UNTRACKED), (b"select 1; listen c", TRACKED),
])
def test_what_kind_of_state(sql: bytes, verdict: int) -> None:
    assert changes_session(sql) == verdict


def test_set_config_query_quotes_values() -> None:
    q = set_config_query({"search_path": '"$user", public', "application_name": "it's"})
    assert q == ("SELECT pg_catalog.set_config('search_path', '\"$user\", public', false), "
                 "pg_catalog.set_config('application_name', 'it''s', false)")


def test_cached_verdicts_match_and_stay_bounded() -> None:
    from pgmux.protocol import sql

    for stmt in LEAVES_STATE + STAYS_CLEAN:
        assert sql.changes_session_cached(stmt) == sql.changes_session(stmt)
        assert sql.changes_session_cached(stmt) == sql.changes_session(stmt)
    for i in range(sql._VERDICTS_MAX + 10):
        sql.changes_session_cached(b"select %d" % i)
    assert len(sql._VERDICTS) <= sql._VERDICTS_MAX
