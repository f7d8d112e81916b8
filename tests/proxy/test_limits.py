"""Every row of proxy/limits.py's decisions: client limits, server lifetime, the server check,
linked-server timeouts, server_fast_close, query_wait_notify and host lists."""

from __future__ import annotations

import pytest

from pgmux.pool.core import PoolCore, PoolLimits
from pgmux.proxy import limits as lim

DB, USER = lim.MAX_DB_CLIENTS, lim.MAX_USER_CLIENTS


@pytest.mark.parametrize(("db_n", "db_limit", "user_n", "user_limit", "verdict"), [
    (0, 0, 0, 0, None),          # no limits
    (100, 0, 100, 0, None),      # 0 is unlimited
    (1, 2, 0, 0, None),          # room left in the database
    (2, 2, 0, 0, DB),            # the database is full
    (3, 2, 0, 0, DB),
    (0, 0, 1, 2, None),
    (0, 0, 2, 2, USER),          # the user is full
    (2, 2, 2, 2, DB),            # both full: the database limit is checked first
    (1, 2, 2, 2, USER),
])
def test_client_refusal(db_n: int, db_limit: int, user_n: int, user_limit: int,
                        verdict: str | None) -> None:
    assert lim.client_refusal(db_n, db_limit, user_n, user_limit) == verdict


def test_refusal_texts_are_pgbouncers() -> None:
    assert lim.MAX_CLIENT_CONN == "no more connections allowed (max_client_conn)"
    assert DB == "client connections exceeded (max_db_client_connections)"
    assert USER == "client connections exceeded (max_user_client_connections)"
    assert lim.REFUSAL_SQLSTATE == "08P01"


@pytest.mark.parametrize(("override", "default", "want"), [
    (None, 5, 5), (0, 5, 5), (3, 5, 3), (3, 0, 3), (None, 0, 0), (2.5, 1.0, 2.5),
])
def test_effective(override: float | None, default: float, want: float) -> None:
    assert lim.effective(override, default) == want


@pytest.mark.parametrize(("age", "lifetime", "size", "since_kill", "over"), [
    (10, 0, 5, 1e9, False),       # 0 disables
    (99, 100, 5, 1e9, False),     # not old enough
    (100, 100, 5, 1e9, True),
    (150, 100, 5, 19, False),     # another closed 19 s ago; gap is 100 / 5 = 20 s
    (150, 100, 5, 20, True),
    (150, 100, 0, 0, True),       # unlimited pool: no gap
])
def test_life_over(age: float, lifetime: float, size: int, since_kill: float,
                   over: bool) -> None:
    assert lim.life_over(age, lifetime, size, since_kill) is over


@pytest.mark.parametrize(("query", "delay", "idle", "needed"), [
    ("", 30, 1000, False),            # no check query: never
    ("<empty>", 30, 29, False),       # idle less than server_check_delay
    ("<empty>", 30, 31, True),
    ("select 1", 30, 30, False),      # strictly longer
    ("select 1", 0, 0.01, True),      # 0: every time
])
def test_check_needed(query: str, delay: float, idle: float, needed: bool) -> None:
    assert lim.check_needed(query, delay, idle) is needed


Q, IT, T = lim.QUERY_TIMEOUT, lim.IDLE_TX_TIMEOUT, lim.TRANSACTION_TIMEOUT


@pytest.mark.parametrize(
    ("busy", "in_tx", "q_age", "idle_age", "x_age", "qt", "it", "xt", "verdict"), [
        (False, False, 99, 99, 99, 1, 1, 1, None),   # ready: no timeout applies
        (True, False, 5, 0, 5, 1, 0, 0, Q),          # a long query
        (True, False, 5, 0, 5, 0, 0, 10, None),      # not long enough for transaction_timeout
        (True, False, 11, 0, 11, 0, 0, 10, T),       # one long query counts as a transaction
        (False, True, 0, 5, 5, 0, 1, 0, IT),         # idle in transaction
        (False, True, 0, 5, 5, 1, 0, 0, None),       # query_timeout: only while busy
        (False, True, 0, 2, 12, 0, 5, 10, T),        # short idles, a long transaction
        (True, True, 3, 0, 12, 5, 5, 10, T),
        (True, True, 6, 0, 12, 5, 5, 10, Q),         # query_timeout is checked first
        (False, True, 0, 6, 12, 0, 5, 10, IT),       # then idle_transaction_timeout
        (False, True, 0, 6, 12, 0, 0, 0, None),      # all off
    ])
