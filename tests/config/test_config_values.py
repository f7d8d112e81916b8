"""Unit tests for the value converters behind every pgbouncer.ini setting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pgmux.config import load_config, values


@pytest.mark.parametrize("text", ["1", "yes", "on", "true", "TRUE", " On "])
def test_bool_true(text: str) -> None:
    assert values.parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "no", "off", "false", "False"])
def test_bool_false(text: str) -> None:
    assert values.parse_bool(text) is False


@pytest.mark.parametrize("text", ["2", "y", "", "enabled"])
def test_bool_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid boolean"):
        values.parse_bool(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("0.5", 0.5),
        ("1.25", 1.25),
        (".5", 0.5),
        ("1e2", 100.0),
        ("250ms", 0.25),
        ("1500us", 0.0015),
        ("10s", 10.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("5 min", 300.0),
        ("3MS", 0.003),
        ("30m", 1800.0),  # the command line's spelling works in config files too
        ("30min", 1800.0),
        ("1h30m", 5400.0),
        ("1h 30min", 5400.0),
        ("2 hours", 7200.0),
        ("45sec", 45.0),
        ("1day", 86400.0),
    ],
)
def test_time_units(text: str, seconds: float) -> None:
    assert values.parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["abc", "10x", "-1", "1 2", "", "ms"])
def test_time_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        values.parse_time(text)


def test_int_ranges() -> None:
    assert values.parse_int(" 42 ") == 42
    with pytest.raises(ValueError, match="invalid integer 'abc'"):
        values.parse_int("abc")
    with pytest.raises(ValueError, match=">= 0"):
        values.parse_int("-3")
    with pytest.raises(ValueError, match="<= 10"):
        values.parse_int("11", 0, 10)
    assert values.parse_int("-3", None) == -3


def test_octal_and_list_and_choice() -> None:
    assert values.parse_octal("0777") == 0o777
    assert values.parse_octal("600") == 0o600
    with pytest.raises(ValueError):
        values.parse_octal("0999")
    assert values.parse_list(" a, b ,,c ") == ("a", "b", "c")
    assert values.parse_list("") == ()
    assert values.parse_choice("Session", ("session",)) == "session"
    with pytest.raises(ValueError, match="expected one of"):
        values.parse_choice("x", ("session",))


def test_connstr_plain_and_quoted() -> None:
    pairs = values.parse_connstr(
        "host=db1 port = 5433 connect_query='SELECT ''x'', 1' dbname=app  password=''")
    assert pairs == [
        ("host", "db1"),
        ("port", "5433"),
        ("connect_query", "SELECT 'x', 1"),
        ("dbname", "app"),
        ("password", ""),
    ]


def test_connstr_keys_lowercased_and_empty() -> None:
    assert values.parse_connstr("HOST=x") == [("host", "x")]
    assert values.parse_connstr("   ") == []


@pytest.mark.parametrize("text", ["host", "host=x =y", "auth_query='unterminated"])
def test_connstr_errors(text: str) -> None:
    with pytest.raises(ValueError):
        values.parse_connstr(text)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (values.parse_int, "9127 ; default 0 = off"),
        (values.parse_time, "30s # half a minute"),
        (values.parse_bool, "1 ; on"),
    ],
)
def test_an_inline_comment_stays_part_of_the_value_with_a_hint(
    parse: Callable[[str], object], text: str
) -> None:
    # NOTE: as in PgBouncer, ';' and '#' start a comment only at the start of a line
    with pytest.raises(ValueError, match="put the comment on its own line") as exc:
        parse(text)
    assert f"'{text}'" in str(exc.value)


def test_no_comment_hint_for_a_plain_bad_value() -> None:
    with pytest.raises(ValueError) as exc:
        values.parse_int("12;3")
    assert "comment" not in str(exc.value)


def test_the_metrics_example_in_the_docs_loads(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
    text = docs.read_text()
    example = text.split("```ini\n", 1)[1].split("```", 1)[0]
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text("[databases]\ndb = host=127.0.0.1\n[pgbouncer]\n" + example)
    config = load_config(ini)
    assert config.pgmux.metrics_port == 9127
    assert config.pgmux.metrics_addr == "127.0.0.1"
