"""Read a pooler's admin console (SHOW POOLS, SERVERS, CLIENTS, DATABASES): the doctor's facts
from pgmux (or PgBouncer) itself, beside what PostgreSQL shows; failing to read is a fact too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

ADMIN_DB = "pgbouncer"
# NOTE: "flag": the operator named the console (--pooler); "auto": the doctor's URL seemed to
# go through a pooler, so its console was tried with the same credentials.
Source = Literal["flag", "auto"]
Row = Mapping[str, Any]


@dataclass(frozen=True)
class ConsolePool:
    """One SHOW POOLS row: a (database, user) pool and its list lengths."""

    database: str
    user: str
    pool_mode: str
    cl_active: int = 0
    cl_waiting: int = 0
    sv_active: int = 0
    sv_idle: int = 0
    sv_used: int = 0
    sv_tested: int = 0
    sv_login: int = 0
    maxwait: float = 0.0  # seconds the oldest waiting client has waited

    @property
    def servers(self) -> int:
        return self.sv_active + self.sv_idle + self.sv_used + self.sv_tested + self.sv_login


@dataclass(frozen=True)
class ConsoleSocket:
    """One SHOW CLIENTS or SHOW SERVERS row, the columns the doctor reads."""

    database: str
    user: str
    state: str
    addr: str | None
    port: int | None
    application_name: str = ""
    # NOTE: pgmux's `pinned` column (after PgBouncer's): why the client keeps its server across
    # transactions, reasons joined by ","; "" when not pinned; None when the console has no
    # such column (PgBouncer).
    pinned: str | None = None

    @property
    def pin_reasons(self) -> tuple[str, ...]:
        return tuple(r.strip() for r in (self.pinned or "").split(",") if r.strip())


@dataclass(frozen=True)
class ConsoleFacts:
    """What the doctor read from a pooler's console, or why it could not."""

    where: str  # user@host:port/db of the console, never a password
    source: Source
    error: str | None = None
    pools: tuple[ConsolePool, ...] = ()
    servers: tuple[ConsoleSocket, ...] = ()
    clients: tuple[ConsoleSocket, ...] = ()
    pool_sizes: Mapping[str, int] = field(default_factory=dict)  # SHOW DATABASES pool_size

    @property
    def read(self) -> bool:
        return self.error is None

    @property
    def shows_pins(self) -> bool:
        """The console has pgmux's `pinned` column (PgBouncer's has not)."""
        return any(s.pinned is not None for s in self.servers + self.clients)


def admin_url(url: str) -> str:
    """The same connection parameters as `url`, with the console's database."""
    return make_conninfo(url, dbname=ADMIN_DB)


def describe(url: str) -> str:
    """user@host:port/db for a URL or conninfo, without its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "?"
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    who = f"{user}@" if user else ""
    return f"{who}{host}:{port}/{params.get('dbname') or '?'}"


def console_target(url: str, pooler: str | None, through_pooler: bool
                   ) -> tuple[str, Source] | None:
    """Which console to read: the one named by --pooler, else the doctor's URL with the
    console's database when that URL seems to go through a pooler (`poolers.detect_pooler`),
    else none."""
    if pooler:
        return pooler, "flag"
    if through_pooler:
        return admin_url(url), "auto"
    return None


def _int(row: Row, name: str) -> int:
    value = row.get(name)
    return int(value) if value is not None else 0


def _socket(row: Row) -> ConsoleSocket:
    port = row.get("port")
    return ConsoleSocket(
        database=str(row.get("database") or ""),
        user=str(row.get("user") or ""),
        state=str(row.get("state") or ""),
        addr=row.get("addr"),
        port=int(port) if port is not None else None,
        application_name=str(row.get("application_name") or ""),
        pinned=None if "pinned" not in row else str(row["pinned"] or ""),
    )


def console_from_rows(where: str, source: Source, pools: Sequence[Row], servers: Sequence[Row],
                      clients: Sequence[Row], databases: Sequence[Row] = ()) -> ConsoleFacts:
    """ConsoleFacts from SHOW POOLS / SERVERS / CLIENTS / DATABASES rows as dicts by column."""
    return ConsoleFacts(
        where=where,
        source=source,
        pools=tuple(
            ConsolePool(
                database=str(r["database"]),
                user=str(r["user"]),
                pool_mode=str(r.get("pool_mode") or ""),
                cl_active=_int(r, "cl_active"),
                cl_waiting=_int(r, "cl_waiting"),
                sv_active=_int(r, "sv_active"),
                sv_idle=_int(r, "sv_idle"),
                sv_used=_int(r, "sv_used"),
                sv_tested=_int(r, "sv_tested"),
                sv_login=_int(r, "sv_login"),
                maxwait=_int(r, "maxwait") + _int(r, "maxwait_us") / 1e6,
            )
            for r in pools
            if r.get("database") != ADMIN_DB
        ),
        servers=tuple(_socket(r) for r in servers),
        clients=tuple(_socket(r) for r in clients if r.get("database") != ADMIN_DB),
        pool_sizes={
            str(r["name"]): int(r["pool_size"])
            for r in databases
            if r.get("name") != ADMIN_DB and r.get("pool_size") is not None
        },
    )


def _first_line(exc: BaseException) -> str:
    """The reason alone: libpq's `connection to server at "h", port p failed: ` prefix and
    `FATAL:` go (the console's address is in the finding already)."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    reason = lines[0].rsplit(" failed: ", 1)[-1]
    return reason.removeprefix("FATAL:").strip() or lines[0]


def collect_console(url: str, source: Source, *, application_name: str,
                    connect_timeout: int = 5) -> ConsoleFacts:
    """Read the console at `url`; any failure is returned as ConsoleFacts.error, not raised."""
    where = describe(url)
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row,
                             connect_timeout=connect_timeout,
                             application_name=application_name) as conn:
            # NOTE: a query without parameters goes as a simple Query, which the console needs.
            pools = conn.execute("SHOW POOLS").fetchall()
            servers = conn.execute("SHOW SERVERS").fetchall()
            clients = conn.execute("SHOW CLIENTS").fetchall()
            try:
                databases = conn.execute("SHOW DATABASES").fetchall()
            except psycopg.Error:
                databases = []  # NOTE: pool sizes are a refinement; the rest still holds
    except (psycopg.Error, OSError) as exc:
        return ConsoleFacts(where, source, error=_first_line(exc))
    return console_from_rows(where, source, pools, servers, clients, databases)
