"""Cheap looks at SQL text: does a statement change session state that must not leak to the
next client of a server in transaction mode, and quoting for the statements pgmux writes."""

from __future__ import annotations

import re

# NOTE: matched against the lower-cased statement, at its start and after each ';'. SET LOCAL,
# SET TRANSACTION, SET CONSTRAINTS and SET SESSION CHARACTERISTICS end with the transaction.
_SESSION_HEAD = re.compile(
    rb"\s*(?:set\s+(?!local\b|transaction\b|constraints\b|session\s+characteristics\b)"
    rb"|reset\b|create\s+(?:(?:global|local)\s+)?temp|listen\b|prepare\b|declare\b|load\b"
    rb"|discard\b|deallocate\b)")


def changes_session(sql: bytes) -> bool:
    """True when a statement may leave session state behind (SET, temp tables, LISTEN, ...).

    Errs on the side of yes: a false positive costs one reset query, a false negative leaks.
    NOTE: on the hot path of every query in transaction mode: one lower(), one anchored match
    and a few C-level searches (set_config, session-level advisory locks - the xact variants,
    "advisory_xact_lock", do not match - and dblink_connect anywhere in the text).
    """
    low = sql.lower() if len(sql) <= 65536 else sql[:65536].lower()
    if _SESSION_HEAD.match(low):
        return True
    if b"set_config" in low or b"advisory_lock" in low or b"dblink_connect" in low:
        return True
    semi = low.find(b";")
    if semi >= 0:
        match = _SESSION_HEAD.match
        for stmt in low[semi + 1:].split(b";"):
            if match(stmt):
                return True
    return False


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def set_config_query(params: dict[str, str]) -> str:
    """One statement that applies params for the session (works for list GUCs too)."""
    calls = ", ".join(f"pg_catalog.set_config({literal(k)}, {literal(v)}, false)"
                      for k, v in params.items())
    return f"SELECT {calls}"
