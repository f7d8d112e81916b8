"""Cheap looks at SQL text: does a statement change session state that must not leak to the
next client of a server in transaction mode, and quoting for the statements pgmux writes."""

from __future__ import annotations

import re
from typing import Final

# What a statement may do to the session, as changes_session answers it.
NONE: Final = 0       # nothing that outlives the transaction
TRACKED: Final = 1    # settings, SQL prepared statements, locks, channels, temp tables, cursors:
               # read back from the server afterwards (protocol/state.py)
UNTRACKED: Final = 2  # a loaded library, a dblink connection: only a reset clears it

# NOTE: matched against the lower-cased statement, at its start and after each ';'. SET LOCAL,
# SET TRANSACTION and SET CONSTRAINTS end with the transaction; SET SESSION CHARACTERISTICS
# does not (it sets the session's default_transaction_*). DROP and CLOSE may end a temp
# table or a cursor that keeps a client on its server.
_SESSION_HEAD: Final = re.compile(
    r"\s*(?:set\s+(?!local\b|transaction\b|constraints\b)"
    r"|reset\b|create\s+(?:(?:global|local)\s+)?temp|listen\b|unlisten\b|prepare\b"
    r"|declare\b|discard\b|deallocate\b|close\b|drop\b|(load)\b)")
# The words _SESSION_HEAD can start with: a cheap test that spares the regex for SELECT & co.
_HEAD_WORDS: Final = ("set", "reset", "create", "listen", "unlisten", "prepare", "declare", "load",
               "discard", "deallocate", "close", "drop")
_BLANKS: Final = " \t\r\n;"


def _head(match: re.Match[str] | None) -> int:
    if match is None:
        return NONE
    return UNTRACKED if match.group(1) else TRACKED


def changes_session(sql: bytes) -> int:
    """What a statement may leave behind in the session: NONE, TRACKED (settings, prepared
    statements, advisory locks, LISTEN, temp tables, cursors) or UNTRACKED (LOAD,
    dblink_connect); the most of its statements.

    Errs on the side of yes: a false positive costs one read-back or reset, a false negative
    leaks. NOTE: on the hot path of every query in transaction mode, so the text is decoded as
    latin-1 (one byte, one character: keywords match whatever the encoding) and searched as
    str, whose searches cost a fraction of the same searches on bytes. One lower(), a
    startswith that spares the regex for most statements, and a few short searches:
    set_config, advisory locks (lock and unlock, session and xact) and dblink_connect.
    """
    low = (sql if len(sql) <= 65536 else sql[:65536]).decode("latin-1").lower()
    match = _SESSION_HEAD.match
    found = NONE
    if low.lstrip().startswith(_HEAD_WORDS):
        found = _head(match(low))
        if found == UNTRACKED:
            return found
    # NOTE: "_co" is in set_config and dblink_connect, "advisory" in every advisory lock
    # function: two short searches rule all three out for almost every query.
    if "_co" in low or "advisory" in low:
        if "dblink_connect" in low:
            return UNTRACKED
        if "set_config" in low or "advisory" in low:
            found = TRACKED
    body = low.rstrip(_BLANKS)
    if ";" in body:
        for stmt in body.split(";")[1:]:
            verdict = _head(match(stmt))
            if verdict == UNTRACKED:
                return verdict
            found = max(found, verdict)
    return found


_VERDICTS: dict[bytes, int] = {}
_VERDICTS_MAX: Final = 4096


def changes_session_cached(sql: bytes) -> int:
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
