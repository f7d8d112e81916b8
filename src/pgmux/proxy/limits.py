"""PgBouncer's limit and timer decisions as pure functions (no I/O, no clocks: callers pass
counts, settings and ages in): client limits, server lifetime, the server
check, the linked-server timeouts, server_fast_close, query_wait_notify and host lists.

proxy/login.py, proxy/launch.py, proxy/link.py and proxy/janitor.py carry the verdicts out;
tests/proxy/test_limits.py pins every row.
"""

from __future__ import annotations

from typing import Final

# NOTE: PgBouncer's texts, sent with SQLSTATE 08P01 as PgBouncer's disconnect_client sends
# every pooler error that names no SQLSTATE of its own.
REFUSAL_SQLSTATE: Final = "08P01"
MAX_CLIENT_CONN: Final = "no more connections allowed (max_client_conn)"
MAX_DB_CLIENTS: Final = "client connections exceeded (max_db_client_connections)"
MAX_USER_CLIENTS: Final = "client connections exceeded (max_user_client_connections)"
# The NoticeResponse a client gets once when it has waited query_wait_notify for a server.
WAIT_NOTICE: Final = "No server connection available in postgres backend, client being queued"
# Logged (warning, with the first waiter's prefix) for each server opened from the reserve
# pool; the decision itself is the pool core's (pool/core.py wanted_launches).
RESERVE_LOG: Final = "taking connection from reserve_pool"
# Reasons a linked server (and its client) is closed for, in PgBouncer's words.
QUERY_TIMEOUT: Final = "query timeout"
IDLE_TX_TIMEOUT: Final = "idle transaction timeout"
TRANSACTION_TIMEOUT: Final = "transaction timeout"
CONFIG_CHANGED: Final = "database configuration changed"


def effective(override: int | float | None, default: int | float) -> int | float:
    """A [users]/[databases] value when it is set and non-zero, else the [pgbouncer] one
    (PgBouncer's rule for per-user/per-database limits and timeouts)."""
    return override if override else default


def client_refusal(db_clients: int, db_limit: int, user_clients: int,
                   user_limit: int) -> str | None:
    """Whether one more client of a database and user may log in. The counts are the clients
    already in (not counting the newcomer); a limit of 0 is unlimited. The database limit is
    checked first, as PgBouncer does. None: admitted; else the refusal text."""
    if db_limit > 0 and db_clients >= db_limit:
        return MAX_DB_CLIENTS
    if user_limit > 0 and user_clients >= user_limit:
        return MAX_USER_CLIENTS
    return None


def life_over(age: float, lifetime: float, pool_size: int, since_last_kill: float) -> bool:
    """server_lifetime: a server of this age may be closed now. 0 disables the lifetime.
    As PgBouncer, closes of one pool for lifetime are spread server_lifetime / pool_size
    apart (since_last_kill: seconds since the pool last closed one for it), so a pool's
    servers are not all replaced at once."""
    if lifetime <= 0 or age < lifetime:
        return False
    gap = lifetime / pool_size if pool_size > 0 else 0.0
    return since_last_kill >= gap


def check_needed(check_query: str, check_delay: float, idle_for: float) -> bool:
    """server_check_query: a server idle for idle_for seconds is checked before reuse when a
    check query is set ("" disables it) and it has been idle longer than server_check_delay
    (0: checked at every reuse)."""
    if not check_query:
        return False
    return check_delay <= 0 or idle_for > check_delay


def linked_timeout(busy: bool, in_transaction: bool, query_age: float, idle_age: float,
                   xact_age: float, query_timeout: float, idle_tx_timeout: float,
                   xact_timeout: float) -> str | None:
    """The timeout a server linked to a client has run into, in PgBouncer's order, or None.

    busy: a query is running; in_transaction: the last ReadyForQuery was not idle. query_age
    counts from the query's start, idle_age from the server's last answer (an idle transaction),
    xact_age from the transaction's first query (transaction_timeout, PgBouncer 1.25). A
    server that is neither busy nor in a transaction is ready: no timeout applies."""
    if not busy and not in_transaction:
        return None
    if busy and query_timeout > 0 and query_age > query_timeout:
        return QUERY_TIMEOUT
    if not busy and idle_tx_timeout > 0 and idle_age > idle_tx_timeout:
        return IDLE_TX_TIMEOUT
    if xact_timeout > 0 and xact_age > xact_timeout:
        return TRANSACTION_TIMEOUT
    return None


def fast_close(enabled: bool, close_needed: bool, ready: bool) -> bool:
    """server_fast_close: a linked session-mode server marked to close (RECONNECT, a RELOAD
    that changed its database) closes, with its client, as soon as it is ready (outside a
    transaction, nothing outstanding) instead of at the end of the session."""
    return enabled and close_needed and ready


def wait_notice_due(notify_after: float, waited: float, already_sent: bool) -> bool:
    """query_wait_notify: whether a queued client gets the 'client being queued' notice now
    (once per wait; 0 disables it)."""
    return notify_after > 0 and not already_sent and waited > notify_after


def split_hosts(host: str | None) -> tuple[str | None, ...]:
    """A [databases] host= value as its list of hosts (one entry when it is not a list)."""
    if host is None or "," not in host:
        return (host,)
    return tuple(h.strip() for h in host.split(",") if h.strip()) or (None,)


def next_host(count: int, counter: int, round_robin: bool, last_failed: bool) -> tuple[int, int]:
    """Which host of a list of `count` the next server connection tries, and the pool's
    counter after it: round-robin moves on at every connection; disable stays on a host
    until a connection to it fails, then moves to the next."""
    if count <= 1:
        return 0, counter
    if not round_robin and last_failed:
        counter += 1
    index = counter % count
    if round_robin:
        counter += 1
    return index, counter


def hosts_in_order(host: str | None, counter: int, round_robin: bool, last_failed: bool
                   ) -> tuple[tuple[str | None, ...], int]:
    """The hosts of a host= value in the order the next server connection tries them (the
    one load_balance_hosts picks first, then the rest of the list after it), and the pool's
    counter after it."""
    hosts = split_hosts(host)
    index, counter = next_host(len(hosts), counter, round_robin, last_failed)
    return hosts[index:] + hosts[:index], counter
