"""The console's statement parser: PgBouncer's grammar, quoting and limits."""

from __future__ import annotations

import pytest

from pgmux.admin.parse import BadArguments, Statement, bind_params, count_params, parse


@pytest.mark.parametrize("query, expected", [
    ("SHOW POOLS", Statement("cmd", "show", "POOLS")),
    ("show pools;", Statement("cmd", "show", "pools")),
    ("  \n\tPAUSE  ;  ", Statement("cmd", "pause", "")),
    ("PAUSE mydb", Statement("cmd", "pause", "mydb")),
    ('PAUSE "my-db"', Statement("cmd", "pause", "my-db")),
    ('PAUSE "a""b"', Statement("cmd", "pause", 'a"b')),
    ("KILL_CLIENT 17", Statement("cmd", "kill_client", "17")),
    ("SET default_pool_size = 5", Statement("set", "default_pool_size", "5")),
    ("set server_check_query = 'select 2'", Statement("set", "server_check_query", "select 2")),
    ("SET x TO 'it''s'", Statement("set", "x", "it's")),
    ("SET log_connections=1;", Statement("set", "log_connections", "1")),
])
def test_parse_accepts(query: str, expected: Statement) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize("query", [
    "", "SHOW POOLS STATS", "PAUSE my-db", "SHOW POOLS; SHOW STATS", "SELECT 1 + 1",
    "SET x = y z",
])
def test_parse_refuses(query: str) -> None:
    assert parse(query) is None


def test_oversized_words_are_bad_arguments() -> None:
    with pytest.raises(BadArguments):
        parse("PAUSE " + "x" * 64)
    with pytest.raises(BadArguments):
        parse("x" * 16)


def test_bind_params_quotes_what_is_not_a_word() -> None:
    assert count_params("KILL_CLIENT $1") == 1
    assert bind_params("KILL_CLIENT $1", ["42"]) == "KILL_CLIENT 42"
    assert bind_params("PAUSE $1", ["my-db"]) == 'PAUSE "my-db"'
    assert bind_params("SET server_check_query = $1", ["select 1"]) == \
        "SET server_check_query = 'select 1'"
    with pytest.raises(ValueError):
        bind_params("PAUSE $2", ["x"])
