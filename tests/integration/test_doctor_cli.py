"""The doctor's commands against a real PostgreSQL holding leaked and stuck connections."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgmux.cli.main import main
from pgmux.embedded import EmbeddedPostgres

PgFactory = Callable[..., EmbeddedPostgres]

LEAKY = 12
STUCK = 2


class Scenario:
    """A private server (max_connections=20) with 12 idle `leaky-worker` connections and 2
    `stuck-job` ones idle in transaction."""

    def __init__(self, pg: EmbeddedPostgres) -> None:
        self.pg = pg
        self.url = pg.url
        self.leaky: list[psycopg.Connection[Any]] = []
        self.stuck: list[psycopg.Connection[Any]] = []

    def open(self) -> None:
        for _ in range(LEAKY):
            conn = psycopg.connect(self.url, application_name="leaky-worker", autocommit=True)
            conn.execute("SELECT 1")
            self.leaky.append(conn)
        for _ in range(STUCK):
            conn = psycopg.connect(self.url, application_name="stuck-job")
            conn.execute("SELECT 1")  # NOTE: opens a transaction and leaves it open
            self.stuck.append(conn)

    def close(self) -> None:
        for conn in self.leaky + self.stuck:
            conn.close()

    def count(self, application_name: str) -> int:
        rows = self.pg.query(
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE application_name = '{application_name}' AND backend_type = 'client backend'"
        )
        return int(rows[0][0])


@pytest.fixture
def scenario(pg_factory: PgFactory) -> Iterator[Scenario]:
    s = Scenario(pg_factory(max_connections=20))
    s.open()
    try:
        yield s
    finally:
        s.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_info_counts_held_connections(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "info", scenario.url, "--json")
    assert code == 0
    data = json.loads(out)
    conn = data["connections"]
    assert conn["max_connections"] == 20
    assert conn["used"] >= LEAKY + STUCK + 1  # and the doctor's own
    assert conn["reserved"] == int(scenario.pg.query("SHOW superuser_reserved_connections")[0][0])
    assert conn["available"] == 20 - conn["reserved"] - conn["used"]
    assert data["server_version_num"] >= 100000
    assert data["pooler"]["detected"] is False

    code, out, _ = run(capsys, "info", scenario.url)
    assert code == 0
    assert f"{conn['used']} used / {20 - conn['reserved']} usable" in out
    assert "\x1b[" not in out


def test_ps_lists_every_session_but_its_own(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "ps", scenario.url, "--json")
    assert code == 0
    rows = json.loads(out)
    leaky = [r for r in rows if r["application_name"] == "leaky-worker"]
    stuck = [r for r in rows if r["application_name"] == "stuck-job"]
    assert len(leaky) == LEAKY
    assert {r["state"] for r in leaky} == {"idle"}
    assert all(r["xact_age"] is None for r in leaky)
    assert len(stuck) == STUCK
    assert {r["state"] for r in stuck} == {"idle in transaction"}
    assert all(isinstance(r["xact_age"], float) for r in stuck)
    assert not [r for r in rows if r["application_name"] == "pgmux-doctor"]
    for row in rows:
        assert set(row) == {
            "pid", "user", "database", "application_name", "client_addr", "state",
            "state_duration", "xact_age", "query", "wait_event",
        }  # fmt: skip
        assert isinstance(row["state_duration"], float)

    code, out, _ = run(capsys, "ps", scenario.url)
    assert code == 0
    assert out.count("leaky-worker") == LEAKY
    assert "\x1b[" not in out


def test_doctor_names_the_leak_and_the_stuck_transactions(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "doctor", scenario.url, "--json",
        "--idle-threshold", "0s", "--idle-in-transaction-threshold", "0s",
    )  # fmt: skip
    data = json.loads(out)
    assert code in (1, 2)
    assert data["status"] in ("warning", "critical")
    by_code: dict[str, list[dict[str, Any]]] = {}
    for finding in data["findings"]:
        assert finding["severity"] in ("info", "warning", "critical")
        by_code.setdefault(finding["code"], []).append(finding)
    [leak] = [
        f
        for f in by_code["idle-connections"]
        if f["evidence"]["application_name"] == "leaky-worker"
    ]
    assert leak["evidence"]["count"] == LEAKY
    assert leak["severity"] == "warning"
    assert "leaky-worker" in leak["message"]
    [stuck] = by_code["idle-in-transaction"]
    assert stuck["evidence"]["application_name"] == "stuck-job"
    assert stuck["evidence"]["count"] == STUCK
    # 15 of 17 usable slots: near the limit
    assert "connections-near-limit" in by_code or "connections-at-limit" in by_code
    assert any("pool_mode = transaction" in a for a in data["advice"])

    code, out, _ = run(capsys, "doctor", scenario.url, "--idle-threshold", "0s")
    assert code in (1, 2)
    assert "leaky-worker" in out
    assert "advice:" in out


def test_doctor_with_default_thresholds_names_the_idle_group_and_the_open_transactions(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    time.sleep(1.1)  # NOTE: idle in transaction is listed from 1s on
    code, out, _ = run(capsys, "doctor", scenario.url, "--json")
    data = json.loads(out)
    by_code: dict[str, list[dict[str, Any]]] = {}
    for finding in data["findings"]:
        by_code.setdefault(finding["code"], []).append(finding)
    [idle] = by_code["idle-connections"]
    assert idle["evidence"]["application_name"] == "leaky-worker"
    assert idle["evidence"]["count"] == LEAKY
    assert idle["evidence"]["past_threshold"] is False
    [stuck] = by_code["idle-in-transaction"]
    assert stuck["evidence"]["application_name"] == "stuck-job"
    assert stuck["evidence"]["count"] == STUCK
    assert stuck["severity"] == "info"  # young; a warning from 30s, critical from 5m
    [crowd] = by_code["many-connections-from-one-client"]
    assert "12 'leaky-worker', 2 'stuck-job'" in crowd["message"]
    assert code == 1


def test_killall_ends_exactly_the_idle_leaky_workers(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "killall", scenario.url, "--idle", "--application", "leaky-worker", "--dry-run",
        "--json",
    )  # fmt: skip
    assert code == 0
    assert len(json.loads(out)["matched"]) == LEAKY
    assert json.loads(out)["terminated"] == []
    assert scenario.count("leaky-worker") == LEAKY

    expected = {conn.info.backend_pid for conn in scenario.leaky}
    code, out, _ = run(
        capsys, "killall", scenario.url, "--idle", "--application", "leaky-worker", "--yes",
        "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert set(data["terminated"]) == expected
    assert data["failed"] == []
    assert scenario.count("leaky-worker") == 0
    assert scenario.count("stuck-job") == STUCK
    for conn in scenario.stuck:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_killall_idle_for_spares_fresh_sessions(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "killall", scenario.url, "--idle-for", "1h", "--yes", "--json")
    assert code == 0
    assert json.loads(out)["terminated"] == []
    assert scenario.count("leaky-worker") == LEAKY


def test_kill_by_pid_and_never_itself(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = scenario.stuck[0].info.backend_pid
    code, out, _ = run(capsys, "kill", scenario.url, str(victim), "--json")
    assert code == 0
    assert json.loads(out)["terminated"] == [victim]
    assert scenario.count("stuck-job") == STUCK - 1

    code, out, _ = run(capsys, "kill", scenario.url, "999999", "--json")
    assert code == 1
    assert json.loads(out)["failed"][0]["reason"] == "no such backend"


def test_subprocess_doctor_and_refusal_without_a_tty(scenario: Scenario) -> None:
    base = [sys.executable, "-m", "pgmux"]
    done = subprocess.run(
        [*base, "doctor", scenario.url, "--json", "--idle-threshold", "0s",
         "--idle-in-transaction-threshold", "0s"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode in (1, 2), done.stderr
    assert "leaky-worker" in done.stdout
    assert "\x1b[" not in done.stdout

    done = subprocess.run(
        [*base, "killall", scenario.url, "--idle", "--application", "leaky-worker"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--yes" in done.stderr
    assert scenario.count("leaky-worker") == LEAKY


def test_plan_required_example_as_a_subprocess_and_in_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["plan", "--limit", "20", "--dynos", "5", "--processes", "3", "--threads", "5"]
    code, out, _ = run(capsys, *argv, "--json")
    data = json.loads(out)
    assert code == 1
    assert (data["needed"], data["limit"], data["fits"]) == (75, 20, False)
    assert data["max_pool_size_per_process"] == 1
    assert data["with_pgmux"]["server_connections"] == 15
    assert data["with_pgmux"]["direct_headroom"] == 5
    assert data["with_pgmux"]["fits"] is True

    done = subprocess.run(
        [sys.executable, "-m", "pgmux", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "75" in done.stdout


def test_role_and_database_limits(
    pg_factory: PgFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    pg = pg_factory(max_connections=20)
    pg.execute("CREATE ROLE capped LOGIN CONNECTION LIMIT 3")
    pg.execute("CREATE DATABASE small CONNECTION LIMIT 4")
    code, out, _ = run(capsys, "info", pg.url, "--json")
    assert code == 0
    limits = json.loads(out)["limits"]
    assert {"role": "capped", "limit": 3, "connections": 0} in limits["roles"]
    assert {"database": "small", "limit": 4, "connections": 0} in limits["databases"]

    code, out, _ = run(capsys, "doctor", pg.url, "--json")
    codes = {f["code"] for f in json.loads(out)["findings"]}
    assert {"role-limit", "database-limit"} <= codes
    assert code == 0  # limits that bite first but are unused are only info


class _Relay:
    """A TCP forwarder on 127.0.0.1: what a pooler or proxy looks like from both ends."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


