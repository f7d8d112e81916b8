"""Pure selection and shaping of sessions for `ps` and `killall`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgmux.doctor.facts import Session
from pgmux.doctor.poolers import is_pooled

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


@dataclass(frozen=True)
class SessionFilter:
    """killall's filters; all given ones must hold (AND), the two state flags are an OR."""

    idle: bool = False  # state 'idle' only (not idle in transaction)
    idle_in_transaction: bool = False  # 'idle in transaction', aborted or not
    idle_for: float | None = None  # seconds in an idle state at least
    application: str | None = None
    user: str | None = None
    # NOTE: a pooler's own server connections (poolers.pooled_by) are its pool, not a leak:
    # skipped unless asked for.
    include_pooled: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.idle
            or self.idle_in_transaction
            or self.idle_for is not None
            or self.application is not None
            or self.user is not None
        )

    def matches(self, session: Session, at: datetime) -> bool:
        if not self.include_pooled and is_pooled(session):
            return False
        state = session.state or ""
        if self.idle or self.idle_in_transaction:
            wanted = (self.idle and state == "idle") or (
                self.idle_in_transaction and session.is_idle_in_transaction
            )
            if not wanted:
                return False
        if self.idle_for is not None:
            # NOTE: --idle-for alone means any idle state (with or without a transaction).
            if state not in IDLE_STATES:
                return False
            if (session.state_duration(at) or 0.0) < self.idle_for:
                return False
        if self.application is not None and session.application_name != self.application:
            return False
        return self.user is None or session.user == self.user


def select_sessions(
    sessions: tuple[Session, ...], own_pid: int, at: datetime, flt: SessionFilter
) -> list[Session]:
    """The sessions matching `flt`, never the caller's own backend, in pid order."""
    return [s for s in sessions if s.pid != own_pid and flt.matches(s, at)]


def ps_rows(sessions: tuple[Session, ...], own_pid: int, at: datetime) -> list[dict[str, Any]]:
    """`ps` rows (its JSON contract), own backend excluded, longest in its state first."""
    others = [s for s in sessions if s.pid != own_pid]
    others.sort(key=lambda s: (-(s.state_duration(at) or -1.0), s.pid))
    return [ps_row(s, at) for s in others]


def ps_row(session: Session, at: datetime) -> dict[str, Any]:
    """One session as `ps --json` shows it; the keys are a contract."""
    duration = session.state_duration(at)
    xact = session.xact_age(at)
    return {
        "pid": session.pid,
        "user": session.user,
        "database": session.database,
        "application_name": session.application_name,
        "client_addr": session.client_addr,
        "state": session.state,
        "state_duration": None if duration is None else round(duration, 3),
        "xact_age": None if xact is None else round(xact, 3),
        "query": session.query,
        "wait_event": session.wait_event,
    }
