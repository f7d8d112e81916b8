"""Client authentication against an auth_file (trust, plain, md5, scram-sha-256) and server
authentication (trust, cleartext, md5, SCRAM-SHA-256), with psycopg, asyncpg and pg8000.

The md5 and SCRAM secrets in the userlists are the ones PostgreSQL itself stored for the test
roles (read from pg_authid), so they are real, independently made secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import asyncpg
import pg8000.native
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(60)

DRIVERS = ("psycopg", "asyncpg", "pg8000")


def login(driver: str, mux: Pgmux, user: str, password: str | None,
          dbname: str = "authdb") -> str:
    """Log in through mux with driver and return current_user; raise on failure with a
    message that carries the server's error text."""
    if driver == "psycopg":
        # NOTE: psycopg leaves out parameters that are None.
        with psycopg.connect(host="127.0.0.1", port=mux.port, user=user, dbname=dbname,
                             password=password, connect_timeout=5) as conn:
            row = conn.execute("select current_user").fetchone()
            assert row is not None
            return str(row[0])
    if driver == "asyncpg":
        async def main() -> str:
            conn = await asyncpg.connect(host="127.0.0.1", port=mux.port, user=user,
                                         password=password, database=dbname, timeout=5)
            try:
                return str(await conn.fetchval("select current_user"))
            finally:
                await conn.close()
        try:
            return asyncio.run(main())
        except asyncpg.PostgresError as exc:
            raise LoginFailed(f"{exc.sqlstate}: {exc}") from exc
    conn8 = None
    try:
        conn8 = pg8000.native.Connection(user, password=password, host="127.0.0.1",
                                         port=mux.port, database=dbname, timeout=5)
        return str(conn8.run("select current_user")[0][0])
    except pg8000.native.DatabaseError as exc:
        fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        raise LoginFailed(f"{fields.get('C')}: {fields.get('M', exc)}") from exc
    finally:
        if conn8 is not None:
            conn8.close()


class LoginFailed(Exception):
    pass


FAILED = (psycopg.OperationalError, LoginFailed, pg8000.native.InterfaceError)


def assert_refused(driver: str, mux: Pgmux, user: str, password: str | None, match: str,
                   dbname: str = "authdb") -> None:
    with pytest.raises(FAILED) as err:
        login(driver, mux, user, password, dbname)
    assert match in str(err.value), (driver, str(err.value))


@pytest.fixture
def secrets(pg: EmbeddedPostgres) -> dict[str, str]:
    """The secrets PostgreSQL stored: md5user -> 'md5...', scramuser -> 'SCRAM-SHA-256$...'."""
    rows = pg.query("select rolname, rolpassword from pg_authid "
                    "where rolname in ('md5user', 'scramuser')")
    return {str(name): str(secret) for name, secret in rows}


@pytest.fixture
def client_auth(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
                secrets: dict[str, str]) -> Callable[[str], Pgmux]:
    """pgmux with one auth_type; the database logs in to PostgreSQL as postgres (trust), so
    only the client side is under test. Users: alice (plain secret), md5user (md5 secret),
    scramuser (SCRAM secret)."""

    def start(auth_type: str) -> Pgmux:
        return pgmux_factory(
            {"auth_type": auth_type},
            databases={"authdb": f"host=127.0.0.1 port={pg.port} dbname=postgres user=postgres"},
            userlist={"alice": "alicepass", "md5user": secrets["md5user"],
                      "scramuser": secrets["scramuser"]})

    return start


# ---- client authentication ---------------------------------------------------------------

def test_secrets_are_what_we_think(secrets: dict[str, str]) -> None:
    md5 = "md5" + hashlib.md5(b"md5passmd5user").hexdigest()
    assert secrets["md5user"] == md5
    assert secrets["scramuser"].startswith("SCRAM-SHA-256$4096:")


def test_client_trust(client_auth: Callable[[str], Pgmux]) -> None:
    mux = client_auth("trust")
    for driver in DRIVERS:
        assert login(driver, mux, "alice", None) == "postgres"
        assert login(driver, mux, "alice", "whatever") == "postgres"
        assert_refused(driver, mux, "alice", None, "no such database: nosuchdb",
                       dbname="nosuchdb")


def test_client_plain(client_auth: Callable[[str], Pgmux]) -> None:
    mux = client_auth("plain")
    for driver in DRIVERS:
        # A cleartext password is checked against plain, md5 and SCRAM secrets alike.
        assert login(driver, mux, "alice", "alicepass") == "postgres"
        assert login(driver, mux, "md5user", "md5pass") == "postgres"
        assert login(driver, mux, "scramuser", "scrampass") == "postgres"
        assert_refused(driver, mux, "alice", "wrong", "password authentication failed")
        assert_refused(driver, mux, "md5user", "wrong", "password authentication failed")
        assert_refused(driver, mux, "nobody", "x", "password authentication failed")


