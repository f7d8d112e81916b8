"""`pgmux wrap -- CMD`: poolers beside a command, against the embedded PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pgmux.cli.main import build_parser, main
from pgmux.cli.wrap import environment, plan
from pgmux.embedded import EmbeddedPostgres

WRAP = [sys.executable, "-m", "pgmux", "wrap"]

# The child of the main scenario: where do its URLs point, and do they work?
CHILD = r"""
import json, os, psycopg
from psycopg.conninfo import make_conninfo
out = {}
for var in ("DATABASE_URL", "REPORTING_URL"):
    url = os.environ[var]
    with psycopg.connect(url, autocommit=True) as conn:
        db, one = conn.execute("SELECT current_database(), 1").fetchone()
    out[var] = {"url": url, "db": db, "one": one, "alias": os.environ[var + "_PGBOUNCER"]}
# NOTE: pool size 1 in transaction mode: two open clients take turns on one server connection.
a = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
b = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
out["pids"] = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (a, b, a, b)]
a.close(); b.close()
try:
    psycopg.connect(make_conninfo(os.environ["REPORTING_URL"], password="wrong")).close()
    out["wrong_password"] = "accepted"
except psycopg.OperationalError:
    out["wrong_password"] = "refused"
print(json.dumps(out))
"""

# Waits for SIGTERM, then still uses its pooler before exiting 0.
TRAPPING_CHILD = r"""
import os, signal, sys, time, psycopg
def on_term(signum, frame):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        print("drained", conn.execute("SELECT 41 + 1").fetchone()[0], flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", os.environ["DATABASE_URL"], flush=True)
while True:
    time.sleep(0.05)
"""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


class Scenario:
    """One `pgmux wrap` run with two URL variables and settings from the environment."""

    def __init__(self, result: subprocess.CompletedProcess[str], config_dir: Path,
                 pg: EmbeddedPostgres) -> None:
        self.result = result
        self.config_dir = config_dir
        self.pg = pg
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        self.out: dict[str, Any] = json.loads(lines[-1]) if lines else {}

    def ini(self, name: str) -> dict[str, str]:
        text = (self.config_dir / f"{name}.ini").read_text()
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
        return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(scope="module")
def scenario(pg: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Scenario]:
    config_dir = tmp_path_factory.mktemp("wrap") / "conf"
    env = dict(
        os.environ,
        DATABASE_URL=pg.url + "?sslmode=disable&application_name=wraptest",
        REPORTING_URL=pg.dsn(user="scramuser", password="scrampass", dbname="testdb"),
        PGBOUNCER_URLS="DATABASE_URL REPORTING_URL",
        PGBOUNCER_DEFAULT_POOL_SIZE="1",
        PGBOUNCER_RESERVE_POOL_SIZE="0",
        PGBOUNCER_POOL_MODE="session",
        PGMUX_POOL_MODE="transaction",  # NOTE: PGMUX_X wins over PGBOUNCER_X
        PGBOUNCER_LOG_CONNECTIONS="0",
    )
    result = subprocess.run([*WRAP, "--config-dir", str(config_dir), "--",
                             sys.executable, "-c", CHILD],
                            env=env, capture_output=True, text=True, timeout=60)
    yield Scenario(result, config_dir, pg)


def test_child_gets_urls_pointing_at_its_poolers(scenario: Scenario) -> None:
    assert scenario.result.returncode == 0, scenario.result.stderr
    urls = {var: urlsplit(scenario.out[var]["url"]) for var in ("DATABASE_URL", "REPORTING_URL")}
    ports = {u.port for u in urls.values()}
    assert len(ports) == 2 and scenario.pg.port not in ports  # two poolers, neither is pg
    assert all(u.hostname == "127.0.0.1" for u in urls.values())
    # same user, password and database name; sslmode is dropped, other parameters kept
    assert urls["DATABASE_URL"].path == "/postgres"
    assert urls["DATABASE_URL"].query == "application_name=wraptest"
    assert (urls["REPORTING_URL"].username, urls["REPORTING_URL"].password) == (
        "scramuser", "scrampass")
    assert urls["REPORTING_URL"].path == "/testdb"
    assert all(scenario.out[var]["alias"] == scenario.out[var]["url"] for var in urls)
    assert "pgmux wrap: DATABASE_URL -> " in scenario.result.stderr
    assert "scrampass" not in scenario.result.stderr


def test_queries_through_the_poolers_work(scenario: Scenario) -> None:
    assert scenario.out["DATABASE_URL"]["db"] == "postgres"
    assert scenario.out["REPORTING_URL"]["db"] == "testdb"
    assert scenario.out["DATABASE_URL"]["one"] == scenario.out["REPORTING_URL"]["one"] == 1
    # the local hop asks for the URL's password when the URL has one
    assert scenario.out["wrong_password"] == "refused"


def test_settings_from_the_environment_reach_the_pooler(scenario: Scenario) -> None:
    assert len(set(scenario.out["pids"])) == 1  # behaviour: one server connection, shared
    ini = scenario.ini("DATABASE_URL")
    assert ini["pool_mode"] == "transaction"
    assert ini["default_pool_size"] == "1"
    assert ini["reserve_pool_size"] == "0"
    assert ini["log_connections"] == "0"
    assert ini["server_tls_sslmode"] == "disable"
    assert ini["auth_type"] == "any"  # the URL has no password
    assert ini["listen_addr"] == "127.0.0.1" and ini["unix_socket_dir"] == ""
    assert scenario.ini("REPORTING_URL")["auth_type"] == "scram-sha-256"
    mode = stat.S_IMODE((scenario.config_dir / "REPORTING_URL.ini").stat().st_mode)
    assert mode == 0o600  # it holds the password


def test_poolers_are_gone_after_the_command(scenario: Scenario) -> None:
    for var in ("DATABASE_URL", "REPORTING_URL"):
        assert not _listening(_port(scenario.out[var]["url"]))


def test_exit_code_is_the_commands(pg: EmbeddedPostgres) -> None:
    env = dict(os.environ, DATABASE_URL=pg.url)
    procs = [subprocess.Popen([*WRAP, "-q", "--", "sh", "-c", script], env=env)
             for script in ("exit 3", "kill -9 $$")]
    assert [p.wait(timeout=60) for p in procs] == [3, 128 + 9]


def test_sigterm_reaches_the_command_and_poolers_stop_after_it(pg: EmbeddedPostgres) -> None:
    env = dict(os.environ, DATABASE_URL=pg.url, PGMUX_LOG_CONNECTIONS="0")
    proc = subprocess.Popen([*WRAP, "--", sys.executable, "-c", TRAPPING_CHILD], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        pooler_pid = url = None
        for line in proc.stdout:
            found = re.search(r"\(pooler pid (\d+)\)", line)
            if found:
                pooler_pid = int(found.group(1))
            if line.startswith("ready "):
                url = line.split()[1]
                break
        assert pooler_pid is not None and url is not None, "wrap did not start its child"
        # NOTE: a platform stopping a dyno sends SIGTERM to every process: the pooler
        # ignores it and keeps serving while the app finishes.
        os.kill(pooler_pid, signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert "drained 42" in rest
    assert not _listening(_port(url))
    with pytest.raises(ProcessLookupError):
        os.kill(pooler_pid, 0)


# Reports its pid, then sleeps; exits 0 on SIGTERM.
SLEEPING_CHILD = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(0.05)
"""


def _start_sleeping(pg: EmbeddedPostgres) -> tuple[subprocess.Popen[str], int, int]:
    """wrap running SLEEPING_CHILD: (wrap, its pooler's pid, the command's pid)."""
    env = dict(os.environ, DATABASE_URL=pg.url, PGMUX_LOG_CONNECTIONS="0")
    proc = subprocess.Popen([*WRAP, "--", sys.executable, "-c", SLEEPING_CHILD], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    pooler_pid = None
    for line in proc.stdout:
        found = re.search(r"\(pooler pid (\d+)\)", line)
        if found:
            pooler_pid = int(found.group(1))
        if line.startswith("ready "):
            assert pooler_pid is not None
            return proc, pooler_pid, int(line.split()[1])
    proc.wait(timeout=30)
    raise AssertionError("wrap did not start its child")


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_pooler_dying_stops_the_command_and_wrap_exits_1(pg: EmbeddedPostgres) -> None:
    proc, pooler_pid, cmd_pid = _start_sleeping(pg)
    assert proc.stdout is not None
    try:
        os.kill(pooler_pid, signal.SIGKILL)
        rest = proc.stdout.read()
        # NOTE: the command exits 0 on the SIGTERM wrap sends it; wrap still reports failure.
        assert proc.wait(timeout=30) == 1, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert re.search(r"the pooler for DATABASE_URL exited .*stopping the command", rest), rest
    assert _gone(cmd_pid, 5)


def test_poolers_shut_down_when_wrap_is_killed(pg: EmbeddedPostgres) -> None:
    proc, pooler_pid, cmd_pid = _start_sleeping(pg)
    assert proc.stdout is not None
    try:
        proc.kill()  # NOTE: SIGKILL: wrap cannot stop anything; the lifeline's EOF must
        proc.wait(timeout=30)
        assert _gone(pooler_pid, 15), "the pooler outlived wrap"
    finally:
        proc.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pooler_pid, signal.SIGKILL)
        # NOTE: the command is wrap's child, not the pooler's: nothing stops it but us.
        with contextlib.suppress(ProcessLookupError):
            os.kill(cmd_pid, signal.SIGKILL)


def test_disabled_runs_the_command_unchanged(tmp_path: Path) -> None:
    env = dict(os.environ, DATABASE_URL="postgres://u:p@db.invalid:5432/d",
               PGBOUNCER_ENABLED="false")
    out = subprocess.run([*WRAP, "--", "sh", "-c", 'echo "$DATABASE_URL"; exit 4'], env=env,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (4, "postgres://u:p@db.invalid:5432/d")


# ---- failures before the command runs (in process: nothing is started) -----------------------


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "ran"


def _wrap(marker: Path, *extra: str) -> int:
    return main(["wrap", *extra, "--", "sh", "-c", f"touch {marker}"])


def test_bad_setting_fails_without_running_the_command(
        pg: EmbeddedPostgres, marker: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", pg.url)
    monkeypatch.setenv("PGMUX_POOL_MODE", "bogus")
    assert _wrap(marker) == 1
    assert "PGMUX_POOL_MODE" in capsys.readouterr().err
    assert not marker.exists()


def test_missing_url_fails_without_running_the_command(
        marker: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@127.0.0.1:5432/d")
    monkeypatch.delenv("OTHER_URL", raising=False)
    assert _wrap(marker, "--url-vars", "DATABASE_URL", "OTHER_URL") == 1
    assert "OTHER_URL is not set" in capsys.readouterr().err
    assert not marker.exists()


def test_pooler_that_cannot_start_fails_without_running_the_command(
        pg: EmbeddedPostgres, marker: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    monkeypatch.setattr(plan, "_free_port", lambda taken: port)
    monkeypatch.setenv("DATABASE_URL", pg.url)
    try:
        assert _wrap(marker, "-q") == 1
    finally:
        busy.close()
    assert "failed to start" in capsys.readouterr().err
    assert not marker.exists()


# ---- pieces --------------------------------------------------------------------------------


def test_url_var_names_precedence() -> None:
    env = {"PGMUX_URLS": "A_URL", "PGBOUNCER_URLS": "B_URL C_URL"}
    assert environment.url_var_names(["X", "Y,Z"], env) == ["X", "Y", "Z"]
    assert environment.url_var_names(None, env) == ["A_URL"]
    assert environment.url_var_names(None, {"PGBOUNCER_URLS": " B_URL  C_URL B_URL"}) == [
        "B_URL", "C_URL"]
    assert environment.url_var_names(None, {"PGMUX_URLS": "  "}) == ["DATABASE_URL"]
    with pytest.raises(environment.WrapError):
        environment.url_var_names(["not-a-name"], {})


def test_parser_splits_url_vars_from_the_command() -> None:
    args = build_parser().parse_args(
        ["wrap", "--url-vars", "A", "B", "--", "cmd", "--url-vars", "-q"])
    assert args.url_vars == ["A", "B"]
    assert args.command == ["--", "cmd", "--url-vars", "-q"]


def test_settings_from_env_pgmux_wins_and_values_are_checked() -> None:
    got = environment.settings_from_env({"PGBOUNCER_POOL_MODE": "session", "PGMUX_POOL_MODE": "",
                                         "PGBOUNCER_STATS_PERIOD": "30",
                                         "PGMUX_DEFAULT_POOL_SIZE": "auto"})
    assert got == {"pool_mode": "session", "default_pool_size": "auto",
                   "reserve_pool_size": "1", "stats_period": "30"}
    with pytest.raises(environment.WrapError, match="PGBOUNCER_MAX_CLIENT_CONN"):
        environment.settings_from_env({"PGBOUNCER_MAX_CLIENT_CONN": "lots"})


def test_pooled_url_keeps_credentials_and_drops_the_server_hop() -> None:
    from pgmux.config import config_from_url

    url = "postgres://us%40er:p%40ss%3Aw@db.example.com:5433/my%20db?sslmode=require&pool=5"
    db = config_from_url(url).databases["my db"]
    assert plan.pooled_url(url, db, 6001) == (
        "postgres://us%40er:p%40ss%3Aw@127.0.0.1:6001/my%20db?pool=5")
    ini = plan.render_ini(db, config_from_url(url).settings, {}, 6001, "DATABASE_URL")
    assert "\"my db\" = host='db.example.com' port='5433' dbname='my db'" in ini
    assert "server_tls_sslmode = require" in ini
