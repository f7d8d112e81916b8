"""Tests for DATABASE_URL mode (config_from_url) and the RELOAD diff."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from pgmux.config import ConfigError, config_from_url, diff, load_config

WriteFile = Callable[..., Path]  # the type of conftest.py's `write` fixture


def test_url_with_password_and_port() -> None:
    cfg = config_from_url("postgresql://bob:s%40cret@db.example:5433/app")
    app = cfg.databases["app"]
    assert (app.host, app.port, app.dbname, app.user, app.password) == (
        "db.example", 5433, "app", "bob", "s@cret")
    star = cfg.databases["*"]
    assert (star.host, star.port, star.user, star.dbname) == ("db.example", 5433, "bob", None)
    other = cfg.database("reports")
    assert other is not None and other.dbname == "reports" and other.host == "db.example"
    assert dict(cfg.userlist) == {"bob": "s@cret"}
    s = cfg.settings
    assert (s.listen_addr, s.listen_port, s.pool_mode, s.default_pool_size, s.auth_type) == (
        "127.0.0.1", 6432, "transaction", 20, "any")
    assert cfg.path is None


def test_url_without_password_or_port() -> None:
    cfg = config_from_url("postgres://alice@localhost/shop")
    shop = cfg.databases["shop"]
    assert shop.port == 5432 and shop.password is None and shop.user == "alice"
    assert cfg.userlist == {}


def test_url_dbname_defaults_to_user() -> None:
    assert "carol" in config_from_url("postgresql://carol@h").databases


def test_url_query_params() -> None:
    cfg = config_from_url(
        "postgresql://u:p@h/d?sslmode=require&application_name=web&connect_timeout=5&foo=bar")
    assert cfg.settings.server_tls_sslmode == "require"
    assert cfg.settings.server_connect_timeout == 5.0
    assert cfg.databases["d"].application_name == "web"
    assert cfg.warnings == ("ignoring unsupported URL parameter 'foo'",)


def test_url_unix_socket_host_param() -> None:
    cfg = config_from_url("postgresql://u@/d?host=/var/run/postgresql&port=5444")
    d = cfg.databases["d"]
    assert d.host == "/var/run/postgresql" and d.port == 5444


def test_url_overrides_and_validation() -> None:
    cfg = config_from_url("postgresql://u@h/d", listen_port=7000, pool_mode="session",
                          auth_type="md5", max_client_conn=1000, server_lifetime="5min",
                          unix_socket_mode=0o700, log_stats=False)
    s = cfg.settings
    assert (s.listen_port, s.pool_mode, s.auth_type, s.max_client_conn) == (
        7000, "session", "md5", 1000)
    assert s.server_lifetime == 300.0 and s.unix_socket_mode == 0o700 and s.log_stats is False
    with pytest.raises(ConfigError) as info:
        config_from_url("postgresql://u@h/d", pool_mode="sometimes")
    assert info.value.key == "pool_mode"
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_url("postgresql://u@h/d", no_such_setting=1)


@pytest.mark.parametrize("url", ["mysql://u@h/d", "postgresql://u@h:99999/d", "postgresql://h"])
def test_url_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        config_from_url(url)


BASE = """
    [databases]
    a = host=a
    b = host=b
    [users]
    u1 = pool_size=1
    [pgbouncer]
    auth_type = trust
    listen_port = 6432
    max_client_conn = 100
    [pgmux]
    metrics_port = 0
"""


def test_diff_no_changes(write: WriteFile) -> None:
    old = load_config(write("a.ini", BASE))
    new = load_config(write("b.ini", BASE))  # a different path/conffile is not a change
    d = diff(old, new)
    assert not d.changed and d.online_ok and d.ignored_messages() == ()


def test_diff_everything(write: WriteFile) -> None:
    old = load_config(write("a.ini", BASE))
    new = load_config(write("b.ini", """
        [databases]
        a = host=a2
        c = host=c
        [users]
        u2 = pool_size=2
        [pgbouncer]
        auth_type = trust
        listen_port = 7000
        max_client_conn = 200
        [pgmux]
        metrics_port = 9100
    """))
    d = diff(old, new)
    assert d.databases_added == ("c",)
    assert d.databases_removed == ("b",)
    assert d.databases_changed == ("a",)
    assert d.users_added == ("u2",) and d.users_removed == ("u1",)
    assert d.settings_changed == ("listen_port", "max_client_conn")
    assert d.not_reloadable == ("listen_port",)
    assert not d.online_ok
    assert d.pgmux_changed == ("metrics_port",)
    assert d.changed
    assert "listen_port" in d.ignored_messages()[0]


def test_diff_userlist(write: WriteFile) -> None:
    old = load_config(write("a.ini", BASE))
    new = dataclasses.replace(old, userlist={"x": "y"})
    d = diff(old, new)
    assert d.userlist_changed == ("x",) and d.online_ok and d.changed


def test_url_user_is_the_admin_console_user() -> None:
    from pgmux.config import config_from_url

    assert config_from_url("postgresql://alice:pw@db/app").settings.admin_users == ("alice",)
    assert config_from_url("postgresql://db/app").settings.admin_users == ()
    assert config_from_url("postgresql://alice@db/app",
                           admin_users="bob").settings.admin_users == ("bob",)
