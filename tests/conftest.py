"""Shared fixtures: a session-wide embedded PostgreSQL with test roles, and per-test servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres
from pgmux.embedded import free_port as _free_port

# name -> (password, how it is stored, the pg_hba method it must authenticate with)
TEST_ROLES: dict[str, tuple[str, str, str]] = {
    "md5user": ("md5pass", "md5", "md5"),
    "scramuser": ("scrampass", "scram-sha-256", "scram-sha-256"),
    "plainuser": ("plainpass", "scram-sha-256", "password"),
}
TEST_DB = "testdb"

PgFactory = Callable[..., EmbeddedPostgres]


def _test_role_hba() -> list[str]:
    return [f"host all {name} 127.0.0.1/32 {method}" for name, (_, _, method) in TEST_ROLES.items()]


def _create_test_roles(pg: EmbeddedPostgres) -> None:
    for name, (password, stored_as, _) in TEST_ROLES.items():
        # NOTE: one round trip per role, so the SET applies to its CREATE ROLE (PG 18
        # warns that md5 is deprecated; that is a server notice, not an error).
        pg.execute(
            f"SET password_encryption = '{stored_as}'; "
            f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"
        )
    pg.execute(f"CREATE DATABASE {TEST_DB} OWNER postgres")
    grants = "; ".join(f"GRANT ALL ON SCHEMA public TO {name}" for name in TEST_ROLES)
    for dbname in ("postgres", TEST_DB):
        with psycopg.connect(pg.dsn(dbname=dbname), autocommit=True) as conn:
            conn.execute(grants.encode())
            conn.execute(f"GRANT ALL ON DATABASE {dbname} TO {', '.join(TEST_ROLES)}".encode())


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL for the whole session (max_connections=40) with md5/scram/plain roles."""
    server = EmbeddedPostgres(max_connections=40, hba_lines=_test_role_hba())
    try:
        server.start()
        _create_test_roles(server)
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_roles() -> dict[str, str]:
    """The test roles of the `pg` fixture: name -> password."""
    return {name: password for name, (password, _, _) in TEST_ROLES.items()}


@pytest.fixture
def pg_factory() -> Iterator[PgFactory]:
    """Starts separate servers for tests that restart or reconfigure one; all removed after."""
    servers: list[EmbeddedPostgres] = []

    def start(
        max_connections: int = 20,
        settings: dict[str, str] | None = None,
        hba_lines: list[str] | None = None,
    ) -> EmbeddedPostgres:
        server = EmbeddedPostgres(
            max_connections=max_connections, settings=settings, hba_lines=hba_lines
        )
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.cleanup()


@pytest.fixture
def free_port() -> int:
    """A TCP port in 20000-32000 that is free on 127.0.0.1."""
    return _free_port()
