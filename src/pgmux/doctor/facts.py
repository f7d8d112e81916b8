"""Collect facts about a PostgreSQL server with psycopg: the only I/O the doctor does."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from pgmux.doctor.console import ConsoleFacts

# NOTE: the name the doctor's own connection announces; the pooler heuristic compares it with what
# the server saw, and every command skips the backend whose pid is `ServerFacts.own_pid`.
APPLICATION_NAME = "pgmux-doctor"

SETTING_NAMES = (
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "statement_timeout",
    "track_activity_query_size",
)


@dataclass(frozen=True)
class Limits:
    """The connection limits that apply to one role on one database of one server."""

    max_connections: int
    superuser_reserved: int
    # NOTE: `reserved_connections` exists from PostgreSQL 16 on (slots for pg_use_reserved_conn.);
    # it is 0 on older servers.
    reserved: int = 0
    # NOTE: None when unlimited (-1) and for superusers, whose CONNECTION LIMIT is not enforced.
    role_limit: int | None = None  # rolconnlimit of the role
    db_limit: int | None = None  # datconnlimit of the database, None when unlimited (-1)

    @property
    def reserved_total(self) -> int:
        return self.superuser_reserved + self.reserved

    @property
    def usable(self) -> int:
        """Slots an ordinary role may take: max_connections minus every reserved slot."""
        return max(0, self.max_connections - self.reserved_total)


@dataclass(frozen=True)
class Session:
    """One client backend as pg_stat_activity showed it at collection time."""

    pid: int
    user: str | None
    database: str | None
    application_name: str
    client_addr: str | None  # None for a Unix-socket client
    client_port: int | None
    state: str | None  # None when this role may not see the session's details
    backend_start: datetime | None = None
    xact_start: datetime | None = None
    query_start: datetime | None = None
    state_change: datetime | None = None
    wait_event_type: str | None = None
    wait_event: str | None = None
    query: str = ""

    def state_duration(self, at: datetime) -> float | None:
        """Seconds in the current state at `at`; None when unknown."""
        return _seconds_since(self.state_change, at)

    def xact_age(self, at: datetime) -> float | None:
        """Seconds since the open transaction began; None outside a transaction."""
        return _seconds_since(self.xact_start, at)

    def query_age(self, at: datetime) -> float | None:
        """Seconds since the current (or last) query began; None when unknown."""
        return _seconds_since(self.query_start, at)

    @property
    def is_idle_in_transaction(self) -> bool:
        """Idle inside a transaction, aborted or not: holding its locks and its slot."""
        return (self.state or "").startswith("idle in transaction")


def _seconds_since(start: datetime | None, at: datetime) -> float | None:
    if start is None:
        return None
    return max(0.0, (at - start).total_seconds())


@dataclass(frozen=True)
class RoleLimit:
    """A role with a connection limit (rolconnlimit >= 0) and how many sessions it has now."""

    role: str
    limit: int
    connections: int


@dataclass(frozen=True)
class DatabaseLimit:
    """A database with a connection limit (datconnlimit >= 0) and its sessions now."""

    database: str
    limit: int
    connections: int


@dataclass(frozen=True)
class Endpoints:
    """Both ends of the doctor's own connection, as the client and as the server see them.

    The pooler heuristic (`rules.detect_pooler`) compares them: a relay in between shows up as a
    mismatch.
    """

    dialled_host: str | None
    dialled_port: int | None
    local_addr: str | None  # our socket's own address; None over a Unix socket
    local_port: int | None
    seen_client_addr: str | None  # pg_stat_activity.client_addr of our backend
    seen_client_port: int | None
    server_addr: str | None  # inet_server_addr(); None when the server side is a Unix socket
    server_port: int | None  # inet_server_port()
    sent_application_name: str = APPLICATION_NAME
    seen_application_name: str | None = APPLICATION_NAME
    # NOTE: pg_backend_pid() asked in separate transactions; more than one distinct value means
    # a transaction-mode pooler hands our statements to different server connections.
    backend_pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ServerFacts:
    """Everything the doctor knows about one server at one moment; rules read only this."""

    server_version: str
    server_version_num: int
    collected_at: datetime  # the server's clock_timestamp() when sessions were read
    own_pid: int
    current_user: str
    current_database: str
    is_superuser: bool
    limits: Limits
    sessions: tuple[Session, ...]
    settings: Mapping[str, str] = field(default_factory=dict)
    role_limits: tuple[RoleLimit, ...] = ()
    database_limits: tuple[DatabaseLimit, ...] = ()
    database_size: int | None = None  # bytes, current database
    cluster_size: int | None = None  # bytes, all databases this role may connect to
    table_count: int | None = None  # ordinary and partitioned tables in the current database
    endpoints: Endpoints | None = None
    # NOTE: what the pooler's console showed, when the doctor read one (`console.py`).
    console: ConsoleFacts | None = None

    @property
    def others(self) -> tuple[Session, ...]:
        """Every session but the doctor's own."""
        return tuple(s for s in self.sessions if s.pid != self.own_pid)


