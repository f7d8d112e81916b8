"""auth_hba_file parsing (PgBouncer's pg_hba.conf subset) and choosing the rule for a login."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pgmux.auth import (
    REPLICATION_LOGICAL,
    REPLICATION_NONE,
    REPLICATION_PHYSICAL,
    HbaFile,
    load_hba,
    match_hba,
    parse_hba,
    parse_ident,
    parse_replication,
)
from pgmux.config import ConfigError

IDENT = parse_ident("certmap  client.example.com  alice\npeermap  root  all\n")


def method_for(hba: HbaFile, **login: object) -> str | None:
    defaults: dict[str, object] = {"unix": False, "tls": False, "database": "app",
                                   "user": "alice", "address": "10.0.0.5"}
    defaults.update(login)
    rule = match_hba(hba, **defaults)  # type: ignore[arg-type]
    return None if rule is None else rule.method


def test_types_methods_and_first_match_wins() -> None:
    hba = parse_hba(
        """
        # comment line
        local   all        all                     peer
        hostssl all        all     0.0.0.0/0       cert
        host    app        bob     10.0.0.0/8      reject
        host    app        all     10.0.0.0/8      scram-sha-256
        host    all        all     10.0.0.0 255.0.0.0  md5   # trailing comment
        host    all        all     ::1/128         password
        hostnossl all      all     all             trust
        """, "pg_hba.conf")
    assert not hba.problems
    assert [r.line for r in hba.rules] == [3, 4, 5, 6, 7, 8, 9]
    assert method_for(hba, unix=True) == "peer"
    assert method_for(hba, tls=True) == "cert"
    assert method_for(hba, user="bob") == "reject"
    assert method_for(hba) == "scram-sha-256"
    assert method_for(hba, database="other") == "md5"
    assert method_for(hba, database="other", address="::1") == "plain"
    assert method_for(hba, database="other", address="192.168.1.1") == "trust"
    assert method_for(hba, database="other", address="192.168.1.1", tls=True) == "cert"
    assert hba.rules[0].where() == "pg_hba.conf:3"


def test_nothing_matches() -> None:
    hba = parse_hba("host all all 10.0.0.0/8 md5\nlocal app all trust\n")
    assert method_for(hba, address="11.0.0.1") is None
    assert method_for(hba, unix=True, database="other") is None
    assert method_for(HbaFile(), unix=True) is None
    # a TCP login without a known address matches no host rule
    assert method_for(hba, address=None) is None


@pytest.mark.parametrize(("cidr", "inside", "outside"), [
    ("10.1.2.0/24", "10.1.2.255", "10.1.3.0"),
    ("10.1.2.3/32", "10.1.2.3", "10.1.2.4"),
    ("0.0.0.0/0", "203.0.113.9", "::1"),
    ("10.0.0.0 255.255.0.0", "10.0.200.1", "10.1.0.1"),
    ("10.0.0.0 255.0.255.0", "10.99.0.7", "10.0.1.7"),  # a non-contiguous mask, as PgBouncer
    ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::1"),
    ("2001:db8:: ffff:ffff::", "2001:db8::2", "2001:db7::2"),
    ("::/0", "::1", "127.0.0.1"),
])
def test_addresses_and_masks(cidr: str, inside: str, outside: str) -> None:
    hba = parse_hba(f"host all all {cidr} md5\n")
    assert not hba.problems, hba.problems
    assert method_for(hba, address=inside) == "md5"
    assert method_for(hba, address=outside) is None


def test_ipv4_mapped_client_matches_ipv4_rule() -> None:
    hba = parse_hba("host all all 127.0.0.0/8 trust\n")
    assert method_for(hba, address="::ffff:127.0.0.1") == "trust"
    assert method_for(hba, address=ipaddress.ip_address("127.0.0.2")) == "trust"


def test_address_with_host_bits_is_kept_with_a_warning_and_never_matches() -> None:
    hba = parse_hba("host all all 10.0.0.1/8 md5\n", "h.conf")
    assert len(hba.rules) == 1
    (problem,) = hba.problems
    assert str(problem) == "h.conf:1: address does not match mask: 10.0.0.1 / 255.0.0.0"
    assert method_for(hba, address="10.0.0.1") is None


def test_database_and_user_lists_keywords_and_quotes() -> None:
    hba = parse_hba(
        'host "all",sales  carol,"Dave Smith"  all  md5\n'
        "host sameuser     all                 all  trust\n"
        'host all          "all"               all  reject\n')
    assert method_for(hba, database="sales", user="carol") == "md5"
    assert method_for(hba, database="all", user="Dave Smith") == "md5"
    assert method_for(hba, database="other", user="carol") is None  # "all" quoted is a name
    assert method_for(hba, database="erin", user="erin") == "trust"  # sameuser
    assert method_for(hba, database="x", user="all") == "reject"
    assert method_for(hba, database="x", user="frank") is None
    rule = hba.rules[0]
    assert rule.databases.names == frozenset({"all", "sales"}) and not rule.databases.all


def test_quoted_name_with_doubled_quote_and_hash() -> None:
    hba = parse_hba('local "we""ird#db" all trust\n')
    assert method_for(hba, unix=True, database='we"ird#db') == "trust"


def test_replication_keyword() -> None:
    hba = parse_hba(
        "host replication repl 10.0.0.0/8 scram-sha-256\n"
        "host all         all  10.0.0.0/8 md5\n")
    assert method_for(hba, user="repl", replication=REPLICATION_PHYSICAL) == "scram-sha-256"
    assert method_for(hba, user="other", replication=REPLICATION_PHYSICAL) is None
    # logical replication (replication=database) names a real database, as in PostgreSQL
    assert method_for(hba, user="repl", replication=REPLICATION_LOGICAL) == "md5"
    # the keyword does not match a database called "replication"
    assert method_for(hba, database="replication", user="repl") == "md5"
    assert method_for(hba, database="replication", user="repl",
                      replication=REPLICATION_NONE) == "md5"


@pytest.mark.parametrize(("value", "mode"), [
    (None, REPLICATION_NONE), ("database", REPLICATION_LOGICAL), ("true", REPLICATION_PHYSICAL),
    ("on", REPLICATION_PHYSICAL), ("1", REPLICATION_PHYSICAL), ("yes", REPLICATION_PHYSICAL),
    ("false", REPLICATION_NONE), ("0", REPLICATION_NONE), ("off", REPLICATION_NONE),
    ("Database", None), ("maybe", None),
])
def test_parse_replication(value: str | None, mode: str | None) -> None:
    assert parse_replication(value) == mode


def test_map_option_and_ldap_options() -> None:
    hba = parse_hba(
        "hostssl all all 0.0.0.0/0 cert map=certmap\n"
        "local   all all           peer map=peermap\n"
        'host    all all 0.0.0.0/0 ldap ldapserver=ldap.example.net ldapprefix="cn="\n',
        ident=IDENT)
    assert not hba.problems
    assert [r.map_name for r in hba.rules] == ["certmap", "peermap", None]
    assert hba.rules[2].method == "ldap"
    assert hba.rules[2].ldap_options == "ldapserver=ldap.example.net ldapprefix= cn="


@pytest.mark.parametrize(("line", "problem"), [
    ("hots all all 0.0.0.0/0 md5", "unknown connection type 'hots'"),
    ("host samerole all 0.0.0.0/0 md5", "samerole is not supported"),
    ("host samegroup all 0.0.0.0/0 md5", "samegroup is not supported"),
    ("host all +admins 0.0.0.0/0 md5", "group names ('+admins') are not supported"),
    ("host all all db.example.com md5", "failed to parse address 'db.example.com'"),
    ("host all all samenet md5", "failed to parse address 'samenet'"),
    ("host all all 10.0.0.0/33 md5", "invalid mask '/33'"),
    ("host all all 10.0.0.0/x md5", "invalid mask '/x'"),
    ("host all all 10.0.0.0 md5", "failed to parse mask 'md5'"),
    ("host all all 10.0.0.0", "did not find the mask"),
    ("host all all 10.0.0.0 ffff:: md5", "failed to parse mask 'ffff::'"),
    ("host all all", "did not find the address"),
    ("host all all 0.0.0.0/0 gss", "unsupported method 'gss'"),
    ("host all all 0.0.0.0/0 pam", "unsupported method 'pam'"),
    ("local all all", "unsupported method 'nothing'"),
    ("local all all trust extra", "ident map option 'extra' is malformed"),
    ("local all all peer map=", "ident map option 'map=' is malformed"),
    ("local all all peer map=nomap", "ident map 'nomap' is not found in the ident config file"),
    ("local all all peer map=peermap more", "unsupported parameters after the method"),
    ("local all", "missing user name"),
    ("local ,all all trust", "missing database name"),
    ("local all all,", "missing user name"),
    ('local "unterminated all trust', "unterminated quoted name"),
])
def test_bad_lines_are_skipped_and_reported(line: str, problem: str) -> None:
    hba = parse_hba(f"local all all trust\n{line}\nlocal all all reject\n", "pgb_hba.conf",
                    ident=IDENT)
    assert [r.line for r in hba.rules] == [1, 3]  # the bad line is skipped, as PgBouncer does
    (err,) = hba.problems
    assert err.file == "pgb_hba.conf" and err.line == 2
    assert str(err).startswith(f"pgb_hba.conf:2: {problem}")
    with pytest.raises(ConfigError, match="^pgb_hba.conf:2: "):
        parse_hba(f"local all all trust\n{line}\n", "pgb_hba.conf", ident=IDENT, strict=True)


def test_map_needs_an_ident_file() -> None:
    hba = parse_hba("local all all peer map=peermap\n")
    assert not hba.rules and "not found in the ident config file" in str(hba.problems[0])


def test_at_file_includes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "users.txt").write_text('# admins\n\nalice, bob\n"Carol C" @more\n')
    (tmp_path / "sub" / "more").write_text("dave\n")
    (tmp_path / "dbs").write_text("app1,app2\n")
    hba_path = tmp_path / "pgb_hba.conf"
    hba_path.write_text(f"host @dbs @sub/users.txt 0.0.0.0/0 md5\n"
                        f"host all @{tmp_path}/sub/more all trust\n"
                        f"host all @missing 0.0.0.0/0 reject\n")
    hba = load_hba(hba_path)
    assert [r.line for r in hba.rules] == [1, 2]
    assert hba.rules[0].users.names == frozenset({"alice", "bob", "Carol C", "dave"})
    assert hba.rules[0].databases.names == frozenset({"app1", "app2"})
    assert method_for(hba, database="app2", user="Carol C") == "md5"
    assert method_for(hba, database="app3", user="dave") == "trust"
    (problem,) = hba.problems
    assert problem.line == 3 and "cannot read @missing" in str(problem)


def test_at_file_loop_is_refused() -> None:
    files = {"/h/a": "@b\n", "/h/b": "@a\n"}
    hba = parse_hba("host all @a all md5\n", "/h/hba.conf", read_file=files.__getitem__)
    assert "include each other too deeply" in str(hba.problems[0])


def test_load_hba_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="could not open hba config file"):
        load_hba(tmp_path / "nope.conf")


def test_rules_are_immutable() -> None:
    rule = parse_hba("local all all trust\n").rules[0]
    with pytest.raises(AttributeError):
        rule.method = "reject"  # type: ignore[misc]
