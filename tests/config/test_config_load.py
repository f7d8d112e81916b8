"""Tests for load_config: sections, comments, includes, errors with file:line:key."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from pgmux.config import (
    DEFAULT_AUTH_QUERY,
    POOL_SIZE_AUTO,
    Config,
    ConfigError,
    Settings,
    load_config,
)

USERLIST = '"alice" "secret"\n'

WriteFile = Callable[..., Path]  # the type of conftest.py's `write` fixture


def test_defaults_match_pgbouncer() -> None:
    s = Settings()
    assert s.listen_port == 6432
    assert s.listen_addr == ""
    assert s.unix_socket_dir == "/tmp"
    assert s.unix_socket_mode == 0o777
    assert s.pool_mode == "session"
    assert s.max_client_conn == 100
    assert s.default_pool_size == 20
    assert s.reserve_pool_timeout == 5.0
    assert s.auth_type == "md5"
    assert s.auth_query == DEFAULT_AUTH_QUERY
    assert s.server_reset_query == "DISCARD ALL"
    assert s.server_reset_query_always is False
    assert s.server_check_delay == 30.0
    assert s.server_lifetime == 3600.0
    assert s.server_idle_timeout == 600.0
    assert s.query_wait_timeout == 120.0
    assert s.cancel_wait_timeout == 10.0
    assert s.max_prepared_statements == 200
    assert s.pkt_buf == 4096
    assert s.max_packet_size == 2147483647
    assert s.client_tls_sslmode == "disable"
    assert s.server_tls_sslmode == "prefer"
    assert s.log_connections is True
    assert s.tcp_keepalive is True
    assert s.ignore_startup_parameters == ()
    assert s.track_extra_parameters == ("IntervalStyle",)
    assert s.stats_period == 60


def test_full_file(write: WriteFile) -> None:
    write("userlist.txt", USERLIST)
    path = write("pgbouncer.ini", """
        ;; a comment
        # another comment
        [databases]
        app = host=10.0.0.1 port=5433 dbname=appdb pool_size=5 pool_mode=statement
        "weird-name.db" = host=h2
        sock =
        * = host=fallback port=6000

        [users]
        alice = pool_mode=session pool_size=3 query_timeout=2.5

        [pgbouncer]
        Listen_Addr = 127.0.0.1
        listen_port = 7000
        auth_type = md5
        auth_file = userlist.txt
        pool_mode = transaction
        max_client_conn = 500
        server_lifetime = 10min
        query_timeout = 1500ms
        server_round_robin = yes
        log_connections = off
        admin_users = admin, root
        ignore_startup_parameters = extra_float_digits,options
        unix_socket_mode = 0700
        server_reset_query = DISCARD ALL; -- not a comment
        job_name = mybouncer

        [pgmux]
        metrics_port = 9127
        auto_pool_fraction = 0.5
    """)
    cfg = load_config(path)
    s = cfg.settings
    assert s.listen_addr == "127.0.0.1"
    assert s.listen_port == 7000
    assert s.pool_mode == "transaction"
    assert s.max_client_conn == 500
    assert s.server_lifetime == 600.0
    assert s.query_timeout == pytest.approx(1.5)
    assert s.server_round_robin is True
    assert s.log_connections is False
    assert s.admin_users == ("admin", "root")
    assert s.ignore_startup_parameters == ("extra_float_digits", "options")
    assert s.unix_socket_mode == 0o700
    assert s.server_reset_query == "DISCARD ALL; -- not a comment"
    assert s.service_name == "mybouncer"
    assert s.conffile == str(path)
    assert cfg.path == str(path)
    assert list(cfg.databases) == ["app", "weird-name.db", "sock", "*"]
    app = cfg.databases["app"]
    assert (app.host, app.port, app.dbname, app.pool_size, app.pool_mode) == (
        "10.0.0.1", 5433, "appdb", 5, "statement")
    assert cfg.databases["weird-name.db"].host == "h2"
    assert cfg.databases["sock"].host is None
    assert cfg.databases["sock"].dbname == "sock"
    assert cfg.users["alice"].query_timeout == 2.5
    assert cfg.pgmux.metrics_port == 9127
    assert cfg.pgmux.auto_pool_fraction == 0.5
    assert dict(cfg.userlist) == {"alice": "secret"}
    # NOTE: the two settings pgmux reads but does not act on are each named once.
    assert [w.split(": setting ")[1].split(" ")[0] for w in cfg.warnings] == [
        '"server_round_robin"', '"job_name"']


def test_config_is_immutable(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", "[databases]\na = host=x\n[pgbouncer]\nauth_type=trust\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.path = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.databases["b"] = cfg.databases["a"]  # type: ignore[index]


FULL = " ".join([
    "host=h1,h2 port=1 dbname=d user=u password='p w' auth_user=au",
    "auth_query='SELECT p FROM t WHERE u=$1' auth_dbname=ad min_pool_size=1",
    "reserve_pool=2 max_db_connections=3 max_db_client_connections=4",
    "connect_query='SELECT ''1''' client_encoding=UTF8 datestyle=ISO timezone=UTC",
    "application_name=app server_lifetime=30 load_balance_hosts=disable",
])


def test_database_quoting_and_all_keys(write: WriteFile) -> None:
    path = write("p.ini", f"""
        [databases]
        "we""ird" = host=a
        full = {FULL}
        auto = pool_size=auto
        [pgbouncer]
        auth_type = trust
    """)
    cfg = load_config(path)
    assert 'we"ird' in cfg.databases
    full = cfg.databases["full"]
    assert full.host == "h1,h2"
    assert full.password == "p w"
    assert full.auth_query == "SELECT p FROM t WHERE u=$1"
    assert full.reserve_pool_size == 2
    assert full.max_db_client_connections == 4
    assert full.connect_query == "SELECT '1'"
    assert full.server_lifetime == 30.0
    assert full.load_balance_hosts == "disable"
    auto = cfg.databases["auto"]
    assert auto.pool_size == POOL_SIZE_AUTO and auto.pool_size_auto is True


def test_duplicate_keys_last_wins(write: WriteFile) -> None:
    path = write("p.ini", """
        [pgbouncer]
        auth_type = trust
        max_client_conn = 10
        MAX_CLIENT_CONN = 20
        [databases]
        a = host=one
        b = host=b
        a = host=two
    """)
    cfg = load_config(path)
    assert cfg.settings.max_client_conn == 20
    assert cfg.databases["a"].host == "two"
    assert list(cfg.databases) == ["a", "b"]


def test_unknown_pgbouncer_key_is_a_warning(write: WriteFile) -> None:
    path = write("p.ini", "[pgbouncer]\nauth_type = trust\nno_such_thing = 1\n")
    cfg = load_config(path)
    assert len(cfg.warnings) == 1
    assert "p.ini:3: unknown parameter: pgbouncer/no_such_thing" in cfg.warnings[0]


def test_unknown_section_is_a_warning(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", "[pgbouncer]\nauth_type=trust\n[odd]\nx = 1\n"))
    assert "unknown section [odd]" in cfg.warnings[0]


def test_peers(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", """
        [pgbouncer]
        auth_type = trust
        peer_id = 1
        [peers]
        1 = host=/tmp/pgb1
        2 = host=10.0.0.2 port=7000 pool_size=4
    """))
    assert cfg.settings.peer_id == 1
    assert cfg.peers[2].port == 7000 and cfg.peers[2].pool_size == 4
    assert cfg.peers[1].host == "/tmp/pgb1" and cfg.peers[1].port == 6432


# --- includes --------------------------------------------------------------------------


def test_include_nested_and_relative(write: WriteFile, tmp_path: Path) -> None:
    write("conf.d/dbs.ini", """
        [databases]
        a = host=a
        %include more/users.ini
    """)
    write("conf.d/more/users.ini", "[users]\nbob = pool_size=7\n")
    path = write("main.ini", """
        [pgbouncer]
        auth_type = trust
        %include conf.d/dbs.ini
        [pgbouncer]
        max_client_conn = 9
    """)
    cfg = load_config(path)
    assert cfg.databases["a"].host == "a"
    assert cfg.users["bob"].pool_size == 7
    assert cfg.settings.max_client_conn == 9


def test_include_continues_current_section(write: WriteFile) -> None:
    write("extra.ini", "max_client_conn = 77\n")
    cfg = load_config(write("main.ini", "[pgbouncer]\nauth_type=trust\n%include extra.ini\n"))
    assert cfg.settings.max_client_conn == 77


def test_include_later_value_overrides(write: WriteFile) -> None:
    write("base.ini", "[pgbouncer]\nauth_type=trust\nmax_client_conn = 1\n")
    cfg = load_config(write("main.ini", "%include base.ini\n[pgbouncer]\nmax_client_conn = 2\n"))
    assert cfg.settings.max_client_conn == 2


def test_include_missing_names_file_and_line(write: WriteFile) -> None:
    path = write("main.ini", "[pgbouncer]\nauth_type=trust\n\n%include nope.ini\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.file == str(path) and err.line == 4
    assert str(err).startswith(f"{path}:4: cannot open include file 'nope.ini'")


def test_include_missing_inside_include(write: WriteFile) -> None:
    inner = write("inner.ini", "; first line\n%include gone.ini\n")
    with pytest.raises(ConfigError) as info:
        load_config(write("main.ini", "%include inner.ini\n"))
    assert info.value.file == str(inner) and info.value.line == 2


def test_include_recursion_is_an_error(write: WriteFile) -> None:
    write("a.ini", "%include b.ini\n")
    write("b.ini", "%include a.ini\n")
    with pytest.raises(ConfigError, match="recursive include"):
        load_config(write("main.ini", "%include a.ini\n"))


def test_error_in_included_file_names_that_file(write: WriteFile) -> None:
    inner = write("inner.ini", "[pgbouncer]\nlisten_port = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(write("main.ini", "%include inner.ini\n"))
    assert (info.value.file, info.value.line, info.value.key) == (str(inner), 2, "listen_port")


# --- errors name file, line and key ----------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("max_client_conn = abc", "max_client_conn", "invalid integer 'abc'"),
        ("max_client_conn = -1", "max_client_conn", "must be >= 0"),
        ("listen_port = 70000", "listen_port", "must be <= 65535"),
        ("listen_port = 0", "listen_port", "must be >= 1"),
        ("pool_mode = sometimes", "pool_mode", "invalid value 'sometimes'"),
        ("auth_type = kerberos", "auth_type", "invalid value 'kerberos'"),
        ("server_lifetime = soon", "server_lifetime", "invalid time value 'soon'"),
        ("server_lifetime = 5 weeks", "server_lifetime", "invalid time unit"),
        ("log_stats = maybe", "log_stats", "invalid boolean 'maybe'"),
        ("server_tls_sslmode = always", "server_tls_sslmode", "invalid value"),
        ("peer_id = 20000", "peer_id", "must be <= 16383"),
    ],
)
def test_setting_errors(write: WriteFile, line: str, key: str, message: str) -> None:
    path = write("pgbouncer.ini", f"[pgbouncer]\nauth_type = trust\n\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), 4, key)
    assert message in err.message
    assert str(err).startswith(f"{path}:4: key '{key}': ")


def test_error_str_format() -> None:
    err = ConfigError("invalid integer 'abc'", file="pgbouncer.ini", line=12,
                      key="max_client_conn")
    assert str(err) == "pgbouncer.ini:12: key 'max_client_conn': invalid integer 'abc'"
    assert str(ConfigError("boom", file="f.ini")) == "f.ini: boom"
    assert str(ConfigError("boom")) == "boom"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("db = host=x bogus=1", "unrecognized connection parameter: bogus"),
        ("db = host=x port=nope", "port: invalid integer"),
        ("db = pool_mode=whenever", "pool_mode: invalid value"),
        ("db = connect_query='oops", "unterminated quoted value"),
        ("db = host", "syntax error"),
        ("pgbouncer = host=x", "reserved"),
        ("db = load_balance_hosts=random", "load_balance_hosts"),
    ],
)
def test_database_errors(write: WriteFile, entry: str, message: str) -> None:
    path = write("p.ini", f"[pgbouncer]\nauth_type=trust\n[databases]\n{entry}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 4
    assert info.value.key == entry.split(" ")[0]
    assert message in info.value.message


def test_user_errors(write: WriteFile) -> None:
    path = write("p.ini", "[users]\nbob = pool_mode=session frobnicate=1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.key) == (2, "bob")
    assert "unrecognized user parameter: frobnicate" in info.value.message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("[pgbouncer\nx=1\n", 1, "invalid section header"),
        ("[pgbouncer]\nthis line has no equals\n", 2, "expected 'key = value'"),
        ('[databases]\n"unterminated = host=x\n', 2, "unterminated quoted name"),
        ("[pgbouncer]\n = 5\n", 2, "missing key"),
    ],
)
def test_syntax_errors(write: WriteFile, text: str, line: int, fragment: str) -> None:
    path = write("p.ini", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == line and fragment in info.value.message


def test_unknown_pgmux_key_is_an_error(write: WriteFile) -> None:
    path = write("p.ini", "[pgbouncer]\nauth_type=trust\n[pgmux]\nmetrics_prt = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.key) == (4, "metrics_prt")


def test_missing_main_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("/nonexistent/pgbouncer.ini")


# --- auth_file -------------------------------------------------------------------------


def test_auth_file_relative_to_ini_dir(write: WriteFile, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write("etc/userlist.txt", USERLIST)
    path = write("etc/pgbouncer.ini", "[pgbouncer]\nauth_file = userlist.txt\n")
    monkeypatch.chdir(tmp_path)  # the cwd does not hold userlist.txt
    assert dict(load_config(path).userlist) == {"alice": "secret"}


def test_auth_file_relative_to_cwd_fallback(write: WriteFile, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write("run/users.txt", USERLIST)
    path = write("etc/pgbouncer.ini", "[pgbouncer]\nauth_file = users.txt\n")
    monkeypatch.chdir(tmp_path / "run")
    assert dict(load_config(path).userlist) == {"alice": "secret"}


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256", "plain"])
def test_missing_auth_file_is_an_error_when_needed(write: WriteFile, auth_type: str) -> None:
    path = write("p.ini", f"[pgbouncer]\nauth_type = {auth_type}\nauth_file = gone.txt\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.key) == (3, "auth_file")


@pytest.mark.parametrize("auth_type", ["trust", "any", "hba", "cert"])
def test_missing_auth_file_is_a_warning_otherwise(write: WriteFile, auth_type: str) -> None:
    cfg = load_config(write("p.ini", f"[pgbouncer]\nauth_type={auth_type}\nauth_file=gone.txt\n"))
    assert cfg.userlist == {}
    assert any("gone.txt" in w for w in cfg.warnings)


def test_no_auth_file_means_empty_userlist(write: WriteFile) -> None:
    assert load_config(write("p.ini", "[pgbouncer]\nauth_type=md5\n")).userlist == {}


# --- lookups and precedence ------------------------------------------------------------


def _precedence_config(write: WriteFile) -> Config:
    return load_config(write("p.ini", """
        [databases]
        exact = host=e pool_size=8 pool_mode=statement
        plain = host=p
        * = host=fb port=6000 pool_size=4
        [users]
        special = pool_mode=session pool_size=2
        modeonly = pool_mode=transaction
        [pgbouncer]
        auth_type = trust
        pool_mode = transaction
        default_pool_size = 30
    """))


def test_database_exact_and_fallback(write: WriteFile) -> None:
    cfg = _precedence_config(write)
    exact = cfg.database("exact")
    assert exact is not None and exact.host == "e" and not exact.from_fallback
    other = cfg.database("otherdb")
    assert other is not None
    assert (other.name, other.dbname, other.host, other.port) == ("otherdb", "otherdb", "fb", 6000)
    assert other.from_fallback
    assert "otherdb" not in cfg.databases


def test_database_without_fallback(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", "[databases]\na = host=x\n[pgbouncer]\nauth_type=trust\n"))
    assert cfg.database("b") is None


def test_fallback_with_explicit_dbname(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", "[databases]\n* = host=x dbname=fixed\n"
                                     "[pgbouncer]\nauth_type=trust\n"))
    found = cfg.database("anything")
    assert found is not None and found.dbname == "fixed"


def test_pool_mode_precedence(write: WriteFile) -> None:
    cfg = _precedence_config(write)
    assert cfg.pool_mode_for("exact", "special") == "session"  # user wins
    assert cfg.pool_mode_for("exact", "nobody") == "statement"  # then database
    assert cfg.pool_mode_for("plain", "nobody") == "transaction"  # then global
    assert cfg.pool_mode_for("exact", "modeonly") == "transaction"


def test_pool_size_precedence(write: WriteFile) -> None:
    cfg = _precedence_config(write)
    assert cfg.pool_size_for("exact", "special") == 2  # user wins
    assert cfg.pool_size_for("exact", "modeonly") == 8  # then database
    assert cfg.pool_size_for("viafallback", "nobody") == 4  # '*' entry's pool_size
    assert cfg.pool_size_for("plain", "nobody") == 30  # then default_pool_size


def test_pool_size_auto(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", "[databases]\na = pool_size=auto\n"
                                     "[pgbouncer]\nauth_type=trust\n"))
    assert cfg.pool_size_for("a", "u") == POOL_SIZE_AUTO
