"""The parsed configuration as immutable data: databases, users, peers and the whole Config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar, cast

from pgmux.config.settings import PgmuxSettings, Settings

POOL_SIZE_AUTO = -1  # DatabaseConfig.pool_size when the file says pool_size=auto

FALLBACK_DATABASE = "*"


T = TypeVar("T")


def _first_set(values: tuple[object, object], default: T) -> T:
    """The first value that is set (not None), else default: the precedence of every
    per-pool setting."""
    for value in values:
        if value is not None:
            return cast(T, value)
    return default


def _frozen_map(data: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class DatabaseConfig:
    """One [databases] entry: where the pooler connects for a client-side database name.

    ``None`` means "not set here": the global setting (or PgBouncer's rule) applies.
    """

    name: str
    host: str | None = None  # None: Unix socket in unix_socket_dir; may be a comma list
    port: int = 5432
    dbname: str | None = None  # None only on the '*' entry; resolved by Config.database()
    user: str | None = None
    password: str | None = None
    auth_user: str | None = None
    auth_query: str | None = None
    auth_dbname: str | None = None
    pool_size: int | None = None  # POOL_SIZE_AUTO (-1) when pool_size_auto
    pool_size_auto: bool = False
    min_pool_size: int | None = None
    reserve_pool_size: int | None = None
    max_db_connections: int | None = None
    max_db_client_connections: int | None = None
    pool_mode: str | None = None
    connect_query: str | None = None
    client_encoding: str | None = None
    datestyle: str | None = None
    timezone: str | None = None
    application_name: str | None = None
    server_lifetime: float | None = None
    load_balance_hosts: str = "round-robin"
    from_fallback: bool = False  # True when made from '*' for a name not listed


@dataclass(frozen=True)
class UserConfig:
    """One [users] entry: per-user overrides."""

    name: str
    pool_mode: str | None = None
    pool_size: int | None = None
    reserve_pool_size: int | None = None
    max_user_connections: int | None = None
    max_user_client_connections: int | None = None
    query_timeout: float | None = None
    idle_transaction_timeout: float | None = None
    transaction_timeout: float | None = None
    client_idle_timeout: float | None = None


@dataclass(frozen=True)
class PeerConfig:
    """One [peers] entry: another PgBouncer/pgmux process that cancel requests can go to."""

    peer_id: int
    host: str | None = None
    port: int = 6432
    pool_size: int | None = None


@dataclass(frozen=True)
class Config:
    """Everything one load of the configuration produced. Immutable; RELOAD builds a new one."""

    settings: Settings = field(default_factory=Settings)
    databases: Mapping[str, DatabaseConfig] = field(default_factory=lambda: MappingProxyType({}))
    users: Mapping[str, UserConfig] = field(default_factory=lambda: MappingProxyType({}))
    pgmux: PgmuxSettings = field(default_factory=PgmuxSettings)
    path: str | None = None
    userlist: Mapping[str, str] = field(default_factory=_frozen_map)
    peers: Mapping[int, PeerConfig] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()

    def database(self, name: str) -> DatabaseConfig | None:
        """The entry for ``name``; else the '*' entry made concrete for it; else None."""
        exact = self.databases.get(name)
        if exact is not None:
            return exact
        fallback = self.databases.get(FALLBACK_DATABASE)
        if fallback is None:
            return None
        return dataclasses.replace(
            fallback, name=name, dbname=fallback.dbname or name, from_fallback=True
        )

    def _per_pool(self, db: str, user: str, key: str) -> tuple[object, object]:
        """A per-pool setting as the [users] entry and the [databases] entry give it (None
        where the entry is missing or does not set it)."""
        user_cfg, db_cfg = self.users.get(user), self.database(db)
        return (None if user_cfg is None else getattr(user_cfg, key),
                None if db_cfg is None else getattr(db_cfg, key))

    def pool_mode_for(self, db: str, user: str) -> str:
        """Pool mode for a (database, user) pool: [users] > [databases] > [pgbouncer]."""
        return _first_set(self._per_pool(db, user, "pool_mode"), self.settings.pool_mode)

    def pool_size_for(self, db: str, user: str) -> int:
        """Pool size: [users] pool_size > [databases] pool_size > default_pool_size.

        Returns POOL_SIZE_AUTO (-1) when the deciding entry says ``pool_size=auto``; the
        caller then sizes the pool from the budget.
        """
        return _first_set(self._per_pool(db, user, "pool_size"), self.settings.default_pool_size)

    def reserve_pool_size_for(self, db: str, user: str) -> int:
        """Reserve pool size: [users] > [databases] > [pgbouncer] reserve_pool_size."""
        return _first_set(self._per_pool(db, user, "reserve_pool_size"),
                          self.settings.reserve_pool_size)
