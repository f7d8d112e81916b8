"""What session state costs: time per transaction through pgmux (transaction mode, pool of 2)
for plain transactions, transactions that need a replay (clients with different settings
sharing two servers), transactions that change a setting (one read-back each), and
session_check = auto against always on plain transactions. Rounds alternate; the median of
each is reported (docs/session-state.md has a run).

    .venv/bin/python bench/session_state.py [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgmux.embedded import EmbeddedPostgres, free_port  # noqa: E402


class Pgmux:
    """One `pgmux serve INI` process."""

    def __init__(self, ini: Path, port: int) -> None:
        self.ini, self.port = ini, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pgmux", "serve", "-q",
                                      str(self.ini)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgmux did not start on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(10)

CLIENTS = 8


def run(port: int, seconds: float, per_client: list[str], body: str) -> float:
    """CLIENTS threads, each with its own connection (setup statement first), running `body`
    in autocommit for `seconds`; returns microseconds per transaction (wall / count)."""
    stop = time.monotonic() + seconds
    counts = [0] * CLIENTS

    def work(i: int) -> None:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as conn:
            if per_client[i]:
                conn.execute(per_client[i].encode())
            n = 0
            q = body.replace("{i}", str(i)).encode()
            while time.monotonic() < stop:
                conn.execute(q)
                n += 1
            counts[i] = n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (time.monotonic() - start) / max(1, sum(counts)) * 1e6 * CLIENTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pg = EmbeddedPostgres(max_connections=30).start()
    work = Path(tempfile.mkdtemp(prefix="pgmux-bench-state-"))
    try:
        muxes = {}
        for check in ("auto", "always"):
            port = free_port()
            ini = work / f"{check}.ini"
            ini.write_text(
                f"[databases]\npostgres = host=127.0.0.1 port={pg.port} dbname=postgres\n"
                f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
                "unix_socket_dir =\nauth_type = trust\n"
                f"auth_file = {work}/users.txt\npool_mode = transaction\n"
                "default_pool_size = 2\nmax_client_conn = 100\nlog_connections = 0\n"
                "log_disconnections = 0\nlog_stats = 0\n"
                f"[pgmux]\nsession_check = {check}\n")
            (work / "users.txt").write_text('"postgres" ""\n')
            muxes[check] = Pgmux(ini, port)
        for mux in muxes.values():
            mux.start()
        cases = {
            "plain (no session state)": ("auto", [""] * CLIENTS, "select 1"),
            "replay at every link (8 different settings, 2 servers)":
                ("auto", [f"set work_mem = '{i + 1}MB'" for i in range(CLIENTS)], "select 1"),
            "a SET in every transaction (tracked, replayed at the next link)":
                ("auto", [""] * CLIENTS, "set work_mem = '1{i}MB'"),
            "plain, session_check = always": ("always", [""] * CLIENTS, "select 1"),
        }
        results: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in order:
                check, setup, body = cases[name]
                results[name].append(run(muxes[check].port, args.seconds, setup, body))
        base = statistics.median(results["plain (no session state)"])
        print(f"us per transaction, {CLIENTS} clients on a pool of 2, median of {args.rounds} "
              f"rounds of {args.seconds:g}s")
        for name, values in results.items():
            med = statistics.median(values)
            print(f"{name:58s} {med:8.1f}   {med - base:+8.1f}")
    finally:
        for mux in muxes.values():
            mux.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
