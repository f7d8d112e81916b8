"""stats_period arithmetic: rates per second, mean times per event, PgBouncer's log line."""

from __future__ import annotations

from pgmux.stats.counters import Counters
from pgmux.stats.period import Averages, StatsPeriod, averages, log_line


def test_averages_are_rates_and_means() -> None:
    old = Counters(xact_count=10, query_count=20, bytes_received=1000, xact_time=5000,
                   query_time=4000, wait_time=0, server_assignment_count=10)
    cur = Counters(xact_count=110, query_count=320, bytes_received=61000, bytes_sent=9000,
                   xact_time=5000 + 100 * 250, query_time=4000 + 300 * 100,
                   wait_time=2000, server_assignment_count=110)
    a = averages(cur, old, 10.0)
    assert (a.xact_count, a.query_count, a.recv, a.sent) == (10, 30, 6000, 900)
    assert (a.xact_time, a.query_time, a.wait_time) == (250, 100, 20)
    assert averages(cur, old, 0) == Averages()
    assert averages(old, old, 5).xact_time == 0  # no transactions: no division


def test_rollover_keeps_two_snapshots_per_pool() -> None:
    period = StatsPeriod(now=100.0)
    live = {("db", "u"): Counters(xact_count=5)}
    period.rollover(live, now=160.0)
    live[("db", "u")].xact_count = 125  # counters keep moving between rollovers
    assert period.averages([("db", "u")]).xact_count == 5 // 60
    period.rollover(live, now=220.0)
    assert period.averages([("db", "u")]).xact_count == 2  # 120 in 60 s
    assert period.all_averages().xact_count == 2
    assert period.averages([("other", "u")]) == Averages()


def test_log_line_reads_like_pgbouncers() -> None:
    line = log_line(Averages(xact_count=3, query_count=4, recv=5, sent=6, xact_time=7,
                             query_time=8, wait_time=9))
    assert line == ("stats: 3 xacts/s, 4 queries/s, 0 client parses/s, 0 server parses/s, "
                    "0 binds/s, in 5 B/s, out 6 B/s, xact 7 us, query 8 us, wait 9 us")
