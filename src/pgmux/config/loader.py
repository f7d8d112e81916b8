"""Builds a Config from pgbouncer.ini entries: converts, validates, locates every error."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pgmux.config import values
from pgmux.config.errors import ConfigError
from pgmux.config.ini import IniEntry, read_ini, resolve_relative
from pgmux.config.model import (
    FALLBACK_DATABASE,
    POOL_SIZE_AUTO,
    Config,
    DatabaseConfig,
    PeerConfig,
    UserConfig,
)
from pgmux.config.settings import (
    LOAD_BALANCE_HOSTS,
    POOL_MODES,
    SETTING_ALIASES,
    PgmuxSettings,
    Settings,
    convert,
)
from pgmux.config.unsupported import (
    UNSET_KEY_VALUES,
    UNSUPPORTED_AUTH_TYPES,
    UNSUPPORTED_DATABASE_KEYS,
    UNSUPPORTED_PEER_KEYS,
    UNSUPPORTED_SETTINGS,
    UNSUPPORTED_USER_KEYS,
    ignored_message,
    key_message,
)
from pgmux.config.userlist import load_userlist

# auth_type values for which a missing auth_file leaves nobody able to log in.
AUTH_TYPES_NEEDING_AUTH_FILE = frozenset({"md5", "scram-sha-256", "plain"})

RESERVED_DATABASE = "pgbouncer"  # the admin console


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read pgbouncer.ini (with its includes and auth_file) into a Config. Raises ConfigError."""
    name = os.fspath(path)
    return build_config(read_ini(name), path=name)


def build_config(entries: Iterable[IniEntry], path: str | None = None) -> Config:
    """Turn located ini entries into a Config; the auth_file is loaded relative to ``path``."""
    warnings: list[str] = []
    settings_raw: dict[str, IniEntry] = {}
    pgmux_raw: dict[str, IniEntry] = {}
    databases: dict[str, DatabaseConfig] = {}
    users: dict[str, UserConfig] = {}
    peers: dict[int, PeerConfig] = {}
    for entry in entries:
        if entry.section == "pgbouncer":
            key = entry.key.lower()
            settings_raw[SETTING_ALIASES.get(key, key)] = entry  # NOTE: the last duplicate wins
        elif entry.section == "pgmux":
            pgmux_raw[entry.key.lower()] = entry
        elif entry.section == "databases":
            databases[entry.key] = _database(entry, warnings)
        elif entry.section == "users":
            users[entry.key] = _user(entry, warnings)
        elif entry.section == "peers":
            peer = _peer(entry, warnings)
            peers[peer.peer_id] = peer
        else:
            section = entry.section or "(none)"
            warnings.append(f"{entry.file}:{entry.line}: ignoring key '{entry.key}' "
                            f"in unknown section [{section}]")

    settings = _dataclass_from(Settings, settings_raw, warnings, strict=False)
    if settings.unix_socket_dir.startswith("@"):
        entry = settings_raw["unix_socket_dir"]
        raise ConfigError("Unix sockets in the abstract namespace are not supported by pgmux; "
                          "give a directory", file=entry.file, line=entry.line,
                          key=entry.key)
    warnings.extend(_ignored_settings(settings, settings_raw))
    if not settings.conffile and path is not None:
        settings = dataclasses.replace(settings, conffile=path)
    pgmux = _dataclass_from(PgmuxSettings, pgmux_raw, warnings, strict=True)
    userlist = _userlist(settings, settings_raw.get("auth_file"), path, warnings)
    return Config(
        settings=settings,
        databases=MappingProxyType(databases),
        users=MappingProxyType(users),
        pgmux=pgmux,
        path=path,
        userlist=MappingProxyType(userlist),
        peers=MappingProxyType(peers),
        warnings=tuple(warnings),
    )


