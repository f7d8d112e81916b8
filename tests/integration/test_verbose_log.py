"""Logging an operator debugs with: -v (or verbose = 1) shows each link, release and SET
pgmux applies; every refused login is logged with its reason (PgBouncer's "pooler error" and
"closing because" lines)."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from tests.integration.adminutil import wait_for
from tests.integration.conftest import PgmuxFactory


def test_verbose_logs_links_releases_and_sets(pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory(args=["-v"])
    with psycopg.connect(mux.dsn(application_name="verbose-app"), autocommit=True) as conn:
        conn.execute("select 1")
    log = wait_for(lambda: "released" in mux.logs() and mux.logs())
    assert " DEBUG " in log
    assert "linked to S-0x" in log and "released S-0x" in log
    assert "set_config('application_name', 'verbose-app', false)" in log


def test_quiet_by_default(pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory()
    with psycopg.connect(mux.dsn(), autocommit=True) as conn:
        conn.execute("select 1")
    assert " DEBUG " not in mux.logs()


@pytest.mark.parametrize(("params", "error", "logged"), [
    ({"geqo": "on"}, "unsupported startup parameter: geqo",
     "unsupported startup parameter: geqo=on"),
    ({"options": "-c geqo=off"}, "unsupported startup parameter in options: geqo",
     "unsupported startup parameter in options: geqo=off"),
])
def test_refused_logins_are_logged(pgmux_factory: PgmuxFactory, params: dict[str, str],
                                   error: str, logged: str) -> None:
    # NOTE: PgBouncer's rule for startup parameters (session_state = track would keep them)
    mux = pgmux_factory({"log_disconnections": 1}, pgmux={"session_state": "reset"})

    async def login() -> None:
        conn = await asyncpg.connect(mux.dsn(), server_settings=params)
        await conn.close()

    with pytest.raises(asyncpg.PostgresError, match=error):
        asyncio.run(login())
    log = wait_for(lambda: f"closing because: {error}" in mux.logs() and mux.logs())
    assert logged in log
    assert f"pooler error: {error}" in log