def connect(url: str, *, connect_timeout: int = 10) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection that names itself, so that it can be told apart and skipped."""
    return psycopg.connect(
        url,
        autocommit=True,
        application_name=APPLICATION_NAME,
        connect_timeout=connect_timeout,
    )


LIMITS_QUERY = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int,
       (SELECT CASE WHEN rolsuper THEN -1 ELSE rolconnlimit END
          FROM pg_roles WHERE rolname = current_user),
       (SELECT datconnlimit FROM pg_database WHERE datname = current_database())
"""


def limits_from_row(row: Sequence[Any]) -> Limits:
    """Limits from one row of LIMITS_QUERY (for callers that run it on their own driver)."""
    max_conn, su_reserved, reserved, role_limit, db_limit = row
    return Limits(
        max_connections=int(max_conn),
        superuser_reserved=int(su_reserved),
        reserved=int(reserved),
        role_limit=None if role_limit is None or role_limit < 0 else int(role_limit),
        db_limit=None if db_limit is None or db_limit < 0 else int(db_limit),
    )


def fetch_limits(conn: psycopg.Connection[Any]) -> Limits:
    """The limits that apply to this connection's role and database (for pool auto-sizing)."""
    with conn.cursor() as cur:
        row = cur.execute(LIMITS_QUERY).fetchone()
    assert row is not None
    return limits_from_row(row)


# NOTE: pg_backend_pid() is asked in the same statement: behind a transaction pooler each
# statement may run on another server connection, so the pid libpq got at login
# (conn.info.backend_pid, the pooler's cancel key) or from an earlier statement is not ours.
SESSIONS_QUERY = """
SELECT pid, usename, datname, coalesce(application_name, ''), host(client_addr), client_port,
       state, backend_start, xact_start, query_start, state_change, wait_event_type, wait_event,
       coalesce(query, ''), clock_timestamp(), pg_backend_pid()
FROM pg_stat_activity
WHERE backend_type = 'client backend'
ORDER BY pid
"""


@dataclass(frozen=True)
class Activity:
    """pg_stat_activity's client backends at one moment, and which of them read it."""

    sessions: tuple[Session, ...]
    at: datetime  # the server's clock_timestamp() when they were read
    own_pid: int  # the backend that ran the query: the doctor's own, to be skipped


def fetch_sessions(conn: psycopg.Connection[Any]) -> Activity:
    """Every client backend of the server (all databases), the server time they were read, and
    the backend that read them."""
    with conn.cursor() as cur:
        rows = cur.execute(SESSIONS_QUERY).fetchall()
        if rows:
            at: datetime = rows[0][-2]
            own_pid = int(rows[0][-1])
        else:  # NOTE: cannot happen (our own backend is a client backend), but stay total
            clock = cur.execute("SELECT clock_timestamp(), pg_backend_pid()").fetchone()
            assert clock is not None
            at, own_pid = clock[0], int(clock[1])
    sessions = tuple(
        Session(
            pid=r[0],
            user=r[1],
            database=r[2],
            application_name=r[3],
            client_addr=r[4],
            client_port=r[5] if r[5] is not None and r[5] >= 0 else None,
            state=r[6],
            backend_start=r[7],
            xact_start=r[8],
            query_start=r[9],
            state_change=r[10],
            wait_event_type=r[11],
            wait_event=r[12],
            query=r[13],
        )
        for r in rows
    )
    return Activity(sessions, at, own_pid)


def _local_endpoint(conn: psycopg.Connection[Any]) -> tuple[str | None, int | None]:
    """Our socket's own address and port, or (None, None) over a Unix socket."""
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except OSError:
        return None, None
    with sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None, None
        name = sock.getsockname()
    return str(name[0]), int(name[1])


def _endpoints(conn: psycopg.Connection[Any], own: Session | None) -> Endpoints:
    local_addr, local_port = _local_endpoint(conn)
    with conn.cursor() as cur:
        row = cur.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()
        assert row is not None
        pids = []
        for _ in range(3):
            pid_row = cur.execute("SELECT pg_backend_pid()").fetchone()
            assert pid_row is not None
            pids.append(int(pid_row[0]))
    host = conn.info.host
    return Endpoints(
        dialled_host=host,
        dialled_port=conn.info.port if not host.startswith("/") else None,
        local_addr=local_addr,
        local_port=local_port,
        seen_client_addr=own.client_addr if own else None,
        seen_client_port=own.client_port if own else None,
        server_addr=row[0],
        server_port=row[1],
        seen_application_name=own.application_name if own else None,
        backend_pids=tuple(sorted(set(pids))),
    )


_OVERVIEW_QUERY = """
SELECT current_user, current_database(),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       current_setting('server_version'),
       pg_database_size(current_database()),
       (SELECT sum(pg_database_size(oid))::bigint FROM pg_database
         WHERE datallowconn AND has_database_privilege(oid, 'CONNECT')),
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%')
"""

