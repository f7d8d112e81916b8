"""Cheap looks at SQL text: does a statement change session state that must not leak to the
next client of a server in transaction mode, and quoting for the statements pgmux writes."""

from __future__ import annotations

import re

# NOTE: matched against the lower-cased statement, at its start and after each ';'. SET LOCAL,
# SET TRANSACTION, SET CONSTRAINTS and SET SESSION CHARACTERISTICS end with the transaction.
_SESSION_HEAD = re.compile(
    r"\s*(?:set\s+(?!local\b|transaction\b|constraints\b|session\s+characteristics\b)"
    r"|reset\b|create\s+(?:(?:global|local)\s+)?temp|listen\b|prepare\b|declare\b|load\b"
    r"|discard\b|deallocate\b)")
# The words _SESSION_HEAD can start with: a cheap test that spares the regex for SELECT & co.
_HEAD_WORDS = ("set", "reset", "create", "listen", "prepare", "declare", "load", "discard",
               "deallocate")
_BLANKS = " \t\r\n;"


def changes_session(sql: bytes) -> bool:
    """True when a statement may leave session state behind (SET, temp tables, LISTEN, ...).

    Errs on the side of yes: a false positive costs one reset query, a false negative leaks.
    NOTE: on the hot path of every query in transaction mode, so the text is decoded as latin-1
    (one byte, one character: keywords match whatever the encoding) and searched as str, whose
    searches cost a fraction of the same searches on bytes. One lower(), a startswith that spares
    the regex for most statements, and a few short searches: set_config, session-level advisory
    locks (the xact variants, "advisory_xact_lock", do not match) and dblink_connect.
    """
    low = (sql if len(sql) <= 65536 else sql[:65536]).decode("latin-1").lower()
    match = _SESSION_HEAD.match
    if low.lstrip().startswith(_HEAD_WORDS) and match(low):
        return True
    # NOTE: "_co" is in set_config and dblink_connect, "y_lo" in every advisory_lock variant:
    # two short searches rule all three out for almost every query.
    if ("_co" in low or "y_lo" in low) and (
            "set_config" in low or "advisory_lock" in low or "dblink_connect" in low):
        return True
    body = low.rstrip(_BLANKS)
    if ";" in body:
        for stmt in body.split(";")[1:]:
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
