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
    # NOTE: "_co" is in set_config and dblink_connect, "y_lo" in every advisory_lock variant:
    # two short searches rule all three out for almost every query.
    if (b"_co" in low or b"y_lo" in low) and (
            b"set_config" in low or b"advisory_lock" in low or b"dblink_connect" in low):
        return True
    semi = low.find(b";")
    if semi >= 0:
        rest = low[semi + 1:]
        if rest.strip():
            match = _SESSION_HEAD.match
            for stmt in rest.split(b";"):
                if match(stmt):
                    return True
    return False


_VERDICTS: dict[bytes, bool] = {}
_VERDICTS_MAX = 4096


def changes_session_cached(sql: bytes) -> bool:
    """changes_session, remembered per text: extended-protocol clients Parse the same few
    statements over and over. Bounded: the memory is dropped when it fills."""
    verdict = _VERDICTS.get(sql)
    if verdict is None:
        verdict = changes_session(sql)
        if len(_VERDICTS) >= _VERDICTS_MAX:
            _VERDICTS.clear()
        _VERDICTS[sql] = verdict
    return verdict


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def set_config_query(params: dict[str, str]) -> str:
    """One statement that applies params for the session (works for list GUCs too)."""
    calls = ", ".join(f"pg_catalog.set_config({literal(k)}, {literal(v)}, false)"
                      for k, v in params.items())
    return f"SELECT {calls}"
