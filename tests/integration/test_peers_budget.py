"""Separately started pgmux processes: PgBouncer's peer_id and [peers] carry a cancel to the
process that owns the client, and a shared [pgmux] budget_file keeps their servers within
one pool size."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from pgmux.protocol import messages as m
from pgmux.workers.keys import peer_of
from tests import unprivileged
from tests.integration.conftest import Pgmux, render_ini, wait_port


@pytest.fixture
def started() -> Iterator[list[Pgmux]]:
    muxes: list[Pgmux] = []
    yield muxes
    for mux in muxes:
        mux.stop()


def start(pg: EmbeddedPostgres, tmp_path: Path, name: str, port: int,
          settings: dict[str, object], pgmux: dict[str, object] | None = None,
          extra: str = "") -> Pgmux:
    socket_dir = tmp_path / f"sock-{name}"
    socket_dir.mkdir()
    ini = tmp_path / f"{name}.ini"
    log = tmp_path / f"{name}.log"
    ini.write_text(render_ini(pg, port, socket_dir, settings, None, None, pgmux, None) + extra)
    unprivileged.give_away(tmp_path)
    cmd = [sys.executable, "-m", "pgmux", "serve", str(ini)] + unprivileged.serve_args()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, proc, log=log)
    return Pgmux(proc, port, ini, log, socket_dir)


class RawClient:
    """A client that keeps its cancel key (BackendKeyData), which drivers do not show."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        body = struct.pack("!i", 196608) + b"user\0postgres\0database\0postgres\0\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self.pid = self.secret = 0
        for t, payload in self.messages():
            if t == b"K":
                self.pid, self.secret = struct.unpack("!ii", payload[:8])
            elif t == b"Z":
                break

    def messages(self) -> Iterator[tuple[bytes, bytes]]:
        buf = b""
        while True:
            while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
                chunk = self.sock.recv(65536)
                assert chunk, "connection closed"
                buf += chunk
            n = 1 + struct.unpack("!i", buf[1:5])[0]
            yield buf[:1], buf[5:n]
            buf = buf[n:]

    def query(self, sql: str) -> bytes:
        """The SQLSTATE of the error the query ended with, or b"" when it succeeded."""
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        code = b""
        for t, payload in self.messages():
            if t == b"E":
                code = next(f[1:] for f in payload.split(b"\0") if f[:1] == b"C")
            elif t == b"Z":
                return code
        return code


def test_a_cancel_sent_to_a_peer_reaches_the_query(pg: EmbeddedPostgres, tmp_path: Path,
                                                   started: list[Pgmux]) -> None:
    ports = {1: free_port(), 2: free_port()}
    peers = "[peers]\n" + "".join(f"{i} = host=127.0.0.1 port={p}\n" for i, p in ports.items())
    for i, port in ports.items():
        started.append(start(pg, tmp_path, f"peer{i}", port, {"peer_id": i}, extra=peers))
    one, two = started
    client = RawClient(one.port)
    assert peer_of(client.pid) == 1
    assert client.query("select 1") == b""
    result: list[bytes] = []
    t = threading.Thread(target=lambda: result.append(client.query("select pg_sleep(20)")))
    t.start()
    time.sleep(0.3)
    began = time.monotonic()
    # NOTE: sent to the other process, as a load balancer in front of both may do
    with socket.create_connection(("127.0.0.1", two.port)) as sock:
        sock.sendall(m.cancel_request(client.pid, client.secret))
    t.join(10)
    client.sock.close()
    assert result == [b"57014"], result   # query_canceled
    assert time.monotonic() - began < 5
    # a key for a peer nobody knows goes nowhere, and says so
    with socket.create_connection(("127.0.0.1", two.port)) as sock:
        sock.sendall(m.cancel_request((client.pid & ~0x00FFFF00) | (77 << 16), client.secret))
    deadline = time.monotonic() + 5
    while "could not find peer 77" not in two.logs():
        assert time.monotonic() < deadline, two.logs()
        time.sleep(0.05)


def test_two_processes_with_one_budget_file_share_one_pool(
        pg: EmbeddedPostgres, tmp_path: Path, started: list[Pgmux]) -> None:
    budget = tmp_path / "budget"
    for name in ("a", "b"):
        started.append(start(pg, tmp_path, name, free_port(), {"default_pool_size": 4},
                             {"budget_file": str(budget)}))
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("select count(*) from pg_stat_activity where datname = "
                                   "'testdb'").fetchone()
                assert row is not None
                peak[0] = max(peak[0], int(row[0]))
                time.sleep(0.005)

    errors: list[Exception] = []

    def client(mux: Pgmux) -> None:
        try:
            with psycopg.connect(mux.dsn(dbname="testdb"), autocommit=True) as conn:
                for _ in range(10):
                    conn.execute("select pg_sleep(0.01)")
        except Exception as exc:  # noqa: BLE001 - the test fails on any
            errors.append(exc)

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        deadline = time.monotonic() + 5
        while conn.execute("select count(*) from pg_stat_activity where datname = 'testdb'"
                           ).fetchone() != (0,) and time.monotonic() < deadline:
            time.sleep(0.05)   # NOTE: backends of an earlier test may still be going
    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=client, args=(started[i % 2],)) for i in range(20)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    stop.set()
    sampler.join()
    assert not errors, errors
    assert 0 < peak[0] <= 4, peak[0]
