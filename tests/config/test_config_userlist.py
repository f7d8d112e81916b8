"""Tests for userlist.txt parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgmux.config import ConfigError, load_userlist, parse_userlist

SCRAM = ("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$"
         "0gsBHmVbDoNYfdiPpHw2dXCnIufnu/qyiGhFOQPQz/Q=:"
         "ZCdL2nZUXNbu7Aw3X3Rc6cMhRrTPUGB1oPZRX/gp42o=")


def test_plain_md5_and_scram() -> None:
    text = (
        '"alice" "plainpw"\n'
        '"admin" "md545f2603610af569b6155c45067268c6b"\n'
        f'"bob" "{SCRAM}"\n'
    )
    assert parse_userlist(text) == {
        "alice": "plainpw",
        "admin": "md545f2603610af569b6155c45067268c6b",
        "bob": SCRAM,
    }


def test_escaped_quotes_and_trailing_fields() -> None:
    text = '"we""ird" "pa""ss" "extra" stuff\n'
    assert parse_userlist(text) == {'we"ird': 'pa"ss'}


def test_comments_blank_lines_and_whitespace() -> None:
    text = '; comment\n# other\n\n   "a"   "1"  \n;"b" "2"\n'
    assert parse_userlist(text) == {"a": "1"}


def test_last_duplicate_wins() -> None:
    assert parse_userlist('"a" "1"\n"a" "2"\n') == {"a": "2"}


def test_empty_password_field() -> None:
    assert parse_userlist('"a" ""\n') == {"a": ""}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('"a" "1"\n"unterminated\n', "unterminated quoted field"),
        ('"a" "1"\n"b"\n', "missing password field"),
        ('"a" "1"\n"b" nope\n', "missing password field"),
        ('"a" "1"\n"b" "unterminated\n', "unterminated quoted field"),
    ],
)
def test_errors_name_line(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_userlist(text, "userlist.txt")
    assert info.value.file == "userlist.txt" and info.value.line == 2
    assert fragment in info.value.message


def test_load_userlist(tmp_path: Path) -> None:
    path = tmp_path / "userlist.txt"
    path.write_text('"x" "y"\n', encoding="utf-8")
    assert load_userlist(path) == {"x": "y"}
    with pytest.raises(ConfigError, match="cannot read auth_file"):
        load_userlist(tmp_path / "missing.txt")
