"""The [pgbouncer] and [pgmux] sections as frozen dataclasses: PgBouncer 1.25 names, defaults."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

from pgmux.config import values

POOL_MODES = ("session", "transaction", "statement")
AUTH_TYPES = ("any", "trust", "plain", "md5", "cert", "hba", "pam", "scram-sha-256", "ldap")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
LOAD_BALANCE_HOSTS = ("round-robin", "disable")
SESSION_STATE_MODES = ("track", "reset", "off")
SESSION_CHECKS = ("auto", "always")

DEFAULT_AUTH_QUERY = (
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
    "FROM pg_authid WHERE rolname=$1 AND rolcanlogin"
)

# Kinds of value; the loader converts text with the matching function in values.py.
_STR, _BOOL, _INT, _TIME, _LIST, _CHOICE, _OCTAL, _FLOAT, _WORKERS = (
    "str", "bool", "int", "time", "list", "choice", "octal", "float", "workers")
WORKERS_AUTO = 0  # PgmuxSettings.workers when the file says `auto`
MAX_WORKERS = 128


def _str(default: str) -> str:
    return field(default=default, metadata={"kind": _STR})


def _bool(default: bool) -> bool:
    return field(default=default, metadata={"kind": _BOOL})


def _int(default: int, lo: int | None = 0, hi: int | None = None) -> int:
    return field(default=default, metadata={"kind": _INT, "lo": lo, "hi": hi})


def _time(default: float) -> float:
    return field(default=default, metadata={"kind": _TIME})


def _list(*default: str) -> tuple[str, ...]:
    return field(default=tuple(default), metadata={"kind": _LIST})


def _choice(default: str, choices: tuple[str, ...]) -> str:
    return field(default=default, metadata={"kind": _CHOICE, "choices": choices})


@dataclass(frozen=True)
class Settings:
    """Every PgBouncer 1.25 [pgbouncer] setting; "not set" strings are "" as in PgBouncer.

    Time settings are float seconds. tcp_user_timeout stays in milliseconds (as documented).
    """

    # Generic
    logfile: str = _str("")
    pidfile: str = _str("")
    listen_addr: str = _str("")
    listen_port: int = _int(6432, lo=1, hi=65535)
    unix_socket_dir: str = _str("/tmp")
    unix_socket_mode: int = field(default=0o777, metadata={"kind": _OCTAL})
    unix_socket_group: str = _str("")
    user: str = _str("")
    pool_mode: str = _choice("session", POOL_MODES)
    max_client_conn: int = _int(100)
    default_pool_size: int = _int(20)
    min_pool_size: int = _int(0)
    reserve_pool_size: int = _int(0)
    reserve_pool_timeout: float = _time(5.0)
    max_db_connections: int = _int(0)
    max_db_client_connections: int = _int(0)
    max_user_connections: int = _int(0)
    max_user_client_connections: int = _int(0)
    server_round_robin: bool = _bool(False)
    track_extra_parameters: tuple[str, ...] = _list("IntervalStyle")
    ignore_startup_parameters: tuple[str, ...] = _list()
    peer_id: int = _int(0, lo=0, hi=16383)
    disable_pqexec: bool = _bool(False)
    application_name_add_host: bool = _bool(False)
    conffile: str = _str("")
    service_name: str = _str("pgbouncer")  # job_name is accepted as an alias
    stats_period: int = _int(60, lo=1)
    max_prepared_statements: int = _int(200)
    scram_iterations: int = _int(4096, lo=1)
    # Authentication
    auth_type: str = _choice("md5", AUTH_TYPES)
    auth_hba_file: str = _str("")
    auth_ident_file: str = _str("")
    auth_file: str = _str("")
    auth_user: str = _str("")
    auth_query: str = _str(DEFAULT_AUTH_QUERY)
    auth_dbname: str = _str("")
    auth_ldap_options: str = _str("")
    # Logging
    syslog: bool = _bool(False)
    syslog_ident: str = _str("pgbouncer")
    syslog_facility: str = _str("daemon")
    log_connections: bool = _bool(True)
    log_disconnections: bool = _bool(True)
    log_pooler_errors: bool = _bool(True)
    log_stats: bool = _bool(True)
    verbose: int = _int(0)
    # Console access
    admin_users: tuple[str, ...] = _list()
    stats_users: tuple[str, ...] = _list()
    # Sanity checks, timeouts
    server_reset_query: str = _str("DISCARD ALL")
    server_reset_query_always: bool = _bool(False)
    server_check_delay: float = _time(30.0)
    # NOTE: since 1.24 the default is the special value "<empty>" (send an empty query);
    # "" disables the check. Older releases defaulted to "select 1".
    server_check_query: str = _str("<empty>")
    server_fast_close: bool = _bool(False)
    server_lifetime: float = _time(3600.0)
    server_idle_timeout: float = _time(600.0)
    server_connect_timeout: float = _time(15.0)
    server_login_retry: float = _time(15.0)
    client_login_timeout: float = _time(60.0)
    autodb_idle_timeout: float = _time(3600.0)
    pool_idle_timeout: float = _time(0.0)
    dns_max_ttl: float = _time(15.0)
    dns_nxdomain_ttl: float = _time(15.0)
    dns_zone_check_period: float = _time(0.0)
    resolv_conf: str = _str("")
    query_wait_notify: float = _time(5.0)
    login_notify_message: str = _str("")
    # TLS
    client_tls_sslmode: str = _choice("disable", SSLMODES)
    client_tls_key_file: str = _str("")
    client_tls_cert_file: str = _str("")
    client_tls_ca_file: str = _str("")
    client_tls_protocols: str = _str("secure")
    client_tls_ciphers: str = _str("default")
    client_tls13_ciphers: str = _str("")
    client_tls_ecdhcurve: str = _str("auto")
    client_tls_dheparams: str = _str("auto")
    server_tls_sslmode: str = _choice("prefer", SSLMODES)
    server_tls_ca_file: str = _str("")
    server_tls_key_file: str = _str("")
    server_tls_cert_file: str = _str("")
    server_tls_protocols: str = _str("secure")
    server_tls_ciphers: str = _str("default")
    server_tls13_ciphers: str = _str("")
    # Dangerous timeouts
    query_timeout: float = _time(0.0)
    query_wait_timeout: float = _time(120.0)
    cancel_wait_timeout: float = _time(10.0)
    client_idle_timeout: float = _time(0.0)
    idle_transaction_timeout: float = _time(0.0)
    transaction_timeout: float = _time(0.0)
    suspend_timeout: float = _time(10.0)
    # Low-level network
    pkt_buf: int = _int(4096, lo=512)
    max_packet_size: int = _int(2147483647)
    listen_backlog: int = _int(128)
    sbuf_loopcnt: int = _int(5)
    so_reuseport: bool = _bool(False)
    tcp_defer_accept: bool = _bool(sys.platform.startswith("linux"))
    tcp_socket_buffer: int = _int(0)
    tcp_keepalive: bool = _bool(True)
    tcp_keepcnt: int = _int(0)
    tcp_keepidle: int = _int(0)
    tcp_keepintvl: int = _int(0)
    tcp_user_timeout: int = _int(0)


# Names accepted in [pgbouncer] for another setting.
SETTING_ALIASES = {"job_name": "service_name"}


@dataclass(frozen=True)
class PgmuxSettings:
    """Our own [pgmux] section; unknown keys here are errors (nothing to be compatible with)."""

    metrics_addr: str = _str("127.0.0.1")
    metrics_port: int = _int(0, lo=0, hi=65535)  # 0 = metrics endpoint off
    # NOTE: with workers > 1 or budget_file set, every process sharing the budget file keeps
    # the pools' server limits together (pgmux/workers/budget.py).
    budget_file: str | None = field(default=None, metadata={"kind": _STR})
    workers: int = field(default=1, metadata={"kind": _WORKERS})  # WORKERS_AUTO for `auto`
    auto_pool_fraction: float = field(
        default=0.75, metadata={"kind": _FLOAT, "lo": 0.0, "hi": 1.0})
    # Session state in transaction and statement mode (docs/session-state.md): track (each
    # client keeps what it sets: replayed or pinned), reset (a server whose session state a
    # client changed is reset before reuse; the client loses it) or off (PgBouncer: it leaks).
    session_state: str = _choice("track", SESSION_STATE_MODES)
    # When to read a session back: auto (after a transaction whose text may have changed it)
    # or always (after every transaction: also catches a SET inside a function body).
    session_check: str = _choice("auto", SESSION_CHECKS)
    # The most servers of one pool that pinned clients may keep; 0: the pool size minus one.
    max_pinned_servers: int = _int(0)


SETTING_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Settings))


def convert(f: dataclasses.Field[Any], text: str) -> Any:
    """Convert ``text`` for field ``f`` by its declared kind. Raises ValueError."""
    meta = f.metadata
    kind = meta["kind"]
    if kind == _STR:
        return text
    if kind == _BOOL:
        return values.parse_bool(text)
    if kind == _INT:
        return values.parse_int(text, meta["lo"], meta["hi"])
    if kind == _TIME:
        return values.parse_time(text)
    if kind == _LIST:
        return values.parse_list(text)
    if kind == _CHOICE:
        return values.parse_choice(text, meta["choices"])
    if kind == _OCTAL:
        return values.parse_octal(text)
    if kind == _FLOAT:
        return values.parse_float(text, meta["lo"], meta["hi"])
    if kind == _WORKERS:
        if text.strip().lower() == "auto":
            return WORKERS_AUTO
        return values.parse_int(text, 1, MAX_WORKERS)
    raise AssertionError(f"unknown setting kind {kind!r}")