def test_linked_timeout(busy: bool, in_tx: bool, q_age: float, idle_age: float, x_age: float,
                        qt: float, it: float, xt: float, verdict: str | None) -> None:
    assert lim.linked_timeout(busy, in_tx, q_age, idle_age, x_age, qt, it, xt) == verdict


@pytest.mark.parametrize(("enabled", "close_needed", "ready", "close"), [
    (True, True, True, True),
    (False, True, True, False),   # off: waits for the session's end
    (True, False, True, False),   # nothing asked it to close
    (True, True, False, False),   # inside a transaction or a query: waits for its end
])
def test_fast_close(enabled: bool, close_needed: bool, ready: bool, close: bool) -> None:
    assert lim.fast_close(enabled, close_needed, ready) is close


@pytest.mark.parametrize(("after", "waited", "sent", "due"), [
    (5, 6, False, True), (5, 5, False, False), (5, 60, True, False), (0, 60, False, False),
])
def test_wait_notice_due(after: float, waited: float, sent: bool, due: bool) -> None:
    assert lim.wait_notice_due(after, waited, sent) is due


@pytest.mark.parametrize(("host", "hosts"), [
    (None, (None,)), ("db1", ("db1",)), ("a,b,c", ("a", "b", "c")), (" a , b ", ("a", "b")),
    ("/tmp", ("/tmp",)),
])
def test_split_hosts(host: str | None, hosts: tuple[str | None, ...]) -> None:
    assert lim.split_hosts(host) == hosts


def test_next_host_round_robin_moves_every_time() -> None:
    counter, seen = 0, []
    for failed in (False, True, False, False):
        index, counter = lim.next_host(3, counter, True, failed)
        seen.append(index)
    assert seen == [0, 1, 2, 0]


def test_next_host_disable_stays_until_a_failure() -> None:
    counter, seen = 0, []
    for failed in (False, False, True, False, True, True):
        index, counter = lim.next_host(3, counter, False, failed)
        seen.append(index)
    assert seen == [0, 0, 1, 1, 2, 0]


@pytest.mark.parametrize(("host", "counter", "round_robin", "failed", "order", "after"), [
    ("a,b,c", 0, True, False, ("a", "b", "c"), 1),
    ("a,b,c", 1, True, False, ("b", "c", "a"), 2),
    ("a,b,c", 5, True, False, ("c", "a", "b"), 6),
    ("a,b,c", 0, False, False, ("a", "b", "c"), 0),   # NOTE: disable stays on its host
    ("a,b,c", 0, False, True, ("b", "c", "a"), 1),    # ... until a connect to it failed
    ("a, b ,", 1, True, False, ("b", "a"), 2),         # NOTE: spaces and empty items dropped
    ("db1", 4, True, True, ("db1",), 4),
    (None, 0, True, False, (None,), 0),                # NOTE: no host: the Unix socket
])
def test_hosts_in_order(host: str | None, counter: int, round_robin: bool, failed: bool,
                        order: tuple[str | None, ...], after: int) -> None:
    assert lim.hosts_in_order(host, counter, round_robin, failed) == (order, after)


def test_next_host_single_host() -> None:
    assert lim.next_host(1, 7, True, True) == (0, 7)


class _Srv:
    def __init__(self) -> None:
        from pgmux.pool.core import ServerState
        self.server_state = ServerState.CLOSED


class _Cli:
    def __init__(self) -> None:
        from pgmux.pool.core import ClientState
        self.client_state = ClientState.OUT
        self.wait_start = 0.0


@pytest.mark.parametrize(("timeout", "now", "launches"), [
    (5.0, 4.9, 0),    # full, the first waiter has not waited long enough
    (5.0, 5.0, 2),    # the reserve opens
    (0.0, 100.0, 0),  # reserve_pool_timeout = 0 disables the reserve (PgBouncer)
])
def test_reserve_pool_in_the_core(timeout: float, now: float, launches: int) -> None:
    core: PoolCore[_Srv, _Cli] = PoolCore(PoolLimits(pool_size=1, reserve_pool_size=2,
                                                     reserve_pool_timeout=timeout))
    s = _Srv()
    core.add_server(s)
    core.release_server(s)
    waiters = [_Cli() for _ in range(4)]
    for c in waiters:
        core.find_server(c, 0.0)
    assert core.wanted_launches(now, 100, 100) == launches
