"""Microbenchmark of pgmux's per-transaction Python work, without sockets: a client and a
server protocol wired to transports that drop what is written (bench/hotpath.py).

    .venv/bin/python bench/hotpath.py              # compiled and pure Python, alternating
    .venv/bin/python bench/hotpath.py --build pure  # one build, in this process
    .venv/bin/python bench/hotpath.py --profile     # the build in force, then a cProfile

With both builds (the default), each round runs one child process per build (the installed
compiled build, then PGMUX_PURE=1 for the same install's pure Python), in a rotated order, and
keeps each case's best time over all rounds. Times are the process's CPU time per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from typing import Any

import pgmux
from pgmux.config import config_from_url
from pgmux.pool.core import ServerState
from pgmux.protocol import messages as m
from pgmux.proxy.client import ClientConnection
from pgmux.proxy.pooler import Pooler
from pgmux.proxy.server import ServerConnection


class NullTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def new_client(pooler: Pooler, mode: str) -> ClientConnection:
    client = ClientConnection(pooler)
    client.connection_made(NullTransport())  # type: ignore[arg-type]
    db = pooler.config.database("postgres")
    assert db is not None
    client.user, client.dbname = "postgres", "postgres"
    pool = pooler.get_pool(db, "postgres", client)
    client.pool, client.pool_mode, client.watch_session = pool, mode, mode != "session"
    return client


def setup(mode: str) -> tuple[ClientConnection, ServerConnection]:
    config = config_from_url("postgresql://postgres@127.0.0.1:5432/postgres", listen_port=6999,
                             pool_mode=mode)
    pooler = Pooler(config)
    # NOTE: no loop runs here; the benchmark flushes the outbox itself, as the loop would.
    pooler.schedule_flush = lambda: None
    client = ClientConnection(pooler)
    client.connection_made(NullTransport())  # type: ignore[arg-type]
    db = config.database("postgres")
    assert db is not None
    client.user, client.dbname = "postgres", "postgres"
    pool = pooler.get_pool(db, "postgres", client)
    client.pool, client.pool_mode, client.watch_session = pool, mode, mode != "session"
    server = ServerConnection(pooler, pool)
    server.transport = NullTransport()  # type: ignore[assignment]
    pool.core.add_server(server)
    pool.welcome = {"client_encoding": "UTF8", "DateStyle": "ISO, MDY", "TimeZone": "UTC",
                    "application_name": "", "standard_conforming_strings": "on",
                    "IntervalStyle": "postgres", "server_version": "18.6"}
    server.params = dict(pool.welcome)
    server.tracked = {k: v for k, v in server.params.items() if k in pooler.tracked_params}
    pooler.links.server_ready(server)
    assert server.server_state is ServerState.IDLE
    pooler.login._welcome(client, pool)
    return client, server


# NOTE: the process's CPU time, not wall time: on a shared machine the wait for a core is not
# pgmux's work (on an idle one the two agree).
clock = time.process_time


SIMPLE_Q = m.query("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;")
SIMPLE_A = (m.row_description([("abalance", 23)]) + m.data_row(["0"]) +
            m.command_complete("SELECT 1") + m.ready_for_query(b"I"))
EXT_Q = (m.message(ord("P"), b"\0SELECT abalance FROM pgbench_accounts WHERE aid = $1\0\0\0") +
         m.message(ord("B"), b"\0\0\0\0\0\x01\0\0\0\x0548213\0\0") +
         m.message(ord("D"), b"P\0") + m.message(ord("E"), b"\0\0\0\0\0") + m.message(ord("S")))
EXT_A = (b"1\0\0\0\x04" + b"2\0\0\0\x04" + m.row_description([("abalance", 23)]) +
         m.data_row(["0"]) + m.command_complete("SELECT 1") + m.ready_for_query(b"I"))


def run(mode: str, q: bytes, a: bytes, n: int) -> float:
    client, server = setup(mode)
    flush = client.pooler.flush_outbox
    t0 = clock()
    for _ in range(n):
        client.data_received(q)
        flush()  # NOTE: what the loop does at the end of each iteration
        server.data_received(a)
        flush()
    dt = clock() - t0
    assert server.link is None and server.server_state is ServerState.IDLE
    return dt / n * 1e6


def run_contended(mode: str, q: bytes, a: bytes, n: int) -> float:
    """Two clients, one server: the second client queues and gets the server on release."""
    first, server = setup(mode)
    assert first.pool is not None
    first.pool.core.limits.pool_size = 1  # NOTE: full: the waiter launches nothing
    second = new_client(first.pooler, mode)
    assert second.pool is not None
    first.pooler.login._welcome(second, second.pool)
    flush = first.pooler.flush_outbox
    t0 = clock()
    for _ in range(n):
        first.data_received(q)
        second.data_received(q)
        flush()
        server.data_received(a)
        flush()
        server.data_received(a)
        flush()
    dt = clock() - t0
    assert server.link is None and server.server_state is ServerState.IDLE
    return dt / n / 2 * 1e6


def measure(n: int) -> dict[str, float]:
    """Microseconds per transaction for each case, in this process's build."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    out = {}
    for name, q, a in (("simple", SIMPLE_Q, SIMPLE_A), ("extended", EXT_Q, EXT_A)):
        # NOTE: the best of 7 short runs: a shared machine's noise only ever adds time.
        out[f"{name:9s} transaction mode"] = min(run("transaction", q, a, n // 7)
                                                 for _ in range(7))
        out[f"{name:9s} transaction mode, a client waits"] = min(
            run_contended("transaction", q, a, n // 14) for _ in range(7))
    return out


def in_child(build: str, n: int) -> tuple[str, dict[str, float]]:
    """measure(n) in a child process running `build` ("compiled" or "pure")."""
    env = {k: v for k, v in os.environ.items() if k != "PGMUX_PURE"}
    if build == "pure":
        env["PGMUX_PURE"] = "1"
    out = subprocess.run([sys.executable, __file__, str(n), "--child"], env=env,
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    return got["build"], got["us"]


def both(n: int, rounds: int) -> None:
    """Both builds, alternating: each round a child per build in a rotated order; prints each
    case's best over the rounds and compiled / pure."""
    builds = ["compiled", "pure"]
    best: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    for rnd in range(rounds):
        for build in builds[rnd % 2:] + builds[:rnd % 2]:
            kinds[build], us = in_child(build, n)
            for case, t in us.items():
                mine = best.setdefault(build, {})
                mine[case] = min(t, mine.get(case, t))
            print(f"round {rnd + 1} {build:8s} " + "  ".join(f"{t:6.2f}" for t in us.values()),
                  file=sys.stderr, flush=True)
    if kinds["compiled"] != pgmux.COMPILED:
        print(f"note: no compiled build installed ('compiled' ran {kinds['compiled']})")
    print(f"{'us per transaction (best of ' + str(rounds) + ' rounds x 7 runs)':52s} "
          f"{'compiled':>9s} {'pure':>9s} {'compiled / pure':>16s}")
    for case, c in best["compiled"].items():
        p = best["pure"][case]
        print(f"{case:52s} {c:9.2f} {p:9.2f} {c / p:16.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=200000,
                    help="transactions per case (200000), split over 7 runs")
    ap.add_argument("--build", choices=("both", "compiled", "pure"), default="both",
                    help="both builds alternating in child processes (default), or one")
    ap.add_argument("--rounds", type=int, default=3, help="rounds with both builds (3)")
    ap.add_argument("--profile", action="store_true",
                    help="measure the build in force here, then a cProfile of the waiting case")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps({"build": pgmux.build_kind(), "us": measure(args.n)}))
        return
    if args.build == "both" and not args.profile:
        both(args.n, args.rounds)
        return
    if args.build != "both":
        kind, us = in_child(args.build, args.n)
    else:
        kind, us = pgmux.build_kind(), measure(args.n)
    print(f"pgmux {kind}")
    for case, t in us.items():
        print(f"{case}: {t:6.2f} us per transaction")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_contended("transaction", SIMPLE_Q, SIMPLE_A, args.n // 8)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
