"""What a client's session holds beyond its reported parameters, as data: session settings
(SET, set_config(..., false), SET ROLE, SET SESSION AUTHORIZATION, SET SESSION
CHARACTERISTICS, startup options), SQL prepared statements, and the state that cannot move
to another server (advisory locks, LISTEN, temp tables, WITH HOLD cursors). The server is the
source of truth: READBACK reads it; `replay` is the fewest statements that bring a server from
one state to another. No I/O.
"""

from __future__ import annotations

import json
import re

# Why a client keeps its server across transactions (SHOW CLIENTS `pinned`, the metrics).
PIN_ADVISORY = "advisory lock"
PIN_LISTEN = "LISTEN"
PIN_TEMP = "temp table"
PIN_CURSOR = "WITH HOLD cursor"
PIN_PREPARE = "SQL PREPARE"      # one whose PREPARE cannot be told apart in its query text
PIN_SESSION = "pool_mode=session"  # the client asked for a session of its own
PIN_REASONS = (PIN_ADVISORY, PIN_LISTEN, PIN_TEMP, PIN_CURSOR, PIN_PREPARE, PIN_SESSION)

# Settings kept apart from the others: the session user comes first (setting it resets the
# role), then the role.
SESSION_AUTHORIZATION = "session_authorization"
ROLE = "role"

# NOTE: one round trip, one row, one JSON text. role and session_authorization are not in
# pg_settings (GUC_NO_SHOW_ALL), so they are read on their own.
READBACK = (
    "SELECT pg_catalog.json_build_object("
    "'gucs', (SELECT COALESCE(pg_catalog.json_object_agg(name, "
    "pg_catalog.current_setting(name)), '{}') FROM pg_catalog.pg_settings "
    "WHERE source = 'session'), "
    "'role', pg_catalog.current_setting('role'), "
    "'session_user', session_user, "
    "'prepared', (SELECT COALESCE(pg_catalog.json_object_agg(name, statement), "
    "'{}') FROM pg_catalog.pg_prepared_statements WHERE from_sql), "
    "'advisory', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE locktype = "
    "'advisory' AND pid = pg_catalog.pg_backend_pid() AND granted), "
    "'listen', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()), "
    "'temp', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class "
    "WHERE relnamespace = pg_catalog.pg_my_temp_schema()), "
    "'cursors', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors WHERE is_holdable))")


class SessionState:
    """One session's state, immutable. `gucs` and `prepared` are sorted (name, value) pairs;
    `prepared` maps a statement name to the one PREPARE statement that makes it."""

    __slots__ = ("gucs", "prepared", "pins")

    def __init__(self, gucs: tuple[tuple[str, str], ...] = (),
                 prepared: tuple[tuple[str, str], ...] = (),
                 pins: tuple[str, ...] = ()) -> None:
        self.gucs = gucs
        self.prepared = prepared
        self.pins = pins

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionState) and (self.gucs, self.prepared, self.pins) == (
            other.gucs, other.prepared, other.pins)

    def __hash__(self) -> int:
        return hash((self.gucs, self.prepared, self.pins))

    def __repr__(self) -> str:
        return f"SessionState(gucs={self.gucs}, prepared={self.prepared}, pins={self.pins})"

    @property
    def empty(self) -> bool:
        return not (self.gucs or self.prepared or self.pins)

    def movable(self) -> SessionState:
        """The same without pins: what a server is left with once the client has gone and
        its pinned state was discarded."""
        return SessionState(self.gucs, self.prepared) if self.pins else self


EMPTY = SessionState()


def state(gucs: dict[str, str] | None = None, prepared: dict[str, str] | None = None,
          pins: tuple[str, ...] | list[str] = ()) -> SessionState:
    """A SessionState from dicts (the canonical, sorted form)."""
    return SessionState(tuple(sorted((gucs or {}).items())),
                        tuple(sorted((prepared or {}).items())), tuple(sorted(set(pins))))