def _dataclass_from(cls: type[Any], raw: dict[str, IniEntry], warnings: list[str],
                    *, strict: bool) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, entry in raw.items():
        f = fields.get(key)
        if f is None:
            section = "pgmux" if strict else "pgbouncer"
            if strict:
                raise ConfigError(f"unknown parameter in [{section}]",
                                  file=entry.file, line=entry.line, key=entry.key)
            # PgBouncer logs "unknown parameter" and carries on; so do we.
            warnings.append(f"{entry.file}:{entry.line}: unknown parameter: "
                            f"{section}/{entry.key}")
            continue
        try:
            kwargs[key] = convert(f, entry.value)
        except ValueError as exc:
            raise ConfigError(str(exc), file=entry.file, line=entry.line, key=entry.key) from None
    if "budget_file" in kwargs and not kwargs["budget_file"]:
        kwargs["budget_file"] = None
    return cls(**kwargs)


def _ignored_settings(settings: Settings, raw: dict[str, IniEntry]) -> list[str]:
    """One warning per setting the file gives a value pgmux would not act on."""
    out: list[str] = []
    defaults = Settings()
    for name, entry in raw.items():
        reason = UNSUPPORTED_SETTINGS.get(name)
        if reason is not None and getattr(settings, name) != getattr(defaults, name):
            out.append(f"{entry.file}:{entry.line}: {ignored_message(entry.key, reason)}")
    auth = raw.get("auth_type")
    reason = UNSUPPORTED_AUTH_TYPES.get(settings.auth_type)
    if auth is not None and reason is not None:
        out.append(f'{auth.file}:{auth.line}: auth_type "{settings.auth_type}": {reason}')
    return out


def _userlist(settings: Settings, entry: IniEntry | None, path: str | None,
              warnings: list[str]) -> dict[str, str]:
    if not settings.auth_file:
        return {}
    auth_path = resolve_relative(settings.auth_file, entry.file if entry else path)
    if os.path.exists(auth_path):
        return load_userlist(auth_path)
    message = f"auth_file '{settings.auth_file}' not found (looked for '{auth_path}')"
    if settings.auth_type in AUTH_TYPES_NEEDING_AUTH_FILE:
        raise ConfigError(message, file=entry.file if entry else path,
                          line=entry.line if entry else None, key="auth_file")
    warnings.append(message)
    return {}


# --- [databases], [users], [peers]: libpq-style key=value strings --------------------------

_Conv = Callable[[str], Any]


def _opt_int(lo: int = 0, hi: int | None = None) -> _Conv:
    return lambda text: values.parse_int(text, lo, hi)


def _pool_mode(text: str) -> str:
    return values.parse_choice(text, POOL_MODES)


def _pool_size(text: str) -> tuple[int, bool]:
    if text.strip().lower() == "auto":
        return POOL_SIZE_AUTO, True
    return values.parse_int(text, 0), False


def _text(text: str) -> str:
    return text


_DATABASE_KEYS: dict[str, tuple[str, _Conv]] = {
    "dbname": ("dbname", _text),
    "host": ("host", _text),
    "port": ("port", _opt_int(1, 65535)),
    "user": ("user", _text),
    "password": ("password", _text),
    "auth_user": ("auth_user", _text),
    "auth_query": ("auth_query", _text),
    "auth_dbname": ("auth_dbname", _text),
    "pool_size": ("pool_size", _pool_size),
    "min_pool_size": ("min_pool_size", _opt_int()),
    "reserve_pool_size": ("reserve_pool_size", _opt_int()),
    "reserve_pool": ("reserve_pool_size", _opt_int()),  # old name, still accepted
    "max_db_connections": ("max_db_connections", _opt_int()),
    "max_db_client_connections": ("max_db_client_connections", _opt_int()),
    "pool_mode": ("pool_mode", _pool_mode),
    "connect_query": ("connect_query", _text),
    "client_encoding": ("client_encoding", _text),
    "datestyle": ("datestyle", _text),
    "timezone": ("timezone", _text),
    "application_name": ("application_name", _text),
    "server_lifetime": ("server_lifetime", values.parse_time),
    "load_balance_hosts": (
        "load_balance_hosts", lambda t: values.parse_choice(t, LOAD_BALANCE_HOSTS)),
}

