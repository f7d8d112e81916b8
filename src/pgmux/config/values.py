"""Converters from PgBouncer's textual setting values to Python values (raise ValueError)."""

from __future__ import annotations

import re

_TRUE = frozenset({"1", "yes", "on", "true"})
_FALSE = frozenset({"0", "no", "off", "false"})

# NOTE: PgBouncer documents time settings as plain (possibly fractional) seconds. We also accept
# PostgreSQL-style unit suffixes, a strict superset: every value PgBouncer reads means the same.
TIME_UNITS: dict[str, float] = {
    "": 1.0,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_TIME_RE = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)$")
_INT_RE = re.compile(r"^[+-]?\d+$")


def parse_bool(text: str) -> bool:
    """PgBouncer's boolean forms: 0/1, yes/no, on/off, true/false (any case)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"invalid boolean '{text}'")


def parse_int(text: str, lo: int | None = 0, hi: int | None = None) -> int:
    """A decimal integer within [lo, hi] (either bound may be None)."""
    raw = text.strip()
    if not _INT_RE.match(raw):
        raise ValueError(f"invalid integer '{text}'")
    value = int(raw)
    _check_range(value, lo, hi, text)
    return value


def parse_octal(text: str) -> int:
    """A file mode such as 0777 (always read as octal, like PgBouncer's unix_socket_mode)."""
    raw = text.strip()
    try:
        value = int(raw, 8)
    except ValueError:
        raise ValueError(f"invalid octal mode '{text}'") from None
    _check_range(value, 0, 0o7777, text)
    return value


def parse_time(text: str) -> float:
    """A non-negative duration in seconds; a bare number is seconds, suffixes per TIME_UNITS."""
    match = _TIME_RE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid time value '{text}'")
    number, unit = match.groups()
    factor = TIME_UNITS.get(unit.lower())
    if factor is None:
        known = ", ".join(u for u in TIME_UNITS if u)
        raise ValueError(f"invalid time unit '{unit}' in '{text}' (use {known})")
    value = float(number) * factor
    if value < 0:
        raise ValueError(f"negative time value '{text}'")
    return value


def parse_float(text: str, lo: float, hi: float) -> float:
    """A plain float within [lo, hi]."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"invalid number '{text}'") from None
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
        raise ValueError(f"invalid value '{text}' (expected one of: {', '.join(choices)})")
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
