"""Slow and silent clients: one that stops reading a large result holds its own server and no
more (pgmux stops reading that server instead of buffering the result), and connections that
never finish their startup take nothing from anyone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults import wire as w
from tests.faults.load import Traffic
from tests.integration.conftest import PgmuxFactory

pytestmark = pytest.mark.timeout(120)

# About 200 MB of rows: far more than any socket buffer on either side of pgmux.
BIG = "SELECT repeat('x', 1000) FROM generate_series(1, 200000)"
LATENCY_BOUND = 2.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_blocks_nobody(pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 2})
    with Traffic(mux.port, 4) as traffic:
        traffic.wait_for(3)
        before = rss_kib(mux.proc.pid)
        slow = w.WireClient(mux.port, rcvbuf=4096)
        slow.login()
        slow.send(w.query(BIG))
        assert slow.read().type == b"T"  # NOTE: the result has begun; now it stops reading
        time.sleep(2)
        during = rss_kib(mux.proc.pid)
        done = traffic.succeeded
        time.sleep(0.5)
        assert traffic.succeeded > done, "the normal clients stopped getting answers"
        slow.vanish(rst=True)
        time.sleep(0.2)
        with w.connect(mux.port) as c:
            assert c.scalar("select 1") == "1"
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.max_latency < LATENCY_BOUND, traffic.max_latency
    # NOTE: flow control: what pgmux holds for the slow client is bounded by socket buffers,
    # not by the size of the result.
    assert during - before < 64 * 1024, (before, during)


def test_silent_and_half_started_connections_take_nothing(pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"default_pool_size": 2, "max_client_conn": 1000})
    packet = w.startup()
    silent = [w.WireClient(mux.port) for _ in range(100)]
    half = [w.WireClient(mux.port) for _ in range(100)]
    try:
        for c in half:
            c.send(packet[:len(packet) // 2])
        with Traffic(mux.port, 4) as traffic:
            traffic.wait_for(20)
        assert not traffic.errors, traffic.errors[:5]
        assert traffic.max_latency < LATENCY_BOUND, traffic.max_latency
        with w.connect(mux.port) as c:
            assert c.scalar("select 1") == "1"
    finally:
        for c in silent + half:
            c.close()
