"""Session state as data: reading it back, merging startup settings, the fewest statements
that move a server from one state to another, and finding one PREPARE in a query text."""

from __future__ import annotations

import json

import pytest

from pgmux.protocol.state import (
    EMPTY,
    PIN_ADVISORY,
    PIN_LISTEN,
    PIN_PREPARE,
    canonical_values,
    merge_startup,
    parse_readback,
    prepare_text,
    replay,
    split_statements,
    state,
)

TRACKED = frozenset({"TimeZone", "application_name", "search_path"})


def readback(**fields: object) -> str:
    base: dict[str, object] = {"gucs": {}, "role": "none", "session_user": "app",
                               "prepared": {}, "advisory": 0, "listen": 0, "temp": 0,
                               "cursors": 0}
    base.update(fields)
    return json.dumps(base)


def test_parse_readback_keeps_settings_and_leaves_reported_parameters_out() -> None:
    got = parse_readback(readback(gucs={"statement_timeout": "1234ms", "TimeZone": "UTC",
                                        "work_mem": "3MB"}), "app", TRACKED)
    assert got == state({"statement_timeout": "1234ms", "work_mem": "3MB"})


def test_parse_readback_role_session_user_prepared_and_pins() -> None:
    got = parse_readback(readback(role="reader", session_user="alice",
                                  prepared={"p": "PREPARE p AS SELECT 1"},
                                  advisory=2, listen=1), "app", TRACKED)
    assert dict(got.gucs) == {"role": "reader", "session_authorization": "alice"}
    assert dict(got.prepared) == {"p": "PREPARE p AS SELECT 1"}
    assert got.pins == tuple(sorted((PIN_ADVISORY, PIN_LISTEN)))


def test_parse_readback_prepare_from_a_multi_statement_text() -> None:
    source = "PREPARE a AS SELECT 1; PREPARE b(int) AS SELECT $1 + 1"
    got = parse_readback(readback(prepared={"a": source, "b": source}), "app", TRACKED)
    assert dict(got.prepared) == {"a": "PREPARE a AS SELECT 1",
                                  "b": "PREPARE b(int) AS SELECT $1 + 1"}
    # a text pgmux cannot cut safely pins the client instead of guessing
    odd = parse_readback(readback(prepared={"x": "EXECUTE something"}), "app", TRACKED)
    assert odd.pins == (PIN_PREPARE,) and odd.prepared == ()


def test_parse_readback_rejects_what_is_not_its_answer() -> None:
    with pytest.raises(ValueError):
        parse_readback("[1, 2]", "app", TRACKED)


def test_merge_startup_returns_reset_settings_to_their_startup_value() -> None:
    startup = state({"statement_timeout": "3456"})
    assert merge_startup(startup, EMPTY) == startup  # after RESET ALL / DISCARD ALL
    assert merge_startup(startup, state({"statement_timeout": "1s"})) == state(
        {"statement_timeout": "1s"})
    assert merge_startup(EMPTY, state({"work_mem": "1MB"})) == state({"work_mem": "1MB"})


