"""Builds a Config from one postgres:// URL, for running in front of a single DATABASE_URL."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pgmux.config import values
from pgmux.config.errors import ConfigError
from pgmux.config.model import FALLBACK_DATABASE, Config, DatabaseConfig
from pgmux.config.settings import PgmuxSettings, Settings, convert

_SCHEMES = ("postgres", "postgresql")

# URL query parameters that become [pgbouncer] settings.
_URL_TO_SETTING = {
    "sslmode": "server_tls_sslmode",
    "sslrootcert": "server_tls_ca_file",
    "sslcert": "server_tls_cert_file",
    "sslkey": "server_tls_key_file",
    "connect_timeout": "server_connect_timeout",
}
# URL query parameters that go onto the database entry as they are.
_URL_TO_DATABASE = ("application_name", "client_encoding", "timezone", "datestyle")


def config_from_url(
    url: str,
    *,
    listen_addr: str = "127.0.0.1",
    listen_port: int = 6432,
    pool_mode: str = "transaction",
    default_pool_size: int = 20,
    auth_type: str = "any",
    **settings_overrides: Any,
) -> Config:
    """A Config with one [databases] entry named after the URL's database and a '*' fallback
    to the same server; the URL's user and password become the server login.

    Clients log in as anyone (auth_type any: the pool logs in as the URL's user, PgBouncer's
    forced user). When the URL has a password, the userlist maps its user to it, so password
    auth_types work for that user. The URL's user is also the admin console's admin_users.
    Unsupported query parameters are reported in ``Config.warnings``.
    Raises ConfigError.
    """
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(f"unsupported URL scheme '{parts.scheme}' (use postgresql://)",
                          key="url")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid port in URL: {exc}", key="url") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    host = unquote(parts.hostname) if parts.hostname else None
    dbname = unquote(parts.path.lstrip("/")) or None

    warnings: list[str] = []
    db_fields: dict[str, Any] = {}
    setting_fields: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "host":
            host = value or None
        elif key == "port":
            port = _url_int(value, key)
        elif key in ("user", "password", "dbname"):
            if key == "user":
                user = value
            elif key == "password":
                password = value
            else:
                dbname = value
        elif key in _URL_TO_DATABASE:
            db_fields[key] = value
        elif key in _URL_TO_SETTING:
            setting_fields[_URL_TO_SETTING[key]] = value
        else:
            warnings.append(f"ignoring unsupported URL parameter '{key}'")
    dbname = dbname or user
    if not dbname:
        raise ConfigError("the URL names no database and no user", key="url")

    settings = _settings(
        dict(
            listen_addr=listen_addr,
            listen_port=listen_port,
            pool_mode=pool_mode,
            default_pool_size=default_pool_size,
            auth_type=auth_type,
            # NOTE: a pooler in front of one URL belongs to whoever holds that URL: its user
            # may use the admin console (`psql ... pgbouncer -c 'SHOW POOLS'`).
            admin_users=user or "",
        ),
        setting_fields,
        settings_overrides,
    )
    entry = DatabaseConfig(name=dbname, host=host, port=port or 5432, dbname=dbname,
                           user=user, password=password, **db_fields)
    fallback = dataclasses.replace(entry, name=FALLBACK_DATABASE, dbname=None)
    userlist = {user: password} if user and password is not None else {}
    return Config(
        settings=settings,
        databases=MappingProxyType({dbname: entry, FALLBACK_DATABASE: fallback}),
        users=MappingProxyType({}),
        pgmux=PgmuxSettings(),
        path=None,
        userlist=MappingProxyType(userlist),
        warnings=tuple(warnings),
    )


def _url_int(text: str, key: str) -> int:
    try:
        return values.parse_int(text, 1, 65535)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def _settings(base: dict[str, Any], from_url: dict[str, str],
              overrides: dict[str, Any]) -> Settings:
    """Validate every value the same way the ini loader does (text is converted)."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    merged: dict[str, Any] = {**base, **from_url, **overrides}
    kwargs: dict[str, Any] = {}
    for name, value in merged.items():
        f = fields.get(name)
        if f is None:
            raise ConfigError("unknown setting", key=name)
        try:
            kwargs[name] = convert(f, _as_text(value, f.metadata["kind"]))
        except ValueError as exc:
            raise ConfigError(str(exc), key=name) from None
    return Settings(**kwargs)


def _as_text(value: Any, kind: str) -> str:
    """Render a Python override as the text the ini file would hold, so it is validated."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if kind == "octal" and isinstance(value, int):
        return format(value, "o")
    return str(value)
