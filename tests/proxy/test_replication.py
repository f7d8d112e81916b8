"""The startup packet of a replication client's own server login (proxy/replication.py)."""

from __future__ import annotations

import pytest

from pgmux.proxy.replication import server_startup

POOL = {"user": "app", "database": "appdb", "application_name": "pgmux"}


@pytest.mark.parametrize(("client", "want"), [
    # physical: the pool's user and database, the client's own value kept as spelt
    ({"user": "u", "database": "replication", "replication": "true"},
     {"user": "app", "database": "appdb", "application_name": "pgmux", "replication": "true"}),
    ({"user": "u", "database": "x", "replication": "ON"},
     {**POOL, "replication": "ON"}),
    # logical, as a subscriber sends it: options and application_name go to the server
    ({"user": "u", "database": "x", "replication": "database", "application_name": "sub1",
      "options": "-c datestyle=ISO -c extra_float_digits=3"},
     {"user": "app", "database": "appdb", "application_name": "sub1",
      "options": "-c datestyle=ISO -c extra_float_digits=3", "replication": "database"}),
    # the client never chooses the server's user or database, in any letter case
    ({"USER": "evil", "Database": "other", "replication": "1"}, {**POOL, "replication": "1"}),
])
def test_server_startup(client: dict[str, str], want: dict[str, str]) -> None:
    assert server_startup(POOL, client) == want
