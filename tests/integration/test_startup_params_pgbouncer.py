"""Startup parameters as PgBouncer handles them: `options` with -c settings, and equivalent
spellings of one value (DateStyle "ISO" is the server's "ISO, MDY"): the client sees the value
the server reports, and no link sends a SET for a value the server already has."""

from __future__ import annotations

import psycopg
import pytest

from tests.faults import wire
from tests.integration.conftest import Pgmux, PgmuxFactory


def _sets(px: Pgmux) -> int:
    """How many SETs pgmux sent to bring a server to a client's parameters (-v log)."""
    return sum(1 for line in px.logs().splitlines() if "set_config(" in line)


@pytest.fixture
def px(pgmux_factory: PgmuxFactory) -> Pgmux:
    return pgmux_factory({"default_pool_size": 2}, args=["-v"])


def _welcome_datestyle(welcome: list[wire.Message]) -> str:
    for msg in welcome:
        if msg.type == b"S" and msg.body.startswith(b"DateStyle\0"):
            return msg.body.split(b"\0")[1].decode()
    raise AssertionError("no DateStyle in the welcome")


@pytest.mark.parametrize("how", ["options", "parameter"])
def test_equivalent_datestyle_costs_no_set_per_link(px: Pgmux, how: str) -> None:
    """A client asking for DateStyle "ISO" (in `options` or as a startup parameter) gets a
    server whose DateStyle reads "ISO, MDY", as PostgreSQL gives it; after the first server
    said so, no link sends a SET for it and the welcome says "ISO, MDY" too."""
    params = {"options": "-c DateStyle=ISO"} if how == "options" else {"DateStyle": "ISO"}
    seen: list[str] = []
    for _ in range(4):
        client = wire.WireClient(px.port)
        try:
            seen.append(_welcome_datestyle(client.login(**params)))
            for _ in range(5):
                assert client.scalar("SELECT current_setting('DateStyle')") == "ISO, MDY"
        finally:
            client.sock.close()
    assert seen[1:] == ["ISO, MDY"] * 3
    # The first server asked for "ISO" got one SET; once it said "ISO, MDY", no other.
    assert _sets(px) <= 1


def test_options_c_settings_are_applied(px: Pgmux) -> None:
    opts = r"-c DateStyle=German --TimeZone=Europe/Paris -c application_name=my\ app"
    with psycopg.connect(px.dsn(), autocommit=True, options=opts) as conn:
        assert conn.info.parameter_status("DateStyle") in ("German", "German, DMY")
        assert conn.info.parameter_status("TimeZone") == "Europe/Paris"
        assert conn.info.parameter_status("application_name") == "my app"
        for _ in range(3):
            row = conn.execute("SELECT current_setting('DateStyle'), current_setting('TimeZone'),"
                               " current_setting('application_name')").fetchone()
            assert row == ("German, DMY", "Europe/Paris", "my app")
    with psycopg.connect(px.dsn(), autocommit=True) as other:
        row = other.execute("SELECT current_setting('DateStyle')").fetchone()
        assert row == ("ISO, MDY",)


def test_untracked_option_is_refused_with_pgbouncers_text(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory(pgmux={"session_state": "reset"})
    with pytest.raises(psycopg.OperationalError,
                       match="unsupported startup parameter in options: work_mem"):
        psycopg.connect(px.dsn(), options="-c work_mem=64MB").close()


def test_two_spellings_share_a_server_without_sets(pgmux_factory: PgmuxFactory) -> None:
    """Clients asking "ISO" and clients with the server's default "ISO, MDY" take turns on one
    server: the same value, so no SET goes either way after the first."""
    px = pgmux_factory({"default_pool_size": 1}, args=["-v"])
    asks_iso = wire.WireClient(px.port)
    default = wire.WireClient(px.port)
    try:
        asks_iso.login(options="-c DateStyle=ISO")
        default.login()
        for _ in range(5):
            assert asks_iso.scalar("SELECT current_setting('DateStyle')") == "ISO, MDY"
            assert default.scalar("SELECT current_setting('DateStyle')") == "ISO, MDY"
    finally:
        asks_iso.sock.close()
        default.sock.close()
    assert _sets(px) <= 1
