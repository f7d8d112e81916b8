"""auth_user + auth_query: look a client's secret up in the server when the auth_file lacks
it, over one cached connection per (server, database, auth_user)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from pgmux.config import DatabaseConfig
    from pgmux.proxy.pooler import Pooler


def _placeholders(query: str) -> str:
    """auth_query uses $1 (PgBouncer's form); psycopg wants %s."""
    return query.replace("%", "%%").replace("$1", "%s")


# One cached connection (and the lock that serializes its use) per (host, port, dbname, user).
AuthConnections = dict[tuple[str, int, str, str], dict[str, Any]]


async def lookup_secret(pooler: Pooler, cache: AuthConnections, auth_db: DatabaseConfig,
                        auth_user: str, auth_query: str, user: str) -> str | None:
    """The stored secret (md5 or SCRAM verifier) of user, or None when there is none;
    auth_query runs as auth_user on the server and database of the auth database's entry."""
    s = pooler.settings
    db = auth_db
    host = db.host or s.unix_socket_dir or "/tmp"
    dbname = db.dbname or db.name
    key = (host, db.port, dbname, auth_user)
    entry = cache.get(key)
    if entry is None:
        entry = cache[key] = {"lock": asyncio.Lock(), "conn": None}
    query = _placeholders(auth_query)
    async with entry["lock"]:
        for attempt in (1, 2):
            conn = entry["conn"]
            if conn is None or conn.closed:
                password = pooler.config.userlist.get(auth_user)
                if password is None and db.user == auth_user:
                    password = db.password
                plain = password if password and not password.startswith(
                    ("md5", "SCRAM-SHA-256$")) else None
                conninfo = psycopg.conninfo.make_conninfo(
                    host=host, port=db.port, dbname=dbname, user=auth_user, password=plain,
                    connect_timeout=int(s.server_connect_timeout or 15),
                    application_name="pgmux auth_query")
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                entry["conn"] = conn
            try:
                cur = await conn.execute(query, (user,))
                row = await cur.fetchone()
                break
            except psycopg.OperationalError:
                entry["conn"] = None
                if attempt == 2:
                    raise
    if row is None or len(row) < 2 or row[1] is None:
        return None
    return str(row[1])