_ROLE_LIMITS_QUERY = """
SELECT r.rolname, r.rolconnlimit,
       (SELECT count(*) FROM pg_stat_activity a
         WHERE a.usename = r.rolname AND a.backend_type = 'client backend')
FROM pg_roles r
WHERE r.rolconnlimit >= 0 AND r.rolcanlogin AND NOT r.rolsuper
ORDER BY r.rolname
"""

_DATABASE_LIMITS_QUERY = """
SELECT d.datname, d.datconnlimit,
       (SELECT count(*) FROM pg_stat_activity a
         WHERE a.datname = d.datname AND a.backend_type = 'client backend')
FROM pg_database d
WHERE d.datconnlimit >= 0 AND d.datallowconn
ORDER BY d.datname
"""


def collect(conn: psycopg.Connection[Any]) -> ServerFacts:
    """Read everything the doctor's commands need from an open autocommit connection."""
    with conn.cursor() as cur:
        overview = cur.execute(_OVERVIEW_QUERY).fetchone()
        assert overview is not None
        settings_rows = cur.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(SETTING_NAMES)]
        ).fetchall()
        role_rows = cur.execute(_ROLE_LIMITS_QUERY).fetchall()
        db_rows = cur.execute(_DATABASE_LIMITS_QUERY).fetchall()
    limits = fetch_limits(conn)
    activity = fetch_sessions(conn)
    own = next((s for s in activity.sessions if s.pid == activity.own_pid), None)
    version_text = str(overview[3])
    return ServerFacts(
        server_version=version_text.split()[0],
        server_version_num=conn.info.server_version,
        collected_at=activity.at,
        own_pid=activity.own_pid,
        current_user=str(overview[0]),
        current_database=str(overview[1]),
        is_superuser=bool(overview[2]),
        limits=limits,
        sessions=activity.sessions,
        settings={str(name): str(value) for name, value in settings_rows},
        role_limits=tuple(RoleLimit(r[0], int(r[1]), int(r[2])) for r in role_rows),
        database_limits=tuple(DatabaseLimit(r[0], int(r[1]), int(r[2])) for r in db_rows),
        database_size=None if overview[4] is None else int(overview[4]),
        cluster_size=None if overview[5] is None else int(overview[5]),
        table_count=int(overview[6]),
        endpoints=_endpoints(conn, own),
    )


def collect_facts(url: str) -> ServerFacts:
    """Connect to `url`, collect its facts, and disconnect."""
    with connect(url) as conn:
        return collect(conn)


@dataclass(frozen=True)
class Termination:
    """What happened when the doctor asked one backend to end."""

    pid: int
    terminated: bool
    reason: str = ""


def terminate(
    conn: psycopg.Connection[Any],
    targets: Sequence[Session | int],
    *,
    wait_seconds: float = 5.0,
) -> list[Termination]:
    """pg_terminate_backend each target, never the connection's own backend.

    A target given as a Session is ended only while it is still the same backend in the same
    state as when it was listed (same backend_start and state_change), so that a pid reused by a
    new backend, or a session that went busy since, is spared. On PostgreSQL 14+ each call waits
    up to `wait_seconds` for the backend to exit.
    """
    timeout_ms = int(wait_seconds * 1000)
    waits = conn.info.server_version >= 140000
    call = "pg_terminate_backend(pid, %(timeout)s)" if waits else "pg_terminate_backend(pid)"
    # NOTE: the backend running the statement is spared in the statement itself: behind a
    # transaction pooler it may not be the one an earlier statement ran on.
    spare_own = f"CASE WHEN pid = pg_backend_pid() THEN NULL ELSE {call} END"
    results = []
    for target in targets:
        pid = target.pid if isinstance(target, Session) else int(target)
        params: dict[str, Any] = {"pid": pid, "timeout": timeout_ms}
        guard = ""
        if isinstance(target, Session):
            guard = (
                " AND backend_start IS NOT DISTINCT FROM %(backend_start)s"
                " AND state_change IS NOT DISTINCT FROM %(state_change)s"
            )
            params["backend_start"] = target.backend_start
            params["state_change"] = target.state_change
        sql = f"SELECT {spare_own} FROM pg_stat_activity WHERE pid = %(pid)s{guard}"
        try:
            row = conn.execute(sql, params).fetchone()
        except psycopg.Error as exc:
            message = (exc.diag.message_primary or str(exc)).strip()
            results.append(Termination(pid, False, message))
            continue
        if row is None:
            reason = "no such backend" if not guard else "gone, or changed state since listed"
            results.append(Termination(pid, False, reason))
        elif row[0] is None:
            results.append(Termination(pid, False, "refusing to end the doctor's own backend"))
        elif not row[0]:
            results.append(
                Termination(pid, False, "not a backend process, or still running after the wait")
            )
        else:
            results.append(Termination(pid, True))
    return results