def test_info_notices_a_relay_in_front(
    pg: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = _Relay(pg.port)
    try:
        url = f"postgresql://postgres@127.0.0.1:{relay.port}/postgres"
        code, out, _ = run(capsys, "info", url, "--json")
    finally:
        relay.close()
    assert code == 0
    pooler = json.loads(out)["pooler"]
    assert pooler["detected"] is True
    assert pooler["kind"] == "relay"
    assert any(f"URL port {relay.port}" in s for s in pooler["signals"])


# --- a server with pgmux's own pooled connections on it ---------------------------------------

POOLED = 4


def _busy_clients(dsn: str, count: int) -> None:
    """`count` clients at once, so that the pooler opens `count` server connections."""
    barrier = threading.Barrier(count)

    def work() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait(10)
            conn.execute("SELECT pg_sleep(0.3)")

    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def _server_connections(pg: EmbeddedPostgres, application_name: str) -> list[int]:
    rows = pg.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
        f"AND application_name = '{application_name}' AND state = 'idle' ORDER BY pid"
    )
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_doctor_and_killall_know_pgmuxs_own_pool(
    pg_factory: PgFactory, pgmux_factory: Any, capsys: pytest.CaptureFixture[str],
    pool_mode: str,
) -> None:
    pg = pg_factory(max_connections=20)
    # NOTE: pgmux's server logins carry application_name=pgmux by default, and an idle
    # server gets it back after a second.
    pgm = pgmux_factory(
        {"pool_mode": pool_mode},
        databases={"postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres"},
        target=pg,
    )
    _busy_clients(pgm.dsn(), POOLED)
    app_name = "pgmux"
    pooled = _server_connections(pg, app_name)
    assert len(pooled) == POOLED
    leaky = [psycopg.connect(pg.url, application_name="leaky-worker", autocommit=True)
             for _ in range(LEAKY)]  # fmt: skip
    try:
        for conn in leaky:
            conn.execute("SELECT 1")
        time.sleep(1.2)
        code, out, _ = run(capsys, "doctor", pg.url, "--idle-threshold", "1s", "--json")
        data = json.loads(out)
        idle = [f for f in data["findings"] if f["code"] == "idle-connections"]
        assert [f["evidence"]["application_name"] for f in idle] == ["leaky-worker"]
        assert set(idle[0]["evidence"]["pids"]) == {c.info.backend_pid for c in leaky}
        [pool] = [f for f in data["findings"] if f["code"] == "pooler-connections"]
        assert pool["severity"] == "info"
        assert pool["evidence"]["pooler"] == "pgmux"
        assert sorted(pool["evidence"]["pids"]) == pooled
        crowd = [f for f in data["findings"] if f["code"] == "many-connections-from-one-client"]
        assert [f["evidence"]["count"] for f in crowd] == [LEAKY]
        assert not any("Put pgmux between" in a for a in data["advice"])
        assert any("point 'leaky-worker' at it" in a for a in data["advice"])

        code, out, err = run(capsys, "killall", pg.url, "--idle-for", "1s", "--dry-run")
        assert code == 0
        assert f"skipping {POOLED} server connection(s) of a pooler" in err
        assert f"dry run: {LEAKY} backend(s)" in out
        code, out, _ = run(capsys, "killall", pg.url, "--idle-for", "1s", "--dry-run", "--json")
        data = json.loads(out)
        assert sorted(data["matched"]) == sorted(c.info.backend_pid for c in leaky)
        assert data["skipped_pooled"] == POOLED
        code, out, _ = run(capsys, "killall", pg.url, "--idle-for", "1s", "--dry-run", "--json",
                           "--include-pooled")  # fmt: skip
        assert set(pooled) <= set(json.loads(out)["matched"])
    finally:
        for conn in leaky:
            conn.close()


def test_ps_and_killall_through_pgmux_skip_their_own_backend(
    pg: EmbeddedPostgres, pgmux_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pgm = pgmux_factory()
    _busy_clients(pgm.dsn(), 3)  # NOTE: several server connections, so pids differ
    for _ in range(3):
        code, out, _ = run(capsys, "ps", pgm.dsn(), "--json")
        assert code == 0
        rows = json.loads(out)
        assert not [r for r in rows if "pg_stat_activity" in r["query"] and
                    r["state"] == "active"], rows  # fmt: skip
    # NOTE: a pooled server keeps the last client's application_name until pgmux gives it
    # the pool's back (after a second idle, with a SET that shows the server active for a
    # moment): the servers `ps` used would match, rightly. No doctor runs now: wait for none.
    deadline = time.monotonic() + 10
    while int(pg.query("select count(*) from pg_stat_activity where application_name = "
                       "'pgmux-doctor'")[0][0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    code, out, _ = run(capsys, "killall", pgm.dsn(), "--application", "pgmux-doctor",
                       "--include-pooled", "--dry-run", "--json")  # fmt: skip
    assert code == 0
    assert json.loads(out)["matched"] == []
