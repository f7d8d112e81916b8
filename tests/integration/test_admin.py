"""The admin console through real clients: PgBouncer's SHOW columns (psql), stats, access
levels, SET/RELOAD, and the extended protocol (psycopg, asyncpg)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import asyncpg
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests import unprivileged
from tests.integration.adminutil import admin, pool, psql, rows, wait_for
from tests.integration.conftest import Pgmux, PgmuxFactory

_SOCKET = ["type", "user", "database", "replication", "state", "addr", "port", "local_addr",
           "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed",
           "ptr", "link", "remote_pid", "tls", "application_name", "prepared_statements", "id"]
_DEBUG = ["recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail",
          "send_avail"]
_STATS = ["server_assignment_count", "xact_count", "query_count", "received", "sent",
          "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count",
          "bind_count"]

# PgBouncer 1.25's columns, in order (usage.md, SHOW commands).
PGBOUNCER_COLUMNS: dict[str, list[str]] = {
    "POOLS": ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
              "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
              "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us",
              "pool_mode", "load_balance_hosts"],
    "CLIENTS": _SOCKET,
    "SERVERS": _SOCKET,
    "SOCKETS": _SOCKET + _DEBUG,
    "ACTIVE_SOCKETS": _SOCKET + _DEBUG,
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size",
                  "min_pool_size", "reserve_pool_size", "server_lifetime", "pool_mode",
                  "load_balance_hosts", "max_connections", "current_connections",
                  "max_client_connections", "current_client_connections", "paused",
                  "disabled"],
    "USERS": ["name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
              "current_connections", "max_user_client_connections",
              "current_client_connections"],
    "VERSION": ["version"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "STATS": ["database"] + ["total_" + n for n in _STATS] + [
        "avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv",
        "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
        "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"],
    "STATS_TOTALS": ["database", "server_assignment_count", "xact_count", "query_count",
                     "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
                     "client_parse_count", "server_parse_count", "bind_count"],
    "STATS_AVERAGES": ["database", "server_assignment_count", "xact_count", "query_count",
                       "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
                       "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"],
    "TOTALS": ["name", "value"],
    "LISTS": ["list", "items"],
    "STATE": ["key", "value"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "PEERS": ["peer_id", "host", "port", "pool_size"],
    "PEER_POOLS": ["peer_id", "cl_active_cancel_req", "cl_waiting_cancel_req",
                   "sv_active_cancel", "sv_login"],
    "DNS_HOSTS": ["hostname", "ttl", "addrs"],
    "DNS_ZONES": ["zonename", "serial", "count"],
    "FDS": ["fd", "task", "user", "database", "addr", "port", "cancel", "link",
            "client_encoding", "std_strings", "datestyle", "timezone", "password",
            "scram_client_key", "scram_server_key"],
}


# pgmux's own columns after PgBouncer's (docs/admin.md).
PGMUX_EXTRA_COLUMNS = {"CLIENTS": ["pinned"], "SERVERS": ["pinned"], "SOCKETS": ["pinned"],
                       "ACTIVE_SOCKETS": ["pinned"]}


def test_every_show_has_pgbouncers_columns(pg: EmbeddedPostgres, pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app:
        app.execute("select 1")  # a pool, a client and a server to show
        for what, expected in PGBOUNCER_COLUMNS.items():
            out = psql(pg, pgmux, f"SHOW {what};").stdout
            got = out.splitlines()[0].split("|")
            # NOTE: PgBouncer's columns in PgBouncer's order; pgmux's own come after them.
            assert got[:len(expected)] == expected, what
            assert got[len(expected):] == PGMUX_EXTRA_COLUMNS.get(what, []), what
    help_ = psql(pg, pgmux, "SHOW HELP")
    assert "Console usage" in help_.stderr and "SHOW HELP|CONFIG" in help_.stderr
    assert help_.stdout.strip() == "SHOW"


def test_show_version_is_the_version_line(pg: EmbeddedPostgres, pgmux: Pgmux) -> None:
    shown = psql(pg, pgmux, "SHOW VERSION").stdout.splitlines()[1]
    for argv in (["--version"], ["serve", "--version"]):
        out = subprocess.run([sys.executable, "-m", "pgmux", *argv], capture_output=True,
                             text=True, check=True).stdout
        assert out.splitlines()[0] == shown
    assert rows(pgmux, "SHOW VERSION") == [{"version": shown}]


def test_pools_clients_servers_are_derived(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(application_name="inside"), autocommit=True) as app:
        with app.transaction():
            app.execute("select 1")
            row = pool(pgmux)
            assert (row["cl_active"], row["cl_waiting"], row["sv_active"]) == (1, 0, 1)
            clients = [r for r in rows(pgmux, "SHOW CLIENTS") if r["database"] == "postgres"]
            servers = rows(pgmux, "SHOW SERVERS")
            assert [c["state"] for c in clients] == ["active"]
            assert clients[0]["application_name"] == "inside"
            assert [s["state"] for s in servers] == ["active"]
            assert clients[0]["link"] == servers[0]["ptr"] and servers[0]["link"] == \
                clients[0]["ptr"]
            assert servers[0]["remote_pid"] == app.execute(
                "select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        row = pool(pgmux)
        assert (row["cl_active"], row["sv_active"], row["sv_idle"]) == (1, 0, 1)
        assert row["pool_mode"] == "transaction"


def test_prepared_statements_column_counts_client_names_and_server_statements(
        pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(application_name="preparer"), autocommit=True) as app:
        for q in ("select %s::int", "select %s::text", "select %s::int"):
            app.execute(q, (1,), prepare=True)  # NOTE: two statements, the first used twice
        clients = [r for r in rows(pgmux, "SHOW CLIENTS")
                   if r["application_name"] == "preparer"]
        servers = [r for r in rows(pgmux, "SHOW SERVERS") if r["database"] == "postgres"]
        assert [c["prepared_statements"] for c in clients] == [2]
        assert sum(s["prepared_statements"] for s in servers) == 2
        sockets = [r for r in rows(pgmux, "SHOW SOCKETS") if r["ptr"] == clients[0]["ptr"]]
        assert [(r["pkt_avail"], r["send_avail"]) for r in sockets] == [(0, 0)]


def test_100_transactions_count(pgmux_factory: PgmuxFactory) -> None:
    pgmux = pgmux_factory({"stats_period": 1})

    def stats() -> dict[str, Any]:
        found = [r for r in rows(pgmux, "SHOW STATS") if r["database"] == "postgres"]
        return found[0] if found else {"total_xact_count": 0}

    before = int(stats()["total_xact_count"])
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app:
        for i in range(100):
            with app.transaction():
                app.execute("select %s::int", (i,))
    assert int(stats()["total_xact_count"]) - before >= 100
    totals = {r["name"]: r["value"] for r in rows(pgmux, "SHOW TOTALS")}
    assert totals["total_xact_count"] >= 100 and totals["total_query_count"] >= 100
    assert totals["total_client_bytes"] > 0 and totals["total_server_bytes"] > 0
    # stats_period = 1: the period that held the traffic is logged with its averages
    assert wait_for(lambda: any(line.split("stats: ")[1].split(" ")[0] != "0"
                                for line in pgmux.logs().splitlines() if "stats: " in line))
    averages = {r["database"]: r for r in rows(pgmux, "SHOW STATS_AVERAGES")}
    assert set(averages) >= {"pgbouncer", "postgres"}


def test_access_levels_and_errors(pg: EmbeddedPostgres, pgmux: Pgmux) -> None:
    with admin(pgmux, user="stats") as stats:
        assert stats.execute("SHOW STATE").fetchall()[0] == {"key": "active", "value": "yes"}
        with pytest.raises(psycopg.Error) as err:
            stats.execute("PAUSE")
        assert err.value.sqlstate == "08P01"
        assert "admin access needed" in str(err.value)
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        admin(pgmux, user="md5user")
    bad = psql(pg, pgmux, "SHOW NOTHING", check=False)
    assert bad.returncode != 0
    assert "invalid command 'SHOW NOTHING', use SHOW HELP;" in bad.stderr
    with admin(pgmux) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("BEGIN")
        assert err.value.sqlstate == "08P01"
        assert conn.execute("SHOW client_encoding").fetchall() == [
            {"client_encoding": "UTF-8"}]


def test_unix_socket_pgbouncer_user_is_admin(pgmux: Pgmux) -> None:
    """PgBouncer's special login: user pgbouncer over the Unix socket from pgmux's own uid."""
    sock = str(pgmux.socket_dir)
    out = unprivileged.psql(sock, pgmux.port, "PAUSE", "SHOW STATE", "RESUME",
                            user="pgbouncer", dbname="pgbouncer")
    assert out.returncode == 0, out.stderr
    assert "paused|yes" in out.stdout
    if unprivileged.user().switches:
        # NOTE: another uid (root, here) is not pgmux's own: an ordinary login, and user
        # pgbouncer is not in auth_file.
        dsn = f"host={sock} port={pgmux.port} user=pgbouncer dbname=pgbouncer"
        with pytest.raises(psycopg.OperationalError, match='"trust" authentication failed'):
            psycopg.connect(dsn, autocommit=True)


def test_asyncpg_reads_the_console(pgmux: Pgmux) -> None:
    async def main() -> None:
        app = await asyncpg.connect(pgmux.dsn())
        console = await asyncpg.connect(pgmux.dsn(dbname="pgbouncer"))
        try:
            await app.fetchval("select 1")
            pools = await console.fetch("SHOW POOLS")
            row = next(r for r in pools if r["database"] == "postgres")
            assert row["cl_active"] == 1 and row["sv_idle"] + row["sv_active"] >= 1
            stats = await console.fetch("SHOW STATS")
            assert any(r["database"] == "postgres" and r["total_query_count"] >= 1
                       for r in stats)
            clients = await console.fetch("SHOW CLIENTS")
            assert {r["database"] for r in clients} >= {"postgres", "pgbouncer"}
            stmt = await console.prepare("SHOW VERSION")
            assert (await stmt.fetchval()).startswith("PgBouncer 1.25")
        finally:
            await app.close()
            await console.close()

    asyncio.run(main())


def test_psycopg_extended_protocol(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(application_name="ext"), autocommit=True) as app, \
            admin(pgmux) as conn:
        app.execute("select 1")
        for _ in range(2):  # prepared once, then executed by name
            pools = conn.execute("SHOW POOLS", prepare=True).fetchall()
            assert any(r["database"] == "postgres" and r["cl_active"] == 1 for r in pools)
        stats = conn.execute("SHOW STATS", binary=True).fetchall()
        assert any(r["database"] == "postgres" and r["total_query_count"] >= 1 for r in stats)
        clients = conn.execute("SHOW CLIENTS", binary=True).fetchall()
        ext = next(r for r in clients if r["application_name"] == "ext")
        conn.execute("KILL_CLIENT %s", (ext["id"],))  # a Bind parameter, binary int
        with pytest.raises(psycopg.OperationalError):
            app.execute("select 1")
        with pytest.raises(psycopg.Error, match="client not found"):
            conn.execute("KILL_CLIENT %s", (ext["id"],))


def test_set_and_show_config(pgmux: Pgmux) -> None:
    with admin(pgmux) as conn:
        conn.execute("SET default_pool_size = 7")
        config = {r["key"]: r for r in conn.execute("SHOW CONFIG").fetchall()}
        assert config["default_pool_size"]["value"] == "7"
        assert config["default_pool_size"]["default"] == "20"
        assert config["listen_port"]["changeable"] == "no"
        dbs = {r["name"]: r for r in conn.execute("SHOW DATABASES").fetchall()}
        assert dbs["postgres"]["pool_size"] == 7
        with pytest.raises(psycopg.Error, match="SET failed"):
            conn.execute("SET listen_port = 1")
        with pytest.raises(psycopg.Error, match="SET failed"):
            conn.execute("SET no_such_setting = 1")


def test_failed_reload_keeps_config(pgmux: Pgmux) -> None:
    good = pgmux.ini.read_text()
    pgmux.ini.write_text(good.replace("default_pool_size = 10", "default_pool_size = lots"))
    with admin(pgmux) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("RELOAD")
        assert err.value.sqlstate == "F0000"
        assert "RELOAD failed, see logs for additional details" in str(err.value)
        assert "lots" in pgmux.logs()
        config = {r["key"]: r["value"] for r in conn.execute("SHOW CONFIG").fetchall()}
        assert config["default_pool_size"] == "10"
        pgmux.ini.write_text(good.replace("default_pool_size = 10", "default_pool_size = 4"))
        conn.execute("RELOAD")
        config = {r["key"]: r["value"] for r in conn.execute("SHOW CONFIG").fetchall()}
        assert config["default_pool_size"] == "4"
    with psycopg.connect(pgmux.dsn(), autocommit=True) as app:
        assert app.execute("select 1").fetchone() == (1,)


def test_disable_enable(pgmux_factory: PgmuxFactory) -> None:
    pgm = pgmux_factory()
    with psycopg.connect(pgm.dsn(), autocommit=True) as app, admin(pgm) as conn:
        app.execute("select 1")
        conn.execute("DISABLE postgres")
        assert [r["disabled"] for r in conn.execute("SHOW DATABASES").fetchall()
                if r["name"] == "postgres"] == [1]
        with pytest.raises(psycopg.OperationalError,
                           match="database does not allow connections: postgres"):
            psycopg.connect(pgm.dsn(), connect_timeout=5)
        assert app.execute("select 2").fetchone() == (2,)  # connected clients carry on
        conn.execute("ENABLE postgres")
        with psycopg.connect(pgm.dsn(), autocommit=True) as again:
            assert again.execute("select 3").fetchone() == (3,)
        with pytest.raises(psycopg.Error, match="cannot disable admin db: pgbouncer"):
            conn.execute("DISABLE pgbouncer")