def parse_readback(text: str, login_user: str, tracked: frozenset[str] | set[str]
                   ) -> SessionState:
    """The JSON row of READBACK as a SessionState. Reported parameters (`tracked`, such as
    TimeZone and application_name) are left out: each client keeps those already.
    Raises ValueError on text that is not READBACK's answer."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    tracked_low = {name.lower() for name in tracked}
    gucs = {str(k): str(v) for k, v in dict(data.get("gucs") or {}).items()
            if str(k).lower() not in tracked_low}
    role = str(data.get("role") or "none")
    if role != "none":
        gucs[ROLE] = role
    session_user = str(data.get("session_user") or login_user)
    if session_user != login_user:
        gucs[SESSION_AUTHORIZATION] = session_user
    pins: list[str] = []
    prepared: dict[str, str] = {}
    for name, source in dict(data.get("prepared") or {}).items():
        text_of = prepare_text(str(source), str(name))
        if text_of is None:
            pins.append(PIN_PREPARE)
        else:
            prepared[str(name)] = text_of
    for key, reason in (("advisory", PIN_ADVISORY), ("listen", PIN_LISTEN),
                        ("temp", PIN_TEMP), ("cursors", PIN_CURSOR)):
        if int(data.get(key) or 0):
            pins.append(reason)
    return state(gucs, prepared, pins)


def canonical_values(asked: dict[str, str], reported: dict[str, str]
                     ) -> dict[tuple[str, str], str]:
    """What each value pgmux set (with set_config) became on the server: the value it last
    reported once the SET is done. PostgreSQL reports a parameter only when its value
    changes, so a value that is another spelling of the current one ("ISO" for "ISO, MDY")
    gets no report: the last one reported is then its canonical form too. Names the server
    never reports are left out."""
    return {(name, value): reported[name] for name, value in asked.items() if name in reported}


def merge_startup(startup: SessionState, read: SessionState) -> SessionState:
    """What the client holds after a read-back: a setting from its startup packet that the
    server no longer shows was RESET, and RESET returns to the startup value (as a direct
    connection does); everything else is as read."""
    if not startup.gucs:
        return read
    gucs = dict(startup.gucs)
    gucs.update(read.gucs)
    return SessionState(tuple(sorted(gucs.items())), read.prepared, read.pins)


# What undoes each kind of pinned state (when a pin is refused: max_pinned_servers).
_UNDO = {PIN_ADVISORY: "SELECT pg_catalog.pg_advisory_unlock_all()", PIN_LISTEN: "UNLISTEN *",
         PIN_TEMP: "DISCARD TEMP", PIN_CURSOR: "CLOSE ALL"}


def pin_undo(pins: tuple[str, ...]) -> str | None:
    """The statements that end the pinned state of `pins` (None when none of them can be
    undone alone: a SQL PREPARE pgmux cannot tell apart stays)."""
    steps = [_UNDO[p] for p in pins if p in _UNDO]
    return "; ".join(steps) if steps else None


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    """A setting or statement name as SQL: each dot-separated part double-quoted."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def replay(have: SessionState, want: SessionState) -> str | None:
    """The statements (one simple query) that bring a server holding `have` to `want`, or
    None when nothing is to be done. Pins are not replayed (they never move)."""
    if have.gucs == want.gucs and have.prepared == want.prepared:
        return None
    old, new = dict(have.gucs), dict(want.gucs)
    out: list[str] = []
    sets: list[str] = []
    auth_changed = old.get(SESSION_AUTHORIZATION) != new.get(SESSION_AUTHORIZATION)
    if auth_changed:
        if SESSION_AUTHORIZATION in new:
            sets.append(f"pg_catalog.set_config('session_authorization', "
                        f"{_literal(new[SESSION_AUTHORIZATION])}, false)")
        else:
            out.append("RESET SESSION AUTHORIZATION")
    # NOTE: a new session user resets the role: set it again after.
    if auth_changed or old.get(ROLE) != new.get(ROLE):
        if ROLE in new:
            sets.append(f"pg_catalog.set_config('role', {_literal(new[ROLE])}, false)")
        elif ROLE in old:
            out.append("RESET ROLE")
    for name, value in sorted(new.items()):
        if name not in (SESSION_AUTHORIZATION, ROLE) and old.get(name) != value:
            sets.append(f"pg_catalog.set_config({_literal(name)}, {_literal(value)}, false)")
    resets = [f"RESET {_ident(name)}" for name in sorted(old)
              if name not in new and name not in (SESSION_AUTHORIZATION, ROLE)]
    if sets:
        out.append("SELECT " + ", ".join(sets))
    out.extend(resets)
    have_p, want_p = dict(have.prepared), dict(want.prepared)
    for name in sorted(have_p):
        if want_p.get(name) != have_p[name]:
            out.append(f"DEALLOCATE {_ident(name)}")
    for name in sorted(want_p):
        if have_p.get(name) != want_p[name]:
            out.append(want_p[name])
    return "; ".join(out) if out else None


