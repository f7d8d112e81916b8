"""PgBouncer's configuration format (pgbouncer.ini, userlist.txt) read into immutable data."""

from pgmux.config.errors import ConfigError
from pgmux.config.loader import build_config, database_from_connstr, load_config
from pgmux.config.model import (
    FALLBACK_DATABASE,
    POOL_SIZE_AUTO,
    Config,
    DatabaseConfig,
    PeerConfig,
    UserConfig,
)
from pgmux.config.reload import ConfigDiff, diff
from pgmux.config.settings import DEFAULT_AUTH_QUERY, PgmuxSettings, Settings
from pgmux.config.url import config_from_url
from pgmux.config.userlist import load_userlist, parse_userlist

__all__ = [
    "DEFAULT_AUTH_QUERY",
    "FALLBACK_DATABASE",
    "POOL_SIZE_AUTO",
    "Config",
    "ConfigDiff",
    "ConfigError",
    "DatabaseConfig",
    "PeerConfig",
    "PgmuxSettings",
    "Settings",
    "UserConfig",
    "build_config",
    "config_from_url",
    "database_from_connstr",
    "diff",
    "load_config",
    "load_userlist",
    "parse_userlist",
]