_USER_KEYS: dict[str, tuple[str, _Conv]] = {
    "pool_mode": ("pool_mode", _pool_mode),
    "pool_size": ("pool_size", _opt_int()),
    "reserve_pool_size": ("reserve_pool_size", _opt_int()),
    "max_user_connections": ("max_user_connections", _opt_int()),
    "max_user_client_connections": ("max_user_client_connections", _opt_int()),
    "query_timeout": ("query_timeout", values.parse_time),
    "idle_transaction_timeout": ("idle_transaction_timeout", values.parse_time),
    "transaction_timeout": ("transaction_timeout", values.parse_time),
    "client_idle_timeout": ("client_idle_timeout", values.parse_time),
}

_PEER_KEYS: dict[str, tuple[str, _Conv]] = {
    "host": ("host", _text),
    "port": ("port", _opt_int(1, 65535)),
    "pool_size": ("pool_size", _opt_int()),
}


def _pairs(entry: IniEntry, table: dict[str, tuple[str, _Conv]], what: str,
           ignored: Mapping[str, str], warnings: list[str] | None) -> dict[str, Any]:
    try:
        pairs = values.parse_connstr(entry.value)
    except ValueError as exc:
        raise ConfigError(str(exc), file=entry.file, line=entry.line, key=entry.key) from None
    out: dict[str, Any] = {}
    for param, text in pairs:
        spec = table.get(param)
        reason = ignored.get(param)
        if reason is not None:
            # NOTE: a PgBouncer key pgmux does not act on: the entry loads, with a warning.
            if warnings is not None and text.strip().lower() not in UNSET_KEY_VALUES.get(
                    param, frozenset()):
                warnings.append(f"{entry.file}:{entry.line}: [{entry.section}] {entry.key}: "
                                f"{key_message(what, param, reason)}")
            if spec is None:
                continue
        if spec is None:
            raise ConfigError(f"unrecognized {what} parameter: {param}",
                              file=entry.file, line=entry.line, key=entry.key)
        attr, conv = spec
        try:
            out[attr] = conv(text)
        except ValueError as exc:
            raise ConfigError(f"{param}: {exc}", file=entry.file, line=entry.line,
                              key=entry.key) from None
    return out


def database_from_connstr(name: str, connstr: str, *, file: str | None = None,
                          line: int = 0) -> DatabaseConfig:
    """Parse one [databases] value (also used for DATABASE_URL mode). Raises ConfigError."""
    return _database(IniEntry("databases", name, connstr, file or "<string>", line), None)


def _database(entry: IniEntry, warnings: list[str] | None) -> DatabaseConfig:
    if entry.key == RESERVED_DATABASE:
        raise ConfigError("database name 'pgbouncer' is reserved for the admin console",
                          file=entry.file, line=entry.line, key=entry.key)
    fields = _pairs(entry, _DATABASE_KEYS, "connection", UNSUPPORTED_DATABASE_KEYS, warnings)
    size = fields.pop("pool_size", None)
    if size is not None:
        fields["pool_size"], fields["pool_size_auto"] = size
    if "dbname" not in fields and entry.key != FALLBACK_DATABASE:
        fields["dbname"] = entry.key
    if fields.get("host") == "":
        fields["host"] = None
    return DatabaseConfig(name=entry.key, **fields)


def _user(entry: IniEntry, warnings: list[str]) -> UserConfig:
    return UserConfig(name=entry.key,
                      **_pairs(entry, _USER_KEYS, "user", UNSUPPORTED_USER_KEYS, warnings))


def _peer(entry: IniEntry, warnings: list[str]) -> PeerConfig:
    try:
        peer_id = values.parse_int(entry.key, 1, 16383)
    except ValueError as exc:
        raise ConfigError(f"invalid peer id: {exc}", file=entry.file, line=entry.line,
                          key=entry.key) from None
    return PeerConfig(peer_id=peer_id,
                      **_pairs(entry, _PEER_KEYS, "peer", UNSUPPORTED_PEER_KEYS, warnings))