# ---- finding one PREPARE in a query text --------------------------------------------------

_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")
_PREPARE_HEAD = re.compile(r"\s*prepare\s+(\"(?:[^\"]|\"\")+\"|[^\s(\"]+)", re.IGNORECASE)


def split_statements(sql: str) -> list[str]:
    """A query text cut at its top-level semicolons: quotes ('', E'', "", $tag$), comments
    (--, nested /* */) are stepped over. Returns the statements without the semicolons."""
    out: list[str] = []
    start = pos = 0
    n = len(sql)
    while pos < n:
        c = sql[pos]
        if c == "'":
            escapes = pos > 0 and sql[pos - 1] in "eE" and (pos < 2 or not (
                sql[pos - 2].isalnum() or sql[pos - 2] == "_"))
            pos += 1
            while pos < n:
                if escapes and sql[pos] == "\\":
                    pos += 2
                    continue
                if sql[pos] == "'":
                    if pos + 1 < n and sql[pos + 1] == "'":
                        pos += 2
                        continue
                    break
                pos += 1
            pos += 1
        elif c == '"':
            end = sql.find('"', pos + 1)
            while end >= 0 and end + 1 < n and sql[end + 1] == '"':
                end = sql.find('"', end + 2)
            pos = n if end < 0 else end + 1
        elif c == "-" and sql.startswith("--", pos):
            end = sql.find("\n", pos)
            pos = n if end < 0 else end + 1
        elif c == "/" and sql.startswith("/*", pos):
            depth, pos = 1, pos + 2
            while pos < n and depth:
                if sql.startswith("/*", pos):
                    depth, pos = depth + 1, pos + 2
                elif sql.startswith("*/", pos):
                    depth, pos = depth - 1, pos + 2
                else:
                    pos += 1
        elif c == "$" and (pos == 0 or not (sql[pos - 1].isalnum() or sql[pos - 1] == "_")):
            m = _DOLLAR.match(sql, pos)
            if m is None:
                pos += 1
            else:
                end = sql.find(m.group(0), m.end())
                pos = n if end < 0 else end + len(m.group(0))
        elif c == ";":
            out.append(sql[start:pos])
            pos += 1
            start = pos
        else:
            pos += 1
    out.append(sql[start:])
    return [s for s in (part.strip() for part in out) if s]


def _statement_name(token: str) -> str:
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()


def prepare_text(source: str, name: str) -> str | None:
    """The one PREPARE statement of `source` (pg_prepared_statements.statement: the whole
    query text the client sent) that makes statement `name`; None when there is not exactly
    one (then the client is pinned rather than guessed at)."""
    found = [stmt for stmt in split_statements(source)
             if (m := _PREPARE_HEAD.match(stmt)) is not None and
             _statement_name(m.group(1)) == name]
    return found[0] if len(found) == 1 else None
