"""The PgBouncer settings pgmux accepts but does not act on, each with its reason (one table)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# NOTE: docs/configuration.md marks exactly these names "not supported" (tests/config/
# test_config_unsupported.py checks both ways). Loading a file that sets one of them to a value
# other than its default logs one warning with the reason: nothing is silently ignored.

# [pgbouncer] settings, by name.
UNSUPPORTED_SETTINGS: Mapping[str, str] = MappingProxyType({
    "server_round_robin":
        "idle server connections are reused last-in first-out; for several hosts use a host "
        "list with load_balance_hosts",
    "application_name_add_host":
        "the client address is not added to application_name; SHOW CLIENTS and the log "
        "lines name it",
    "service_name":
        "Windows service registration does not apply; run pgmux under systemd or another "
        "service manager",
    "auth_ldap_options":
        "LDAP authentication is not supported; use scram-sha-256 or md5 with auth_file or "
        "auth_query",
    "dns_max_ttl":
        "host names are resolved by the system resolver for every new server connection, "
        "without a cache of pgmux's own",
    "dns_nxdomain_ttl":
        "host names are resolved by the system resolver for every new server connection, "
        "without a cache of pgmux's own",
    "dns_zone_check_period":
        "DNS zones are not watched; names are resolved again for every new server connection",
    "resolv_conf":
        "the system resolver's configuration (/etc/resolv.conf) is used",
    "cancel_wait_timeout":
        "cancel requests are never queued: each is sent to PostgreSQL at once on its own "
        "connection",
    "client_tls_ecdhcurve":
        "the key exchange uses OpenSSL's default curves",
    "client_tls_dheparams":
        "the key exchange uses OpenSSL's defaults",
    "pkt_buf":
        "buffers are sized by the event loop; messages are streamed through whatever their "
        "size",
    "sbuf_loopcnt":
        "the event loop interleaves connections itself",
    "tcp_defer_accept":
        "connections are accepted at once; one that sends nothing is closed after "
        "client_login_timeout",
    "pool_idle_timeout":
        "pools are kept until RELOAD removes their database or user",
    "login_notify_message":
        "no notice is sent after login",
})

# Keys of a [databases] entry, a [users] entry and a [peers] entry.
UNSUPPORTED_DATABASE_KEYS: Mapping[str, str] = MappingProxyType({
    "query_wait_timeout":
        "only the [pgbouncer] query_wait_timeout applies",
    "target_session_attrs":
        "every server that accepts the login is used; point host at the primary or the "
        "standby you want",
})
UNSUPPORTED_USER_KEYS: Mapping[str, str] = MappingProxyType({
    "query_wait_timeout":
        "only the [pgbouncer] query_wait_timeout applies",
})
UNSUPPORTED_PEER_KEYS: Mapping[str, str] = MappingProxyType({
    "pool_size":
        "cancel requests to a peer are not limited in number",
})

# Values of a [databases] key that mean "not set": no warning for them.
UNSET_KEY_VALUES: Mapping[str, frozenset[str]] = MappingProxyType({
    "target_session_attrs": frozenset({"any"}),
    "query_wait_timeout": frozenset({"-1"}),
})

# auth_type values pgmux accepts in the file but cannot authenticate with.
UNSUPPORTED_AUTH_TYPES: Mapping[str, str] = MappingProxyType({
    "pam": "PAM authentication is not supported: every login is refused; use scram-sha-256 "
           "or md5",
    "ldap": "LDAP authentication is not supported: every login is refused; use "
            "scram-sha-256 or md5",
})


def ignored_message(name: str, reason: str) -> str:
    """PgBouncer-like wording for a setting that is read but has no effect."""
    return f'setting "{name}" is not supported by pgmux and is ignored: {reason}'


def key_message(section: str, name: str, reason: str) -> str:
    """The same for a key inside a [databases], [users] or [peers] entry."""
    return f'{section} parameter "{name}" is not supported by pgmux and is ignored: {reason}'
