"""Cheap looks at SQL text: does a statement change session state that must not leak to the
next client of a server in transaction mode, and quoting for the statements pgmux writes."""

from __future__ import annotations

# NOTE: checked against the first bytes of the statement, lower-cased, after leading blanks.
_SESSION_PREFIXES = (
    b"set ", b"set\t", b"set\n", b"reset", b"create temp", b"create local temp",
    b"create global temp", b"create unlogged temp", b"listen", b"prepare", b"declare",
    b"load ", b"discard", b"deallocate",
)
# NOTE: session-level advisory locks; the xact variants ("advisory_xact_lock") do not match.
_SESSION_ANYWHERE = (b"set_config", b"advisory_lock", b"dblink_connect")
_NOT_SESSION = (b"set local", b"set transaction", b"set constraints",
                b"set session characteristics")


def _starts_session(stmt: bytes) -> bool:
    return stmt.startswith(_SESSION_PREFIXES) and not stmt.startswith(_NOT_SESSION)


def changes_session(sql: bytes) -> bool:
    """True when a statement may leave session state behind (SET, temp tables, LISTEN, ...).

    Errs on the side of yes: a false positive costs one reset query, a false negative leaks.
    """
    if _starts_session(sql[:64].lstrip().lower()):
        return True
    low = sql[:65536].lower()
    if any(marker in low for marker in _SESSION_ANYWHERE):
        return True
    if b";" in low:
        return any(_starts_session(stmt.lstrip()) for stmt in low.split(b";")[1:])
    return False


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def set_config_query(params: dict[str, str]) -> str:
    """One statement that applies params for the session (works for list GUCs too)."""
    calls = ", ".join(f"pg_catalog.set_config({literal(k)}, {literal(v)}, false)"
                      for k, v in params.items())
    return f"SELECT {calls}"
