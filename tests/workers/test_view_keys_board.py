"""Pure parts of the workers: SHOW rows of several workers added up as one pooler's, cancel
keys that name their worker and peer, and the waiters board."""

from __future__ import annotations

import random
from pathlib import Path

from pgmux.admin.show import POOLS, STATS
from pgmux.workers.board import Board, pool_hash
from pgmux.workers.keys import KeyLayout, peer_of, ttl_of, worker_of
from pgmux.workers.view import merge


def _pool(db: str, counts: list[int], wait: tuple[int, int] = (0, 0)) -> tuple[object, ...]:
    return (db, "u", *counts, *wait, "transaction", None)


def test_show_pools_adds_up_counts_and_keeps_the_longest_wait() -> None:
    a = [_pool("app", [3, 2, 0, 0, 4, 0, 0, 1, 0, 0, 1], (0, 900_000)),
         _pool("other", [1] * 11)]
    b = [_pool("app", [5, 7, 0, 0, 6, 0, 0, 0, 1, 0, 0], (1, 5))]
    rows = merge("pools", [a, b])
    assert len(rows[0]) == len(POOLS)
    assert [r[0] for r in rows] == ["app", "other"]
    app = rows[0]
    assert app[2:13] == (8, 9, 0, 0, 10, 0, 0, 1, 1, 0, 1)
    # NOTE: one wait of 1.000005 s, not max(s) and max(us) of different waits
    assert app[13:15] == (1, 5)
    assert app[15] == "transaction"


def test_show_stats_adds_totals_and_rates_and_weights_mean_times() -> None:
    def row(xacts: int, rate: int, mean_us: int) -> tuple[object, ...]:
        totals = [0] * 11
        totals[1] = xacts
        avgs = [0] * 11
        avgs[1], avgs[5] = rate, mean_us  # avg_xact_count, avg_xact_time
        return ("app", *totals, *avgs)

    rows = merge("stats", [[row(100, 30, 1000)], [row(50, 10, 3000)]])
    assert len(rows[0]) == len(STATS)
    app = rows[0]
    assert app[2] == 150            # total_xact_count
    assert app[13] == 40            # avg_xact_count: rates add up
    assert app[17] == (30 * 1000 + 10 * 3000) // 40  # avg_xact_time: weighted by the rates


def test_per_worker_shows_are_all_rows() -> None:
    assert merge("clients", [[(1, 0)], [(2, 1), (3, 1)]]) == [(1, 0), (2, 1), (3, 1)]


def test_totals_and_lists() -> None:
    t = merge("totals", [[("total_xact_count", 5), ("avg_xact_count", 1),
                          ("avg_xact_time", 100)],
                         [("total_xact_count", 7), ("avg_xact_count", 3),
                          ("avg_xact_time", 200)]])
    assert t == [("total_xact_count", 12), ("avg_xact_count", 4), ("avg_xact_time", 175)]
    lists = merge("lists", [[("databases", 2), ("used_clients", 5)],
                            [("databases", 2), ("used_clients", 6)]])
    assert lists == [("databases", 2), ("used_clients", 11)]


def test_cancel_keys_name_peer_and_worker_and_keep_randomness() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        peer, worker = rng.randint(1, 16383), rng.randint(0, 255)
        pid, secret = KeyLayout(peer, worker).stamp(rng.getrandbits(31), rng.getrandbits(31))
        assert 0 <= pid < 2 ** 31
        assert (peer_of(pid), worker_of(pid), ttl_of(secret)) == (peer, worker, 3)
    # without a peer_id the key carries no TTL bits of its own, and no peer
    pid, secret = KeyLayout(0, 9).stamp(0x12345678, 0)
    assert worker_of(pid) == 9 and secret == 0 and pid >> 8 == 0x123456
    assert KeyLayout().stamp(0x12345678, 0x0ABCDEF0) == (0x12345678, 0x0ABCDEF0)


def test_pgbouncer_peer_bytes() -> None:
    # PgBouncer puts peer_id's low byte in the key's 2nd byte and its high byte in the 3rd.
    pid, _ = KeyLayout(0x1234, None).stamp(0, 0)
    assert pid.to_bytes(4, "big") == bytes([0, 0x34, 0x12, 0])


def test_board_demand_of_others_and_staleness(tmp_path: Path) -> None:
    path = str(tmp_path / "budget.board")
    a, b = Board(path), Board(path)
    h = pool_hash("app", "u")
    a.publish(0, {h: 3, pool_hash("x", "u"): 0}, now=100.0)
    b.publish(1, {h: 2}, now=100.0)
    assert b.demand(exclude=1, now=100.5) == {h: 3}
    assert a.demand(exclude=0, now=100.5) == {h: 2}
    assert a.demand(exclude=None, now=100.5) == {h: 5}
    assert a.demand(exclude=0, now=102.0) == {}   # b's heartbeat is too old
    b.leave(1)
    assert a.demand(exclude=0, now=100.5) == {}
