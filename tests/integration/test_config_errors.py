"""`pgmux serve bad.ini` refuses to start, quickly, with an error naming file, line and key;
a good file starts and serves (checked with psql)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from tests.integration.conftest import Pgmux, wait_port

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Case:
    files: dict[str, str]   # name -> text; the first one is passed to `pgmux serve`
    where: str              # "file:line" expected in stderr
    says: tuple[str, ...]   # further words expected in stderr (the key, the bad value)


GOOD_DB = "[databases]\npostgres = host=127.0.0.1 port=5432\n"

CASES: dict[str, Case] = {
    "bad integer": Case(
        {"bad.ini": GOOD_DB + "[pgbouncer]\nlisten_port = 6499\nmax_client_conn = lots\n"},
        "bad.ini:5", ("max_client_conn", "lots")),
    "bad pool_mode": Case(
        {"bad.ini": "[pgbouncer]\n; a comment\npool_mode = sometimes\n" + GOOD_DB},
        "bad.ini:3", ("pool_mode", "sometimes")),
    "bad time": Case(
        {"bad.ini": GOOD_DB + "[pgbouncer]\nserver_lifetime = forever\n"},
        "bad.ini:4", ("server_lifetime", "forever")),
    "bad auth_type": Case(
        {"bad.ini": GOOD_DB + "[pgbouncer]\nauth_type = md6\n"},
        "bad.ini:4", ("auth_type", "md6")),
    "unknown key in a database entry": Case(
        {"bad.ini": GOOD_DB + "app = host=127.0.0.1 dbname=app pool_sise=5\n"
                              "[pgbouncer]\nlisten_port = 6499\n"},
        "bad.ini:3", ("app", "pool_sise")),
    "bad value in a users entry": Case(
        {"bad.ini": GOOD_DB + "[users]\nbob = pool_mode=sometimes\n"},
        "bad.ini:4", ("bob", "sometimes")),
    "unknown key in [pgmux]": Case(
        {"bad.ini": GOOD_DB + "[pgmux]\nmetrics_prot = 9000\n"},
        "bad.ini:4", ("metrics_prot",)),
    "missing %include": Case(
        {"bad.ini": GOOD_DB + "[pgbouncer]\nlisten_port = 6499\n%include {dir}/nope.ini\n"},
        "bad.ini:5", ("nope.ini",)),
    "error inside an included file": Case(
        {"main.ini": "[pgbouncer]\nlisten_port = 6499\n%include {dir}/child.ini\n",
         "child.ini": GOOD_DB + "[pgbouncer]\n\ndefault_pool_size = -3\n"},
        "child.ini:5", ("default_pool_size", "-3")),
    "inline comment after a value": Case(
        {"bad.ini": GOOD_DB + "[pgmux]\nmetrics_port = 9127 ; default 0 = off\n"},
        "bad.ini:4", ("metrics_port", "'9127 ; default 0 = off'", "its own line")),
    "missing auth_file for md5": Case(
        {"bad.ini": GOOD_DB + "[pgbouncer]\nauth_type = md5\nauth_file = {dir}/users.txt\n"},
        "bad.ini:5", ("auth_file", "users.txt")),
}


@dataclass
class Outcome:
    returncode: int
    stderr: str
    seconds: float
    path: Path


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Run `pgmux serve` on every bad file at once (they are independent) and collect."""
    running = {}
    for name, case in CASES.items():
        d = tmp_path_factory.mktemp("cfg")
        paths = []
        for fname, text in case.files.items():
            path = d / fname
            path.write_text(text.replace("{dir}", str(d)))
            paths.append(path)
        proc = subprocess.Popen([sys.executable, "-m", "pgmux", "serve", str(paths[0])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running[name] = (proc, time.monotonic(), paths[0])
    out = {}
    for name, (proc, start, path) in running.items():
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            stderr = "still running after 30 s\n" + stderr
        out[name] = Outcome(proc.returncode, stderr, time.monotonic() - start, path)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_is_refused(outcomes: dict[str, Outcome], name: str) -> None:
    case, got = CASES[name], outcomes[name]
    assert got.returncode not in (0, None), got
    assert got.seconds < 20, got  # it exits; it does not start serving
    assert case.where in got.stderr, got.stderr
    for word in case.says:
        assert word in got.stderr, got.stderr
    # One clear line, not a traceback.
    assert "Traceback" not in got.stderr, got.stderr


def test_key_is_named_in_the_message(outcomes: dict[str, Outcome]) -> None:
    assert "key 'max_client_conn'" in outcomes["bad integer"].stderr
    assert "key 'pool_mode'" in outcomes["bad pool_mode"].stderr


def test_good_config_starts_and_serves(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    port = free_port()
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(
        "; a good file, with PgBouncer's comment styles and a duplicate (the last one wins)\n"
        "[databases]\n"
        f"appdb = host=127.0.0.1 port={pg.port} dbname=testdb\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        "listen_port = 1\n"
        f"listen_port = {port}\n"
        f"unix_socket_dir = {tmp_path}\n"
        "auth_type = trust\n"
        f"auth_file = {tmp_path}/users.txt\n"
        "pool_mode = transaction\n"
        "server_lifetime = 1h\n"
        "query_wait_timeout = 30s\n"
    )
    (tmp_path / "users.txt").write_text('"postgres" ""\n')
    log = tmp_path / "pgmux.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pgmux", "serve", str(ini)],
                                stdout=out, stderr=subprocess.STDOUT)
    mux = Pgmux(proc, port, ini, log, tmp_path)
    try:
        wait_port(port, proc, log=log)
        result = subprocess.run(
            [str(pg.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
             "-d", "appdb", "-Atc", "select current_database()"],
            capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "testdb"
    finally:
        assert mux.stop() is not None
