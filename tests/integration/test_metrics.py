"""/metrics on a real pgmux: Prometheus text format (parsed with prometheus_client), client and
server series for every pool, counters that move."""

from __future__ import annotations

import socket
import urllib.request

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgmux.embedded import free_port
from tests.integration.conftest import PgmuxFactory


def scrape(port: int) -> dict[str, dict[tuple[str, ...], float]]:
    """metric sample name -> {(database, user): value} (unlabelled samples under ())."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sample.labels[k] for k in ("database", "user") if k in sample.labels)
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def test_metrics_endpoint(pgmux_factory: PgmuxFactory) -> None:
    port = free_port()
    pgm = pgmux_factory(pgmux={"metrics_addr": "127.0.0.1", "metrics_port": port})
    with psycopg.connect(pgm.dsn(), autocommit=True) as a, \
            psycopg.connect(pgm.dsn(dbname="testdb"), autocommit=True) as b:
        for _ in range(5):
            a.execute("select 1")
            b.execute("select 1")
        m = scrape(port)
    pools = {("postgres", "postgres"), ("testdb", "postgres")}
    for name in ("pgmux_pool_clients_active", "pgmux_pool_clients_waiting",
                 "pgmux_pool_servers_active", "pgmux_pool_servers_idle",
                 "pgmux_pool_servers_used", "pgmux_pool_servers_login",
                 "pgmux_pool_maxwait_seconds", "pgmux_transactions_total",
                 "pgmux_queries_total", "pgmux_received_bytes_total", "pgmux_sent_bytes_total",
                 "pgmux_transaction_seconds_total", "pgmux_query_seconds_total",
                 "pgmux_wait_seconds_total", "pgmux_server_assignments_total"):
        assert set(m[name]) == pools, name
    for key in pools:
        assert m["pgmux_pool_clients_active"][key] == 1
        assert m["pgmux_pool_servers_idle"][key] + m["pgmux_pool_servers_active"][key] == 1
        assert m["pgmux_queries_total"][key] >= 5
        assert m["pgmux_transactions_total"][key] >= 5
    assert m["pgmux_info"][()] == 1
    assert m["pgmux_paused"][()] == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        after = resp.read().decode()
    assert "pgmux_pool_clients_active" in after


@pytest.mark.parametrize("where", ["in use", "not on this host"])
def test_metrics_that_cannot_listen_stop_the_start(
    pgmux_factory: PgmuxFactory, where: str
) -> None:
    with socket.create_server(("127.0.0.1", free_port())) as taken:
        if where == "in use":
            addr, port = "127.0.0.1", taken.getsockname()[1]
        else:
            addr, port = "192.0.2.1", free_port()  # TEST-NET-1: on no host
        with pytest.raises(RuntimeError, match="exited with 1") as exc:
            pgmux_factory(pgmux={"metrics_addr": addr, "metrics_port": port})
    text = str(exc.value)
    assert f"metrics: cannot listen on metrics_addr {addr} metrics_port {port}: " in text
    assert ("address already in use" if where == "in use" else "cannot assign") in text
    assert "Traceback" not in text
