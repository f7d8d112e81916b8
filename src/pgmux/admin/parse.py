"""Parses one admin console statement as PgBouncer does: `CMD [arg][;]` or `SET key = value`,
words bare ([0-9a-z_]+) or double-quoted, SET values bare or single-quoted; no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WS0 = r"[ \t\n\r]*"
_WS1 = r"[ \t\n\r]+"
_WORD = r'("(?:[^"]|"")*"|[0-9a-z_]+)'
_STRING = r"('(?:[^']|'')*')"
_END = _WS0 + r"(?:;" + _WS0 + r")?$"

_CMD = re.compile(r"^" + _WS0 + _WORD + r"(?:" + _WS1 + _WORD + r")?" + _END, re.I)
_SET_WORD = re.compile(
    r"^" + _WS0 + r"set" + _WS1 + _WORD + _WS0 + r"(?:=|to)" + _WS0 + _WORD + _END, re.I)
_SET_STR = re.compile(
    r"^" + _WS0 + r"set" + _WS1 + _WORD + _WS0 + r"(?:=|to)" + _WS0 + _STRING + _END, re.I)

# PgBouncer's buffer sizes: longer words are refused with "bad arguments".
MAX_CMD = 15
MAX_ARG = 63
MAX_VALUE = 255


class BadArguments(ValueError):
    """A word too long for the console: PgBouncer answers "bad arguments"."""


@dataclass(frozen=True, slots=True)
class Statement:
    """`CMD arg` (kind "cmd") or `SET name = value` (kind "set"); None if it matches neither."""

    kind: str
    name: str
    arg: str = ""


def _unquote(word: str, quote: str) -> str:
    if len(word) >= 2 and word[0] == quote and word[-1] == quote:
        return word[1:-1].replace(quote * 2, quote)
    return word


def _take(word: str | None, quote: str, limit: int) -> str:
    if word is None:
        return ""
    if len(word) > limit:
        raise BadArguments(word)
    return _unquote(word, quote)


def parse(query: str) -> Statement | None:
    """Statement for query, None for a syntax error; raises BadArguments on oversized words."""
    m = _CMD.match(query)
    if m is not None:
        return Statement("cmd", _take(m.group(1), '"', MAX_CMD).lower(),
                         _take(m.group(2), '"', MAX_ARG))
    for rx in (_SET_STR, _SET_WORD):
        m = rx.match(query)
        if m is not None:
            key = _take(m.group(1), '"', MAX_ARG)
            if not key:
                raise BadArguments(query)
            quote = "'" if rx is _SET_STR else '"'
            return Statement("set", key, _take(m.group(2), quote, MAX_VALUE))
    return None


_PARAM = re.compile(r"\$([1-9][0-9]*)")
_BARE = re.compile(r"^[0-9a-zA-Z_]+$")


def bind_params(query: str, values: list[str | None]) -> str:
    """Put Bind parameters into a console statement ($1, $2, ...): bare when they are plain
    words, else quoted (single quotes after `SET x =`, double quotes elsewhere)."""
    is_set = query.lstrip().lower().startswith("set")

    def render(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n > len(values):
            raise ValueError(f"there is no parameter ${n}")
        value = values[n - 1]
        if value is None:
            raise ValueError(f"parameter ${n} is NULL")
        if _BARE.match(value):
            return value
        before = query[:m.start()].rstrip().lower()
        if is_set and (before.endswith("=") or before.endswith(" to")):
            return "'" + value.replace("'", "''") + "'"
        return '"' + value.replace('"', '""') + '"'

    return _PARAM.sub(render, query)


def count_params(query: str) -> int:
    return max((int(n) for n in _PARAM.findall(query)), default=0)
