"""Client login as PgBouncer 1.25 decides it: trust wants the user in auth_file, an unknown user
is answered like a wrong password, an unknown database only after authentication, auth_type
any, auth_type hba (host/local rules, reject, peer with an ident map), auth_dbname and auth_user
per database. Written from PgBouncer's documentation; pgmux runs unprivileged."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests import unprivileged
from tests.integration.adminutil import admin
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(90)


def refusal(mux: Pgmux, user: str, password: str | None = None,
            dbname: str = "authdb") -> str:
    """The error text of a refused TCP login (fails the test if the login succeeds)."""
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(host="127.0.0.1", port=mux.port, user=user, password=password,
                        dbname=dbname, connect_timeout=5)
    return str(err.value)


def current_user(mux: Pgmux, user: str, password: str | None = None,
                 dbname: str = "authdb") -> str:
    with psycopg.connect(host="127.0.0.1", port=mux.port, user=user, password=password,
                         dbname=dbname, connect_timeout=5) as conn:
        row = conn.execute("select current_user").fetchone()
        assert row is not None
        return str(row[0])


def forced(pg: EmbeddedPostgres, name: str = "authdb", extra: str = "") -> dict[str, str]:
    return {name: f"host=127.0.0.1 port={pg.port} dbname=postgres user=postgres {extra}"}


def test_trust_wants_the_user_in_auth_file(pg: EmbeddedPostgres,
                                           pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"auth_type": "trust"}, databases=forced(pg),
                        userlist={"alice": "whatever", "postgres": ""})
    assert current_user(mux, "alice") == "postgres"
    assert current_user(mux, "alice", "anything") == "postgres"
    assert '"trust" authentication failed' in refusal(mux, "mallory")
    assert "no such user: mallory" in mux.logs()


def test_unknown_user_is_answered_like_a_wrong_password(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    for auth_type, text in (("md5", 'password authentication failed for user "{}"'),
                            ("plain", 'password authentication failed for user "{}"'),
                            ("scram-sha-256", "SASL authentication failed")):
        mux = pgmux_factory({"auth_type": auth_type}, databases=forced(pg),
                            userlist={"alice": "alicepass"})
        wrong = refusal(mux, "alice", "nope")
        unknown = refusal(mux, "ghost", "nope")
        assert text.format("alice") in wrong, (auth_type, wrong)
        assert wrong.replace("alice", "ghost") == unknown, (auth_type, wrong, unknown)
        assert current_user(mux, "alice", "alicepass") == "postgres"


def test_unknown_database_is_refused_after_authentication(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"auth_type": "md5"}, databases=forced(pg),
                        userlist={"alice": "alicepass"})
    # a wrong password on a database that does not exist is still a wrong password
    assert "password authentication failed" in refusal(mux, "alice", "nope", "nosuchdb")
    assert "no such database: nosuchdb" in refusal(mux, "alice", "alicepass", "nosuchdb")
    assert "login failed: db=nosuchdb user=alice" in mux.logs()


def test_auth_type_any_needs_a_forced_user(pg: EmbeddedPostgres,
                                           pgmux_factory: PgmuxFactory) -> None:
    dbs = forced(pg)
    dbs["free"] = f"host=127.0.0.1 port={pg.port} dbname=postgres"
    mux = pgmux_factory({"auth_type": "any"}, databases=dbs)
    assert current_user(mux, "anyone at all", "x") == "postgres"
    assert "bouncer config error" in refusal(mux, "postgres", dbname="free")
    assert "auth_type=any requires forced user" in mux.logs()
    # the console still checks admin_users
    with admin(mux) as conn:
        assert conn.execute("SHOW VERSION").fetchall()


def _hba_pgmux(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, tmp_path: Path) -> Pgmux:
    hba = tmp_path / "hba.conf"
    ident = tmp_path / "ident.conf"
    os_user = unprivileged.user().name
    hba.write_text(
        "# pgmux test rules, first match wins\n"
        f"local  all  {os_user}  peer\n"
        "local  all  mapped  peer map=m1\n"
        "local  all  all  reject\n"
        "host   all  blocked  127.0.0.1/32  reject\n"
        "host   all  alice  127.0.0.1/32  md5\n"
        "host   all  trusted  127.0.0.1/32  trust\n"
        "hostssl all all 0.0.0.0/0 md5\n")
    ident.write_text(f"m1  {unprivileged.other_user().name}  mapped\n")
    return pgmux_factory({"auth_type": "hba", "auth_hba_file": str(hba),
                          "auth_ident_file": str(ident)},
                         databases=forced(pg),
                         userlist={os_user: "", "mapped": "", "alice": "alicepass",
                                   "trusted": "", "blocked": "", "postgres": ""})


def test_hba_host_rules(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory,
                        tmp_path: Path) -> None:
    mux = _hba_pgmux(pg, pgmux_factory, tmp_path)
    assert current_user(mux, "alice", "alicepass") == "postgres"
    assert "password authentication failed" in refusal(mux, "alice", "nope")
    assert current_user(mux, "trusted") == "postgres"
    assert "login rejected" in refusal(mux, "blocked", "x")
    # no rule for this TCP login (the hostssl one needs TLS)
    assert "no authentication method is found" in refusal(mux, "carol", "x")


@pytest.mark.skipif(not unprivileged.user().switches, reason="needs two OS users (root)")
def test_hba_peer_and_ident_map_over_the_unix_socket(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory, tmp_path: Path) -> None:
    mux = _hba_pgmux(pg, pgmux_factory, tmp_path)
    sock = str(mux.socket_dir)
    me, other = unprivileged.user(), unprivileged.other_user()

    def psql(db_user: str, who: object) -> tuple[int, str]:
        out = unprivileged.psql(sock, mux.port, "select current_user", user=db_user,
                                dbname="authdb", who=who)  # type: ignore[arg-type]
        return out.returncode, (out.stdout + out.stderr).strip()

    # peer: the OS user is the database user
    assert psql(me.name, me) == (0, "postgres")
    # peer with map m1: OS user nobody may log in as `mapped`, pgmux's own user may not
    assert psql("mapped", other) == (0, "postgres")
    code, text = psql("mapped", me)
    assert code != 0 and "unix socket login rejected" in text, text
    # the catch-all local rule
    code, text = psql("postgres", me)
    assert code != 0 and "login rejected" in text, text


def test_auth_dbname_global_per_database_missing_and_disabled(
        pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory) -> None:
    dbs = forced(pg, "authdb")
    dbs["appdb"] = f"host=127.0.0.1 port={pg.port} dbname=testdb"
    dbs["lookup"] = f"host=127.0.0.1 port={pg.port} dbname=postgres"
    dbs["other"] = (f"host=127.0.0.1 port={pg.port} dbname=testdb auth_dbname=nosuchauthdb")
    mux = pgmux_factory({"auth_type": "md5", "auth_user": "postgres", "auth_dbname": "lookup"},
                        databases=dbs, userlist={"postgres": "adminpass"})
    # md5user is not in auth_file: found by auth_query, run in database `lookup`
    with psycopg.connect(mux.dsn(user="md5user", password="md5pass", dbname="appdb")) as conn:
        assert conn.execute("select current_user").fetchone() == ("md5user",)
    # a per-database auth_dbname that is not configured
    assert "bouncer config error" in refusal(mux, "md5user", "md5pass", "other")
    assert 'authentication database "nosuchauthdb" is not configured.' in mux.logs()
    # the auth database disabled
    console = psycopg.connect(mux.dsn(password="adminpass", dbname="pgbouncer"),
                              autocommit=True)
    console.execute("DISABLE lookup")
    assert 'authentication database "lookup" is disabled' in refusal(
        mux, "scramuser", "scrampass", "appdb")
    console.execute("ENABLE lookup")
    console.close()
    with psycopg.connect(mux.dsn(user="scramuser", password="scrampass",
                                 dbname="appdb")) as conn:
        assert conn.execute("select current_user").fetchone() == ("scramuser",)


def test_auth_dbname_may_not_be_the_console(pg: EmbeddedPostgres,
                                            pgmux_factory: PgmuxFactory) -> None:
    dbs = {"appdb": f"host=127.0.0.1 port={pg.port} dbname=testdb auth_dbname=pgbouncer"}
    mux = pgmux_factory({"auth_type": "md5", "auth_user": "postgres"}, databases=dbs,
                        userlist={"postgres": ""})
    assert "bouncer config error" in refusal(mux, "md5user", "md5pass", "appdb")
    assert 'cannot use the reserved "pgbouncer" database as an auth_dbname' in mux.logs()


def test_auth_user_per_database_with_a_forced_user(pg: EmbeddedPostgres,
                                                   pgmux_factory: PgmuxFactory) -> None:
    """Clients prove themselves with their own secret (found by auth_query, as the database's
    auth_user); the pool logs in as the database's forced user, with its auth_file password."""
    dbs = {"fdb": f"host=127.0.0.1 port={pg.port} dbname=testdb user=md5user "
                  f"auth_user=postgres"}
    mux = pgmux_factory({"auth_type": "scram-sha-256"}, databases=dbs,
                        userlist={"postgres": "", "md5user": "md5pass"})
    with psycopg.connect(mux.dsn(user="scramuser", password="scrampass", dbname="fdb")) as conn:
        assert conn.execute("select current_user").fetchone() == ("md5user",)
    assert "SASL authentication failed" in refusal(mux, "scramuser", "wrong", "fdb")