def test_client_md5(client_auth: Callable[[str], Pgmux]) -> None:
    mux = client_auth("md5")
    for driver in DRIVERS:
        assert login(driver, mux, "alice", "alicepass") == "postgres"
        assert login(driver, mux, "md5user", "md5pass") == "postgres"
        # With a SCRAM secret stored, md5 auth uses SCRAM (as PgBouncer does).
        assert login(driver, mux, "scramuser", "scrampass") == "postgres"
        assert_refused(driver, mux, "alice", "wrong", "password authentication failed")
        assert_refused(driver, mux, "md5user", "wrong", "password authentication failed")
        assert_refused(driver, mux, "scramuser", "wrong", "SASL authentication failed")
        assert_refused(driver, mux, "nobody", "x", "password authentication failed")
    assert_refused("psycopg", mux, "alice", "alicepass", "no such database: nosuchdb",
                   dbname="nosuchdb")
    # PostgreSQL's SQLSTATE for a wrong password.
    with pytest.raises(LoginFailed, match="^28P01: "):
        login("asyncpg", mux, "md5user", "wrong")


def test_client_scram(client_auth: Callable[[str], Pgmux]) -> None:
    mux = client_auth("scram-sha-256")
    for driver in DRIVERS:
        assert login(driver, mux, "scramuser", "scrampass") == "postgres"
        # A plain secret works: the verifier is derived on the fly.
        assert login(driver, mux, "alice", "alicepass") == "postgres"
        assert_refused(driver, mux, "scramuser", "wrong", "SASL authentication failed")
        assert_refused(driver, mux, "alice", "wrong", "SASL authentication failed")
        # An md5 secret cannot serve SCRAM, even with the right password.
        assert_refused(driver, mux, "md5user", "md5pass", "SASL authentication failed")
        assert_refused(driver, mux, "nobody", "x", "SASL authentication failed")
    assert_refused("pg8000", mux, "scramuser", "scrampass", "no such database: nosuchdb",
                   dbname="nosuchdb")


# ---- server authentication ---------------------------------------------------------------

def test_server_auth_with_passwords_in_databases(pg: EmbeddedPostgres,
                                                 pgmux_factory: PgmuxFactory) -> None:
    base = f"host=127.0.0.1 port={pg.port} dbname=testdb"
    # NOTE: every database logs in as a forced user: clients may be anyone (auth_type any).
    mux = pgmux_factory({"auth_type": "any"}, databases={
        "as_md5": f"{base} user=md5user password=md5pass",          # md5
        "as_scram": f"{base} user=scramuser password=scrampass",    # SCRAM-SHA-256
        "as_plain": f"{base} user=plainuser password=plainpass",    # cleartext
        "as_trust": f"{base} user=postgres",                        # trust
    })
    for dbname, role in (("as_md5", "md5user"), ("as_scram", "scramuser"),
                         ("as_plain", "plainuser"), ("as_trust", "postgres")):
        for driver in DRIVERS:
            assert login(driver, mux, "someone", None, dbname) == role


def test_server_auth_with_passwords_in_userlist(pg: EmbeddedPostgres,
                                                pgmux_factory: PgmuxFactory,
                                                pg_roles: dict[str, str]) -> None:
    mux = pgmux_factory(databases={"authdb": f"host=127.0.0.1 port={pg.port} dbname=testdb"},
                        userlist=dict(pg_roles, postgres=""))
    for role in ("md5user", "scramuser", "plainuser"):
        for driver in DRIVERS:
            assert login(driver, mux, role, None) == role
    # an empty secret: nothing to send, and the server trusts postgres here
    assert login("psycopg", mux, "postgres", None) == "postgres"


def test_server_auth_with_md5_secret_in_userlist(pg: EmbeddedPostgres,
                                                 pgmux_factory: PgmuxFactory,
                                                 secrets: dict[str, str]) -> None:
    # An md5 hash is enough to answer the server's md5 challenge.
    mux = pgmux_factory(databases={"authdb": f"host=127.0.0.1 port={pg.port} dbname=testdb"},
                        userlist={"md5user": secrets["md5user"]})
    assert login("psycopg", mux, "md5user", None) == "md5user"


def test_server_auth_scram_pass_through(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
                                        secrets: dict[str, str]) -> None:
    # Only the SCRAM verifier is known: the client's own SCRAM proof logs pgmux in.
    mux = pgmux_factory({"auth_type": "scram-sha-256"},
                        databases={"authdb": f"host=127.0.0.1 port={pg.port} dbname=testdb"},
                        userlist={"scramuser": secrets["scramuser"]})
    for driver in DRIVERS:
        assert login(driver, mux, "scramuser", "scrampass") == "scramuser"


def test_server_auth_failure_reaches_the_client(pg: EmbeddedPostgres,
                                                pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory(
        {"server_login_retry": 30, "auth_type": "any"},
        databases={"bad": f"host=127.0.0.1 port={pg.port} dbname=testdb "
                          f"user=md5user password=wrong",
                   "good": f"host=127.0.0.1 port={pg.port} dbname=testdb user=postgres"})
    assert_refused("asyncpg", mux, "someone", None,
                   '28P01: password authentication failed for user "md5user"', "bad")
    # The next clients are refused at once until server_login_retry has passed ...
    assert_refused("psycopg", mux, "someone", None, "server login has been failing", "bad")
    assert_refused("pg8000", mux, "someone", None, "server login has been failing", "bad")
    # ... and other databases are not affected.
    assert login("psycopg", mux, "someone", None, "good") == "postgres"
