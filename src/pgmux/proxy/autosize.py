"""pool_size=auto: each such pool's size read from the server itself (75% of what its role may
use there, auto_pool_fraction), at start and on every RELOAD."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg

from pgmux.config import POOL_SIZE_AUTO
from pgmux.doctor.facts import LIMITS_QUERY, limits_from_row
from pgmux.doctor.plan import auto_pool_size

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")


async def size_auto_pools(pooler: Pooler) -> dict[str, int]:
    """pool_size=auto: 75% (auto_pool_fraction) of what the role may use on the server,
    read from the server itself at start and on RELOAD."""
    sizes: dict[str, int] = {}
    for name, db in pooler.config.databases.items():
        if db.pool_size != POOL_SIZE_AUTO:
            continue
        role = db.user or pooler.settings.auth_user
        if not role:
            log.warning("pool_size=auto for %s needs user= (or auth_user) to read the "
                        "server's limits; using default_pool_size", name)
            continue
        password = db.password or pooler.config.userlist.get(role)
        host = db.host or pooler.settings.unix_socket_dir or "/tmp"
        try:
            async with await psycopg.AsyncConnection.connect(
                    host=host, port=db.port, dbname=db.dbname or name, user=role,
                    password=password or None, autocommit=True,
                    application_name="pgmux pool_size=auto",
                    connect_timeout=int(pooler.settings.server_connect_timeout or 15)) as conn:
                row = await (await conn.execute(LIMITS_QUERY)).fetchone()
        except Exception as exc:  # noqa: BLE001 - the pooler still starts
            log.warning("pool_size=auto for %s: cannot read limits (%s); using "
                        "default_pool_size", name, exc)
            continue
        assert row is not None
        lim = limits_from_row(row)
        size = auto_pool_size(lim.max_connections, lim.superuser_reserved + lim.reserved,
                              lim.role_limit, lim.db_limit,
                              fraction=pooler.config.pgmux.auto_pool_fraction)
        sizes[name] = size
        log.info("pool_size=auto for %s: %d (max_connections=%d, reserved=%d, role limit "
                 "%s, database limit %s)", name, size, lim.max_connections,
                 lim.superuser_reserved + lim.reserved, lim.role_limit, lim.db_limit)
    return sizes
