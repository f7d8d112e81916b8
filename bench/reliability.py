"""Reliability figures for docs/RELIABILITY.md: clients vanishing, chaos while committing, a
PostgreSQL restart and killed servers under load, malformed input, memory per idle client.

    .venv/bin/python bench/reliability.py            # full run (~3-4 min)
    .venv/bin/python bench/reliability.py --quick    # smaller counts (~1-2 min)

Starts its own embedded PostgreSQL and one pgmux (transaction mode, pool 16, trust auth,
PgBouncer's default server_login_retry of 15 s), speaks to pgmux with the fault suite's
raw-socket client (tests/faults/wire.py), and writes the figures between the generated markers of
docs/RELIABILITY.md (text outside them stays).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # NOTE: the fault suite's client and scenarios

import memory  # noqa: E402
import psycopg  # noqa: E402
from tests import unprivileged  # noqa: E402
from tests.faults import wire as w  # noqa: E402
from tests.faults.corpus import CORPUS  # noqa: E402
from tests.faults.load import Traffic  # noqa: E402
from tests.faults.test_vanish import POINTS, TABLE  # noqa: E402

from pgmux.embedded import EmbeddedPostgres, free_port  # noqa: E402

BEGIN = "<!-- bench/reliability.py: generated from here -->"
END = "<!-- bench/reliability.py: generated up to here -->"
FAILING = "server login has been failing"
# NOTE: what pgmux logs when an exception from client input reaches a server login
LOGIN_FAILED = "closing because: server login failed"
POOL = 16


class Env:
    """The embedded PostgreSQL and one pgmux in front of it (unprivileged when run as root)."""

    def __init__(self) -> None:
        self.pg = EmbeddedPostgres(max_connections=120, settings={
            "log_min_messages": "warning", "log_connections": "off",
            "log_disconnections": "off"}).start()
        self.base = unprivileged.new_dir("reliability")
        self.port = free_port()
        sock = self.base / "sock"
        sock.mkdir()
        self.log = self.base / "pgmux.log"
        ini = self.base / "pgbouncer.ini"
        ini.write_text("\n".join([
            "[databases]", f"* = host=127.0.0.1 port={self.pg.port}", "[pgbouncer]",
            "listen_addr = 127.0.0.1", f"listen_port = {self.port}",
            f"unix_socket_dir = {sock}", "auth_type = trust",
            f"auth_file = {self.base / 'users.txt'}", "pool_mode = transaction",
            f"default_pool_size = {POOL}", "max_client_conn = 20000", "admin_users = postgres",
            "log_connections = 0", "log_disconnections = 0"]) + "\n")
        # NOTE: trust still wants the user listed in auth_file, as in PgBouncer.
        (self.base / "users.txt").write_text('"postgres" ""\n')
        unprivileged.give_away(self.base)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgmux", "serve", str(ini)] + unprivileged.serve_args(),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                w.connect(self.port).close()
                break
            except (OSError, AssertionError, w.Closed, w.Timeout):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"pgmux did not start:\n{self.logs()[-2000:]}") from None
                time.sleep(0.1)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sql(self, text: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            cur = conn.execute(text.encode())
            return cur.fetchall() if cur.description is not None else []

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pg.cleanup()
        unprivileged.remove_base_dir()


# ---- vanishing clients ----------------------------------------------------------------------

LEFT_SQL = f"""
    SELECT (SELECT count(*) FROM {TABLE}),
           (SELECT count(*) FROM pg_locks WHERE pid <> pg_backend_pid()
              AND (relation = '{TABLE}'::regclass OR locktype = 'advisory')),
           (SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()
              AND state LIKE 'idle in transaction%')"""
STATE_SQL = ("SELECT current_setting('statement_timeout') <> '0'"
             " OR coalesce(current_setting('faults.marker', true), '') <> ''"
             " OR (SELECT count(*) FROM pg_prepared_statements) > 0"
             " OR (SELECT count(*) FROM pg_listening_channels()) > 0"
             " OR to_regclass('pg_temp.leak_tmp') IS NOT NULL"
             " OR (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
             "     AND pid = pg_backend_pid()) > 0")


def vanish_one(env: Env, i: int) -> str:
    """Client i runs one vanish point (they take turns) and disappears, RST or FIN in turn."""
    names = list(POINTS)
    c = w.WireClient(env.port)
    try:
        c.login()
        POINTS[names[i % len(names)]](c)
    except Exception as exc:  # noqa: BLE001 - counted, the client vanishes all the same
        return f"{type(exc).__name__}: {exc}"[:120]
    finally:
        c.vanish(rst=(i // len(names)) % 2 == 0)
    return ""


def vanishing(env: Env, n: int) -> dict[str, Any]:
    env.sql(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (x int)")
    with ThreadPoolExecutor(16) as ex:
        problems = [p for p in ex.map(lambda i: vanish_one(env, i), range(n)) if p]
    deadline = time.monotonic() + 10
    while True:
        rows, locks, idle_tx = env.sql(LEFT_SQL)[0]
        if not (rows or locks or idle_tx) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # Every server of the pool at once (each new client holds one in a transaction).
    checkers = [w.connect(env.port) for _ in range(POOL)]
    dirty = 0
    for c in checkers:
        c.run("BEGIN")
    for c in checkers:
        dirty += c.scalar(STATE_SQL) == "t"
        c.close()
    return {"clients": n, "points": len(POINTS), "rows": rows, "locks": locks,
            "idle_in_transaction": idle_tx, "dirty_servers": dirty, "servers_checked": POOL,
            "steps_failed": len(problems), "step_problems": Counter(problems).most_common(3)}


# ---- chaos: committing clients while others vanish and servers are killed --------------------

class Ledger:
    def __init__(self) -> None:
        self.acked: set[int] = set()
        self.in_doubt: set[int] = set()
        self.lock = threading.Lock()


def writer(env: Env, n: int, stop: threading.Event, ledger: Ledger, extended: bool) -> None:
    seq = 0
    c: w.WireClient | None = None
    while not stop.is_set():
        if c is None:
            try:
                c = w.connect(env.port)
            except (OSError, AssertionError, w.Closed, w.Timeout):
                time.sleep(0.05)
                continue
        seq += 1
        row = n * 10_000_000 + seq
        insert = (w.extended("INSERT INTO chaos VALUES ($1)", [str(row).encode()]) if extended
                  else w.query(f"INSERT INTO chaos VALUES ({row})"))
        try:
            for part in (w.query("BEGIN"), insert):
                c.send(part)
                if w.errors(c.until_ready()):
                    raise w.Closed("error before COMMIT")
            c.send(w.query("COMMIT"))
        except (OSError, w.Closed, w.Timeout):
            c.close()
            c = None
            continue
        try:
            got = c.until_ready()
        except (OSError, w.Closed, w.Timeout):
            with ledger.lock:
                ledger.in_doubt.add(row)  # NOTE: COMMIT sent, its answer lost
            c.close()
            c = None
            continue
        if not w.errors(got) and any(m.type == b"C" and m.body == b"COMMIT\0" for m in got):
            with ledger.lock:
                ledger.acked.add(row)


def chaos(env: Env, seconds: float) -> dict[str, Any]:
    env.sql(f"DROP TABLE IF EXISTS chaos; CREATE TABLE chaos (id bigint PRIMARY KEY);"
            f" DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (x int)")
    stop, ledger = threading.Event(), Ledger()
    threads = [threading.Thread(target=writer, args=(env, i + 1, stop, ledger, i % 2 == 1))
               for i in range(12)]
    vanished = [0]
    kills = [0]

    def vanisher(k: int) -> None:
        i = k
        while not stop.is_set():
            vanish_one(env, i)
            vanished[0] += 1
            i += 4

    def killer() -> None:
        rng = random.Random(1)
        while not stop.wait(0.5):
            pids = [r[0] for r in env.sql(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid() AND datname = 'postgres'")]
            for pid in rng.sample(pids, max(1, len(pids) // 4)) if pids else []:
                env.sql(f"SELECT pg_terminate_backend({pid})")
                kills[0] += 1

    threads += [threading.Thread(target=vanisher, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=killer))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    committed = {r[0] for r in env.sql("SELECT id FROM chaos")}
    return {"seconds": seconds, "acked": len(ledger.acked),
            "lost": len(ledger.acked - committed),
            "phantom": len(committed - ledger.acked - ledger.in_doubt),
            "in_doubt": len(ledger.in_doubt),
            "in_doubt_committed": len(ledger.in_doubt & committed),
            "vanished": vanished[0], "server_kills": kills[0],
            "vanisher_rows": env.sql(f"SELECT count(*) FROM {TABLE}")[0][0]}


# ---- restart and killed servers under load ----------------------------------------------------

def under_load(env: Env, clients: int, fault: str, wait: float) -> dict[str, Any]:
    """clients busy clients; the fault ("restart": pg_ctl restart -m fast, "kill":
    pg_terminate_backend of every server connection); then up to `wait` seconds for all of them
    to query again."""
    with Traffic(env.port, clients, pause=0.005) as traffic:
        traffic.wait_for(1)
        time.sleep(1)
        down = time.monotonic()
        if fault == "restart":
            env.pg.restart()
        else:
            env.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        up = time.monotonic()
        deadline = up + wait
        while time.monotonic() < deadline and any(
                wk.first_ok_after(up) is None for wk in traffic.workers):
            time.sleep(0.1)
        time.sleep(0.5)
    errors = traffic.errors
    backs = [wk.first_ok_after(up) for wk in traffic.workers]
    return {
        "clients": clients, "fault": fault, "down_seconds": up - down,
        "failed_queries": len(errors),
        "clients_with_errors": sum(1 for wk in traffic.workers if wk.errors),
        "clients_over_one_error": sum(1 for wk in traffic.workers if len(wk.errors) > 1),
        "failing_errors": sum(1 for e in errors if FAILING in e.error),
        # NOTE: "closed:" is how load.Traffic records an end of connection with no
        # ErrorResponse before it
        "silent_closes": sum(1 for e in errors if e.error.startswith("closed:")),
        "late_errors": sum(1 for e in errors if e.start > up + 0.1),
        "error_seconds": (max(e.end for e in errors) - min(e.start for e in errors))
        if errors else 0.0,
        "never_back": sum(1 for b in backs if b is None),
        "back_after_up": max((b - up for b in backs if b is not None), default=0.0),
        "first_errors": Counter(e.error[:70] for e in errors).most_common(3),
    }


# ---- malformed input --------------------------------------------------------------------------

def random_input(rng: random.Random) -> bytes:
    """One to three messages: a frontend type or any byte, a random body, a length that is
    right or impossible; a Sync after."""
    out = b""
    for _ in range(rng.randint(1, 3)):
        t = rng.choice(b"QPBDECSHdcfp") if rng.random() < 0.7 else rng.randrange(256)
        if t in b"XF":
            t = ord("Q")
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 30)))
        if rng.random() < 0.5:
            body = b"\0".join(rng.choice([b"s1", b"", b"select 1", b"S", b"\0\1"])
                              for _ in range(rng.randint(1, 4)))
        length = rng.choice([None, None, None, 0, 3, 0x40000001, 0xFFFFFFFF])
        out += w.msg(t, body, length)
    return out + w.sync()


def send_bad(env: Env, data: bytes) -> str:
    """How one malformed input was answered."""
    try:
        c = w.connect(env.port)
    except (OSError, AssertionError, w.Closed, w.Timeout):
        return "login refused"
    with c:
        try:
            c.send(data)
        except OSError:
            pass
        got, how = c.outcome(2.0)
    if w.errors(got):
        return "error " + w.errors(got)[0].sqlstate
    return {"ready": "answered, no error", "closed": "closed without a word",
            "timeout": "no answer in 2 s"}[how]


def malformed(env: Env, generated: int) -> dict[str, Any]:
    rng = random.Random(12)
    inputs = [c.data + (w.sync() if c.sync else b"") for c in CORPUS]
    inputs += [random_input(rng) for _ in range(generated)]
    mark = len(env.logs())
    with Traffic(env.port, 8) as traffic:
        traffic.wait_for(1)
        with ThreadPoolExecutor(8) as ex:
            outcomes = Counter(ex.map(lambda d: send_bad(env, d), inputs))
    lat = sorted(o.latency for o in traffic.outcomes)
    return {"inputs": len(inputs), "corpus": len(CORPUS), "outcomes": outcomes.most_common(),
            "normal_queries": len(lat), "normal_errors": len(traffic.errors),
            "normal_p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0.0,
            "normal_max_ms": 1000 * lat[-1] if lat else 0.0,
            "logins_failed": env.logs()[mark:].count(LOGIN_FAILED)}


def queued_behind_login(env: Env, tries: int) -> dict[str, Any]:
    """Each try on a new pool (a new database): a Parse with no NUL in its name pipelined
    behind the startup packet, and six normal clients logging in at the same moment."""
    refused = 0
    for i in range(tries):
        db = f"fq_{i}"
        env.sql(f"DROP DATABASE IF EXISTS {db}")
        env.sql(f"CREATE DATABASE {db}")
        bad = w.WireClient(env.port)
        results: list[bool] = []

        def normal(db: str = db, results: list[bool] = results) -> None:
            try:
                with w.connect(env.port, database=db) as c:
                    results.append(c.scalar("select 1") == "1")
            except (OSError, AssertionError, w.Closed, w.Timeout):
                results.append(False)

        threads = [threading.Thread(target=normal) for _ in range(6)]
        bad.send(w.startup(database=db) + w.msg(b"P", b"stmt") + w.sync())
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        bad.close()
        refused += results.count(False)
    return {"tries": tries, "normal_clients": 6 * tries, "refused": refused}


# ---- report -----------------------------------------------------------------------------------

def render(f: dict[str, Any], args: argparse.Namespace) -> str:
    v, c, r, k, mf, q, mem = (f["vanish"], f["chaos"], f["restart"], f["kill"], f["malformed"],
                              f["queued"], f["memory"])
    bad = []
    if v["rows"] or v["locks"] or v["idle_in_transaction"] or v["dirty_servers"]:
        bad.append("vanishing clients left something behind")
    if c["lost"] or c["phantom"] or c["vanisher_rows"]:
        bad.append("rows lost or invented under chaos")
    if r["clients_over_one_error"] or r["failing_errors"] or r["never_back"] or \
            r["back_after_up"] > 5:
        bad.append(f"a PostgreSQL restart: {r['failed_queries']} failed queries over "
                   f"{r['error_seconds']:.1f} s, {r['clients_over_one_error']} of "
                   f"{r['clients']} clients saw more than one error, "
                   f"{r['failing_errors']} errors were \"server login has been failing\", "
                   f"all clients back {r['back_after_up']:.1f} s after PostgreSQL was up "
                   "(goal: one error at most per client, back within 5 s)")
    if k["late_errors"] or k["failing_errors"] or k["back_after_up"] > 5:
        bad.append("killed server connections failed queries begun after the kills")
    for what, f_ in (("killed", k), ("restarted", r)):
        if f_["silent_closes"]:
            bad.append(f"{f_['silent_closes']} clients whose server was {what} were closed "
                       "without an ErrorResponse")
    silent = sum(n for what, n in mf["outcomes"] if what in ("closed without a word",
                                                             "no answer in 2 s"))
    if silent:
        bad.append(f"{silent} of {mf['inputs']} malformed inputs got no ErrorResponse "
                   "(dropped without a word or no answer)")
    if mf["normal_errors"]:
        bad.append(f"malformed input cost normal clients {mf['normal_errors']} errors")
    if mf["logins_failed"]:
        bad.append(f"{mf['logins_failed']} malformed input(s) that waited for a server reached "
                   "its login and failed it (each closes a good server and marks the pool "
                   "failing for server_login_retry)")
    if q["refused"]:
        bad.append(f"a malformed Parse queued behind a pool's first server login got "
                   f"{q['refused']} of {q['normal_clients']} normal clients refused "
                   "(\"server login has been failing\")")
    outcomes = "; ".join(f"{what}: {n}" for what, n in mf["outcomes"])
    restart_errors = "; ".join(f"{n} x \"{text}\"" for text, n in r["first_errors"])
    lines = [
        BEGIN, "",
        f"Run: `{' '.join(['.venv/bin/python', 'bench/reliability.py'] + args.argv)}` on "
        f"{time.strftime('%Y-%m-%d')}, pgmux in transaction mode, pool {POOL}, "
        "server_login_retry 15 s (PgBouncer's default); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end.", "",
        "| what | figure |", "| --- | --- |",
        f"| clients vanished (RST and FIN, {v['points']} points of a transaction) | "
        f"{v['clients']} |",
        f"| left behind: rows / locks / backends idle in transaction | {v['rows']} / "
        f"{v['locks']} / {v['idle_in_transaction']} |",
        f"| servers whose next client saw session state (of {v['servers_checked']}) | "
        f"{v['dirty_servers']} |",
        f"| chaos ({c['seconds']:.0f} s, {c['vanished']} vanished clients, "
        f"{c['server_kills']} server kills): commits acknowledged | {c['acked']} |",
        f"| rows lost / phantom / from vanished clients | {c['lost']} / {c['phantom']} / "
        f"{c['vanisher_rows']} |",
        f"| COMMITs whose answer was lost (committed of them) | {c['in_doubt']} "
        f"({c['in_doubt_committed']}) |",
        f"| PostgreSQL restart with {r['clients']} busy clients: restart took | "
        f"{r['down_seconds']:.1f} s |",
        f"| seconds with client errors / failed queries | {r['error_seconds']:.1f} s / "
        f"{r['failed_queries']} |",
        f"| clients with more than one error / told \"server login has been failing\" | "
        f"{r['clients_over_one_error']} / {r['failing_errors']} errors |",
        f"| all clients querying again, after PostgreSQL was up | "
        f"{r['back_after_up']:.1f} s ({r['never_back']} never) |",
        f"| restart: clients closed without an ErrorResponse | {r['silent_closes']} |",
        f"| every server connection killed under load: failed queries / closed without an "
        f"ErrorResponse / failed after the kills / back after | {k['failed_queries']} / "
        f"{k['silent_closes']} / {k['late_errors']} / {k['back_after_up']:.1f} s |",
        f"| malformed inputs tried ({mf['corpus']} corpus, the rest generated) | "
        f"{mf['inputs']} |",
        f"| how the senders were answered | {outcomes} |",
        f"| normal clients meanwhile: queries / errors / p99 / max latency | "
        f"{mf['normal_queries']} / {mf['normal_errors']} / {mf['normal_p99_ms']:.0f} ms / "
        f"{mf['normal_max_ms']:.0f} ms |",
        f"| server logins failed because of a malformed input | {mf['logins_failed']} |",
        f"| malformed Parse queued behind a pool's first login: normal clients refused | "
        f"{q['refused']} of {q['normal_clients']} |",
        f"| memory per idle client at {mem['clients']:,} idle clients | "
        f"{mem['kib_per_client']:.1f} KiB ({mem['opened']:,} opened, "
        f"RSS {mem['rss_before_kib'] // 1024} -> {mem['rss_held_kib'] // 1024} MiB) |",
        "", "Still bad:" if bad else "Nothing is still bad in this run.", "",
        *[f"- {b}" for b in bad], "",
        f"Most frequent client errors during the restart: {restart_errors}.", "", END]
    return "\n".join(lines) + "\n"


def write(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Reliability\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "RELIABILITY.md")
    ap.add_argument("--only", default="", help="comma-separated steps to run (no report): "
                    "vanish,chaos,kill,restart,malformed,queued,memory")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    quick = args.quick
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # NOTE: 10,000 idle clients need as many descriptors in pgmux (which inherits this).
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = Env()
    figures: dict[str, Any] = {}
    try:
        steps = [("vanish", lambda: vanishing(env, 200 if quick else 1000)),
                 ("chaos", lambda: chaos(env, 5 if quick else 20)),
                 ("kill", lambda: under_load(env, 50, "kill", 20)),
                 ("restart", lambda: under_load(env, 50, "restart", 30)),
                 ("malformed", lambda: malformed(env, 300 if quick else 2000)),
                 ("queued", lambda: queued_behind_login(env, 3 if quick else 10)),
                 ("memory", lambda: vars_of(memory.measure_idle_clients(
                     "pgmux", env.port, env.proc.pid, 2000 if quick else 10000)))]
        for name, step in steps:
            if args.only and name not in args.only.split(","):
                continue
            t0 = time.monotonic()
            figures[name] = step()
            print(f"{name} ({time.monotonic() - t0:.0f} s): {figures[name]}", flush=True)
    finally:
        env.close()
    if args.only:
        return 0
    block = render(figures, args)
    write(args.out, block)
    print(block)
    return 0


def vars_of(mem: memory.IdleMemory) -> dict[str, Any]:
    return {**vars(mem), "kib_per_client": mem.kib_per_client or 0.0}


if __name__ == "__main__":
    sys.exit(main())