REPLAYS = [
    (EMPTY, EMPTY, None),
    (EMPTY, state({"statement_timeout": "1234ms"}),
     "SELECT pg_catalog.set_config('statement_timeout', '1234ms', false)"),
    (state({"statement_timeout": "1234ms", "work_mem": "3MB"}), state({"work_mem": "3MB"}),
     'RESET "statement_timeout"'),
    (state({"a.b": "x"}), EMPTY, 'RESET "a"."b"'),
    (state({"work_mem": "1MB"}), state({"work_mem": "2MB", "lock_timeout": "5s"}),
     "SELECT pg_catalog.set_config('lock_timeout', '5s', false), "
     "pg_catalog.set_config('work_mem', '2MB', false)"),
    (EMPTY, state({"role": "reader", "session_authorization": "alice"}),
     "SELECT pg_catalog.set_config('session_authorization', 'alice', false), "
     "pg_catalog.set_config('role', 'reader', false)"),
    # a new session user resets the role, so an unchanged role is set again
    (state({"role": "r", "session_authorization": "a"}),
     state({"role": "r", "session_authorization": "b"}),
     "SELECT pg_catalog.set_config('session_authorization', 'b', false), "
     "pg_catalog.set_config('role', 'r', false)"),
    (state({"role": "r", "session_authorization": "a"}), EMPTY,
     "RESET SESSION AUTHORIZATION; RESET ROLE"),
    (state({"role": "r"}), EMPTY, "RESET ROLE"),
    (state(prepared={"p": "PREPARE p AS SELECT 1"}),
     state(prepared={"p": "PREPARE p AS SELECT 2", "q": "PREPARE q AS SELECT 3"}),
     'DEALLOCATE "p"; PREPARE p AS SELECT 2; PREPARE q AS SELECT 3'),
    (state({"x.y": "it's"}), state({"x.y": "it's"}), None),
    (EMPTY, state({"x.y": "it's"}), "SELECT pg_catalog.set_config('x.y', 'it''s', false)"),
    # pins never move
    (EMPTY, state(pins=[PIN_LISTEN]), None),
]


@pytest.mark.parametrize(("have", "want", "sql"), REPLAYS)
def test_replay_table(have: object, want: object, sql: str | None) -> None:
    assert replay(have, want) == sql  # type: ignore[arg-type]


@pytest.mark.parametrize(("sql", "parts"), [
    ("select 1; select 2;", ["select 1", "select 2"]),
    ("select ';' ; select 'it''s;'", ["select ';'", "select 'it''s;'"]),
    ("select E'\\';'; select 2", ["select E'\\';'", "select 2"]),
    ('select ";"; select 2', ['select ";"', "select 2"]),
    ("select $$;$$; select $a$ $$; $a$", ["select $$;$$", "select $a$ $$; $a$"]),
    ("select 1 -- ; not here\n; select 2", ["select 1 -- ; not here", "select 2"]),
    ("select /* ; /* ; */ ; */ 1; select 2", ["select /* ; /* ; */ ; */ 1", "select 2"]),
    ("select a$b; select 2", ["select a$b", "select 2"]),
    ("", []),
])
def test_split_statements(sql: str, parts: list[str]) -> None:
    assert split_statements(sql) == parts


def test_prepare_text_finds_exactly_one() -> None:
    src = 'PREPARE "Mixed" AS SELECT 1; prepare lower (int) as select $1; PREPARE x AS SELECT 2'
    assert prepare_text(src, "Mixed") == 'PREPARE "Mixed" AS SELECT 1'
    assert prepare_text(src, "lower") == "prepare lower (int) as select $1"
    assert prepare_text(src, "mixed") is None
    assert prepare_text("PREPARE a AS SELECT 1; PREPARE a AS SELECT 2", "a") is None


@pytest.mark.parametrize(("asked", "reported", "want"), [
    # not reported again (the value did not change): the last report is its spelling
    ({"DateStyle": "ISO"}, {"DateStyle": "ISO, MDY"}, {("DateStyle", "ISO"): "ISO, MDY"}),
    # reported after the SET: the new report
    ({"DateStyle": "German"}, {"DateStyle": "German, DMY"},
     {("DateStyle", "German"): "German, DMY"}),
    ({"TimeZone": "utc"}, {"TimeZone": "UTC"}, {("TimeZone", "utc"): "UTC"}),
    # a parameter the server never reports: nothing to learn
    ({"search_path": "a"}, {"DateStyle": "ISO, MDY"}, {}),
    ({}, {"DateStyle": "ISO, MDY"}, {}),
])
def test_canonical_values(asked: dict[str, str], reported: dict[str, str],
                          want: dict[tuple[str, str], str]) -> None:
    assert canonical_values(asked, reported) == want
