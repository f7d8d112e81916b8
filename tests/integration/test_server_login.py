"""pgmux logging in to PostgreSQL with auth_file secrets, against md5, SCRAM and cleartext
roles: every pair PgBouncer handles works, and the impossible pairs fail with its texts.

The roles of the `pg` fixture: md5user (md5 hba, md5 stored), scramuser (SCRAM hba and
stored), plainuser (cleartext "password" hba, SCRAM stored).
"""

from __future__ import annotations

import psycopg
import pytest

from pgmux.auth import make_scram_secret, md5_hash
from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(90)

ROLES = ("md5user", "scramuser", "plainuser")


def login(mux: Pgmux, user: str, password: str, dbname: str) -> str:
    """current_user of a session through mux; raises psycopg.OperationalError on refusal."""
    with psycopg.connect(host="127.0.0.1", port=mux.port, user=user, password=password,
                         dbname=dbname, connect_timeout=10) as conn:
        row = conn.execute("select current_user").fetchone()
        assert row is not None
        return str(row[0])


def refusal(mux: Pgmux, user: str, password: str, dbname: str) -> str:
    with pytest.raises(psycopg.OperationalError) as err:
        login(mux, user, password, dbname)
    return str(err.value)


@pytest.fixture
def stored(pg: EmbeddedPostgres) -> dict[str, str]:
    """The secrets PostgreSQL itself stored for the roles (md5 hash or SCRAM verifier)."""
    rows = pg.query("select rolname, rolpassword from pg_authid "
                    "where rolname in ('md5user', 'scramuser', 'plainuser')")
    return {str(name): str(secret) for name, secret in rows}


def test_plain_passwords_in_auth_file_log_in_to_every_kind_of_server(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, pg_roles: dict[str, str]) -> None:
    """auth_type=md5 in front; behind, the server asks md5, SCRAM and cleartext in turn."""
    mux = pgmux_factory({"auth_type": "md5"},
                        databases={"app": f"host=127.0.0.1 port={pg.port} dbname=testdb"},
                        userlist=dict(pg_roles))
    for role in ROLES:
        assert login(mux, role, pg_roles[role], "app") == role


def test_hashed_secrets_where_pgbouncer_can_use_them(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, pg_roles: dict[str, str],
        stored: dict[str, str]) -> None:
    """An md5 hash answers the md5 challenge itself; a SCRAM verifier logs in with the
    client's own SCRAM keys; a SCRAM verifier sent for cleartext is refused by the server
    (PgBouncer sends it all the same), and that refusal reaches the client."""
    mux = pgmux_factory({"auth_type": "md5", "server_login_retry": 1},
                        databases={"app": f"host=127.0.0.1 port={pg.port} dbname=testdb"},
                        userlist=dict(stored))
    assert login(mux, "md5user", pg_roles["md5user"], "app") == "md5user"
    assert login(mux, "scramuser", pg_roles["scramuser"], "app") == "scramuser"
    text = refusal(mux, "plainuser", pg_roles["plainuser"], "app")
    assert 'password authentication failed for user "plainuser"' in text


@pytest.mark.parametrize("role", ROLES)
def test_forced_user_without_password_uses_its_auth_file_entry(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, pg_roles: dict[str, str],
        role: str) -> None:
    mux = pgmux_factory(
        {"auth_type": "md5"},
        databases={"forced": f"host=127.0.0.1 port={pg.port} dbname=testdb user={role}"},
        userlist={"someone": "somepass", role: pg_roles[role]})
    assert login(mux, "someone", "somepass", "forced") == role


def impossible_pairs(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
                     pg_roles: dict[str, str], stored: dict[str, str]) -> Pgmux:
    """pgmux where each login needs a secret the server cannot take:
    md5user holds a SCRAM verifier (its server asks md5), scramuser an md5 hash (its server
    asks SCRAM), and the forced user of "forced" a SCRAM verifier, with no client SCRAM
    keys to use it (PgBouncer never passes keys to a forced user)."""
    md5_as_scram = str(make_scram_secret(pg_roles["md5user"], b"sixteen byte slt"))
    return pgmux_factory(
        {"auth_type": "md5", "server_login_retry": 1},
        databases={"app": f"host=127.0.0.1 port={pg.port} dbname=testdb",
                   "forced": f"host=127.0.0.1 port={pg.port} dbname=testdb user=scramuser "
                             f"password='{stored['scramuser']}'"},
        userlist={"md5user": md5_as_scram,
                  "scramuser": md5_hash("scramuser", pg_roles["scramuser"]),
                  "someone": "somepass"})


IMPOSSIBLE = [
    # (user, database, PgBouncer's log line)
    ("md5user", "app", "cannot do MD5 authentication: wrong password type"),
    ("scramuser", "app", "cannot do SCRAM authentication: wrong password type"),
    ("someone", "forced", "cannot do SCRAM authentication: password is SCRAM secret but "
                          "client authentication did not provide SCRAM keys"),
]


def test_impossible_pairs_are_refused_and_logged_with_pgbouncer_lines(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, pg_roles: dict[str, str],
        stored: dict[str, str]) -> None:
    mux = impossible_pairs(pg, pgmux_factory, pg_roles, stored)
    passwords = dict(pg_roles, someone="somepass")
    for user, dbname, line in IMPOSSIBLE:
        refusal(mux, user, passwords[user], dbname)
        assert line in mux.logs()


def test_impossible_pairs_tell_the_client_what_pgbouncer_tells_it(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, pg_roles: dict[str, str],
        stored: dict[str, str]) -> None:
    mux = impossible_pairs(pg, pgmux_factory, pg_roles, stored)
    passwords = dict(pg_roles, someone="somepass")
    for user, dbname, _ in IMPOSSIBLE:
        text = refusal(mux, user, passwords[user], dbname)
        assert text.rstrip().endswith("server login failed: wrong password type"), text
