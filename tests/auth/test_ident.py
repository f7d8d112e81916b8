"""auth_ident_file parsing and the ``peer`` decision (OS user -> database user, maybe mapped)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgmux.auth import PEER_REJECTED, check_peer, ident_allows, load_ident, parse_ident
from pgmux.config import ConfigError

IDENT = parse_ident(
    """
    # MAPNAME   SYSTEM-USERNAME      PG-USERNAME
    ops         root                 postgres
    ops         root                 admin
    ops         "ann smith"          ann
    anyone      deploy               all
    anyone      deploy2              "all"
    mail        /^(.*)@example\\.com$  \\1
    mail        /^bot-                 robots
    """, "ident.conf")


def test_parse_groups_lines_by_map_in_order() -> None:
    assert not IDENT.problems
    assert sorted(IDENT.maps) == ["anyone", "mail", "ops"]
    assert [m.db_user for m in IDENT.maps["ops"]] == ["postgres", "admin", "ann"]
    assert [m.line for m in IDENT.maps["ops"]] == [3, 4, 5]
    assert IDENT.maps["anyone"][0].db_user is None  # the all keyword
    assert IDENT.maps["anyone"][1].db_user == "all"  # quoted: a user called "all"


@pytest.mark.parametrize(("map_name", "system", "db", "allowed"), [
    ("ops", "root", "postgres", True),
    ("ops", "root", "admin", True),
    ("ops", "root", "ann", False),
    ("ops", "ann smith", "ann", True),
    ("ops", "Root", "postgres", False),  # names compare exactly
    ("anyone", "deploy", "whoever", True),
    ("anyone", "deploy2", "whoever", False),
    ("anyone", "deploy2", "all", True),
    ("mail", "jo@example.com", "jo", True),
    ("mail", "jo@example.com", "ann", False),
    ("mail", "jo@example.org", "jo", False),
    ("mail", "bot-7", "robots", True),
    ("nomap", "root", "postgres", False),
])
def test_ident_allows(map_name: str, system: str, db: str, allowed: bool) -> None:
    assert (ident_allows(IDENT, map_name, system, db) is not None) is allowed


def test_ident_allows_without_a_file() -> None:
    assert ident_allows(None, "ops", "root", "postgres") is None


@pytest.mark.parametrize(("line", "problem"), [
    ("ops root", "expected 'map-name system-username database-username'"),
    ("ops root postgres extra", "unsupported parameters after the database user name"),
    ('"ops" root postgres', "the map name must not be quoted"),
    ("ops root,x postgres", "expected 'map-name system-username database-username'"),
    ("ops /(unclosed postgres", "invalid regular expression '(unclosed'"),
    ("ops /^x$ \\1", "regular expression '^x$' has no group for \\1"),
    ("ops root +admins", "database user '+admins': groups and regular expressions"),
    ('ops "root', "unterminated quoted name"),
])
def test_bad_lines_are_skipped_and_reported(line: str, problem: str) -> None:
    ident = parse_ident(f"ok a b\n{line}\n", "ident.conf")
    assert list(ident.maps) == ["ok"]
    (err,) = ident.problems
    assert err.line == 2 and str(err).startswith(f"ident.conf:2: {problem}")
    with pytest.raises(ConfigError):
        parse_ident(line, "ident.conf", strict=True)


def test_load_ident(tmp_path: Path) -> None:
    path = tmp_path / "ident.conf"
    path.write_text("m u v\n")
    assert ident_allows(load_ident(path), "m", "u", "v") is not None
    with pytest.raises(ConfigError, match="could not open ident config file"):
        load_ident(tmp_path / "missing")


def test_peer_without_map() -> None:
    assert check_peer(unix=True, system_user="alice", db_user="alice").ok
    refused = check_peer(unix=True, system_user="bob", db_user="alice")
    assert not refused.ok and refused.error == PEER_REJECTED == "unix socket login rejected"
    assert not check_peer(unix=False, system_user="alice", db_user="alice").ok
    assert not check_peer(unix=True, system_user=None, db_user="alice").ok
    # a database user missing from auth_file is refused the same way
    unknown = check_peer(unix=True, system_user="alice", db_user="alice", known_user=False)
    assert unknown == refused


def test_peer_with_map() -> None:
    ok = check_peer(unix=True, system_user="root", db_user="admin", map_name="ops", ident=IDENT)
    assert ok.ok and ok.log == "ident map 'ops' is applied"
    no = check_peer(unix=True, system_user="root", db_user="ann", map_name="ops", ident=IDENT)
    assert not no.ok and no.error == PEER_REJECTED
    assert no.log == "ident map ops cannot be matched"
    # the map replaces the same-name rule: root may not log in as root through "ops"
    assert not check_peer(unix=True, system_user="root", db_user="root", map_name="ops",
                          ident=IDENT).ok
