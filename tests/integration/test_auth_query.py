"""auth_user + auth_query: secrets looked up in the server, SCRAM end to end."""

from __future__ import annotations

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from tests.integration.conftest import PgmuxFactory


def test_scram_user_found_by_auth_query(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory
                                        ) -> None:
    # The userlist holds only auth_user; scramuser's verifier comes from pg_authid, and pgmux
    # logs into a server that demands SCRAM with the client's own SCRAM keys.
    px = pgmux_factory({"auth_type": "scram-sha-256", "auth_user": "postgres"},
                       userlist={"postgres": "unused"})
    with psycopg.connect(px.dsn(user="scramuser", password="scrampass"),
                         autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == ("scramuser",)
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(px.dsn(user="scramuser", password="wrong"))
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(px.dsn(user="nosuchuser", password="x"))


def test_md5_user_found_by_auth_query(pg: EmbeddedPostgres, pgmux_factory: PgmuxFactory
                                      ) -> None:
    px = pgmux_factory({"auth_type": "md5", "auth_user": "postgres"},
                       userlist={"postgres": "unused"})
    with psycopg.connect(px.dsn(user="md5user", password="md5pass"), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == ("md5user",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(px.dsn(user="md5user", password="nope"))
