"""Converters from PgBouncer's textual setting values to Python values (raise ValueError)."""

from __future__ import annotations

import re

_TRUE = frozenset({"1", "yes", "on", "true"})
_FALSE = frozenset({"0", "no", "off", "false"})

# NOTE: PgBouncer documents time settings as plain (possibly fractional) seconds. We also accept
# unit suffixes, a strict superset: every value PgBouncer reads means the same. The same
# spellings serve the config files, PGMUX_* variables and the command line (`30m` and `30min`
# alike), so a duration written once works everywhere.
TIME_UNITS: dict[str, float] = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
TIME_EXAMPLES = "e.g. 30s, 30m or 30min, 2h, 1d, 1h30m"
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_TIME_PART_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)")
_INT_RE = re.compile(r"^[+-]?\d+$")
# NOTE: as in PgBouncer, ';' and '#' start a comment only at the start of a line; after a value
# they are part of it. A value that fails to convert and looks like it carries such a comment
# says so.
_INLINE_COMMENT = re.compile(r"\s[;#]")
COMMENT_HINT = ("; a ';' or '#' after a value is part of the value (as in PgBouncer): put "
                "the comment on its own line")


def _invalid(message: str, text: str) -> ValueError:
    if _INLINE_COMMENT.search(text):
        message += COMMENT_HINT
    return ValueError(message)


def parse_bool(text: str) -> bool:
    """PgBouncer's boolean forms: 0/1, yes/no, on/off, true/false (any case)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _invalid(f"invalid boolean '{text}'", text)


def parse_int(text: str, lo: int | None = 0, hi: int | None = None) -> int:
    """A decimal integer within [lo, hi] (either bound may be None)."""
    raw = text.strip()
    if not _INT_RE.match(raw):
        raise _invalid(f"invalid integer '{text}'", text)
    value = int(raw)
    _check_range(value, lo, hi, text)
    return value


def parse_octal(text: str) -> int:
    """A file mode such as 0777 (always read as octal, like PgBouncer's unix_socket_mode)."""
    raw = text.strip()
    try:
        value = int(raw, 8)
    except ValueError:
        raise _invalid(f"invalid octal mode '{text}'", text) from None
    _check_range(value, 0, 0o7777, text)
    return value


def parse_time(text: str) -> float:
    """A non-negative duration in seconds: a bare number is seconds; otherwise one or more
    number-unit parts (`250ms`, `5 min`, `1h30m`), units per TIME_UNITS in any case."""
    raw = text.strip()
    if _NUMBER_RE.match(raw):
        value = float(raw)
    else:
        value, pos = 0.0, 0
        for match in _TIME_PART_RE.finditer(raw):
            if match.start() != pos:
                break
            number, unit = match.groups()
            factor = TIME_UNITS.get(unit.lower())
            if factor is None:
                raise _invalid(f"invalid time unit '{unit}' in '{text}' ({TIME_EXAMPLES})",
                               text)
            value += float(number) * factor
            pos = match.end()
        if pos == 0 or pos != len(raw):
            raise _invalid(f"invalid time value '{text}' ({TIME_EXAMPLES})", text)
    if value < 0:
        raise ValueError(f"negative time value '{text}'")
    return value


def parse_float(text: str, lo: float, hi: float) -> float:
    """A plain float within [lo, hi]."""
    try:
        value = float(text.strip())
    except ValueError:
        raise _invalid(f"invalid number '{text}'", text) from None
    if not lo <= value <= hi:
        raise ValueError(f"value '{text}' out of range [{lo}, {hi}]")
    return value


def parse_list(text: str) -> tuple[str, ...]:
    """A comma-separated list; blanks around items and empty items are dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_choice(text: str, choices: tuple[str, ...]) -> str:
    """One of a fixed set of lower-case words."""
    word = text.strip().lower()
    if word not in choices:
        raise _invalid(f"invalid value '{text}' (expected one of: {', '.join(choices)})", text)
    return word


def _check_range(value: int, lo: int | None, hi: int | None, text: str) -> None:
    if lo is not None and value < lo:
        raise ValueError(f"value '{text}' must be >= {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"value '{text}' must be <= {hi}")


def parse_connstr(text: str) -> list[tuple[str, str]]:
    """Split a libpq-style ``key=value key='quoted '' value'`` string into ordered pairs.

    Keys are lower-cased. Inside single quotes ``''`` stands for one quote. Raises ValueError.
    """
    pairs: list[tuple[str, str]] = []
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return pairs
        start = pos
        while pos < n and text[pos] != "=" and not text[pos].isspace():
            pos += 1
        key = text[start:pos]
        while pos < n and text[pos].isspace():
            pos += 1
        if not key or pos >= n or text[pos] != "=":
            raise ValueError(f"syntax error in connection string near '{text[start:]}'")
        pos += 1
        while pos < n and text[pos].isspace():
            pos += 1
        if pos < n and text[pos] == "'":
            pos += 1
            chars: list[str] = []
            while True:
                if pos >= n:
                    raise ValueError(f"unterminated quoted value for '{key}'")
                ch = text[pos]
                if ch == "'":
                    if pos + 1 < n and text[pos + 1] == "'":
                        chars.append("'")
                        pos += 2
                        continue
                    pos += 1
                    break
                chars.append(ch)
                pos += 1
            value = "".join(chars)
        else:
            start = pos
            while pos < n and not text[pos].isspace():
                pos += 1
            value = text[start:pos]
        pairs.append((key.lower(), value))
