"""Builders for hand-made ServerFacts: recorded server states for the doctor's pure tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pgmux.doctor.facts import Endpoints, Limits, ServerFacts, Session

AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
OWN_PID = 100


def session(
    pid: int,
    state: str | None = "idle",
    *,
    app: str = "web",
    user: str = "app",
    database: str = "appdb",
    client: str | None = "10.0.0.1",
    in_state: float = 0.0,
    xact: float | None = None,
    query_age: float | None = None,
    query: str = "SELECT 1",
    wait_event: str | None = "ClientRead",
) -> Session:
    """A session `in_state` seconds in its state at AT; xact/query ages in seconds too."""

    def ago(seconds: float | None) -> datetime | None:
        return None if seconds is None else AT - timedelta(seconds=seconds)

    return Session(
        pid=pid,
        user=user,
        database=database,
        application_name=app,
        client_addr=client,
        client_port=None if client is None else 40000 + pid,
        state=state,
        backend_start=ago(max(in_state, xact or 0.0, query_age or 0.0) + 60),
        xact_start=ago(xact),
        query_start=ago(query_age if query_age is not None else in_state),
        state_change=ago(in_state),
        wait_event_type="Client" if wait_event == "ClientRead" else None,
        wait_event=wait_event,
        query=query,
    )


def own_session() -> Session:
    return session(OWN_PID, "active", app="pgmux-doctor", client="127.0.0.1", xact=0.0)


def facts(
    *sessions: Session,
    max_connections: int = 100,
    superuser_reserved: int = 3,
    reserved: int = 0,
    **overrides: Any,
) -> ServerFacts:
    """Facts with the doctor's own session plus `sessions`, collected at AT."""
    fields: dict[str, Any] = {
        "server_version": "16.2",
        "server_version_num": 160002,
        "collected_at": AT,
        "own_pid": OWN_PID,
        "current_user": "postgres",
        "current_database": "appdb",
        "is_superuser": True,
        "limits": Limits(max_connections, superuser_reserved, reserved),
        "sessions": (own_session(), *sessions),
        "settings": {"max_connections": str(max_connections)},
        "database_size": 8 * 1024 * 1024,
        "cluster_size": 16 * 1024 * 1024,
        "table_count": 3,
        "endpoints": direct_endpoints(),
    }
    fields.update(overrides)
    return ServerFacts(**fields)


def direct_endpoints(**overrides: Any) -> Endpoints:
    fields: dict[str, Any] = {
        "dialled_host": "127.0.0.1",
        "dialled_port": 5432,
        "local_addr": "127.0.0.1",
        "local_port": 50000,
        "seen_client_addr": "127.0.0.1",
        "seen_client_port": 50000,
        "server_addr": "127.0.0.1",
        "server_port": 5432,
        "backend_pids": (OWN_PID,),
    }
    fields.update(overrides)
    return Endpoints(**fields)
