"""Reads PgBouncer's ini dialect into located entries: sections, comments and %include."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pgmux.config.errors import ConfigError
from pgmux.config.userlist import read_quoted

MAX_INCLUDE_DEPTH = 10


@dataclass(frozen=True)
class IniEntry:
    """One ``key = value`` line, with the section it sits in and where it came from."""

    section: str  # lower-cased section name, "" before the first header
    key: str  # as written, except that a double-quoted key is unquoted
    value: str  # trimmed; ';' and '#' inside a value are NOT comments (as in PgBouncer)
    file: str
    line: int


def resolve_relative(path: str, base_file: str | None) -> str:
    """Resolve a relative path named inside ``base_file``.

    PgBouncer resolves relative ``%include`` and ``auth_file`` paths against its current
    working directory. We look next to the file that names the path first (what users mean
    when they keep configs together), and fall back to the working directory when only that
    exists, so an existing PgBouncer setup keeps working unchanged.
    """
    if os.path.isabs(path) or base_file is None:
        return path
    beside = os.path.join(os.path.dirname(base_file), path)
    if os.path.exists(beside) or not os.path.exists(path):
        return beside
    return path


def read_ini(path: str) -> list[IniEntry]:
    """Read ``path`` and everything it includes, in order. Raises ConfigError."""
    state = _State()
    try:
        text = _read_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=path) from None
    _parse(text, path, state, depth=0, stack=(os.path.realpath(path),))
    return state.entries


class _State:
    """Parser state shared across include files: like PgBouncer, the current section
    carries into an included file and whatever section that file ends in carries back."""

    def __init__(self) -> None:
        self.section = ""
        self.entries: list[IniEntry] = []


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _parse(text: str, file: str, state: _State, depth: int, stack: tuple[str, ...]) -> None:
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("%include"):
            _include(line, file, lineno, state, depth, stack)
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise ConfigError(f"invalid section header '{line}'", file=file, line=lineno)
            state.section = line[1:-1].strip().lower()
            continue
        key, value = _split_key_value(line, file, lineno)
        state.entries.append(IniEntry(state.section, key, value, file, lineno))


def _split_key_value(line: str, file: str, lineno: int) -> tuple[str, str]:
    if line[0] == '"':
        key, rest = _quoted_key(line, file, lineno)
    else:
        eq = line.find("=")
        if eq < 0:
            raise ConfigError(f"syntax error: expected 'key = value', got '{line}'",
                              file=file, line=lineno)
        key, rest = line[:eq].strip(), line[eq:]
        if not key:
            raise ConfigError("syntax error: missing key before '='", file=file, line=lineno)
    rest = rest.lstrip()
    if not rest.startswith("="):
        raise ConfigError(f"syntax error: expected '=' after key '{key}'", file=file, line=lineno)
    return key, rest[1:].strip()


def _quoted_key(line: str, file: str, lineno: int) -> tuple[str, str]:
    """A key in SQL identifier quotes, with "" standing for one double quote."""
    key, end = read_quoted(line, 0, "name", file, lineno)
    return key, line[end:]


def _include(
    line: str, file: str, lineno: int, state: _State, depth: int, stack: tuple[str, ...]
) -> None:
    target = line[len("%include") :].strip()
    if not target or not line[len("%include") :][:1].isspace():
        raise ConfigError("syntax error: expected '%include filename'", file=file, line=lineno)
    if depth + 1 > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"includes nested deeper than {MAX_INCLUDE_DEPTH}",
                          file=file, line=lineno)
    path = resolve_relative(target, file)
    real = os.path.realpath(path)
    if real in stack:
        raise ConfigError(f"recursive include of '{target}'", file=file, line=lineno)
    try:
        text = _read_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot open include file '{target}': {exc.strerror or exc}",
                          file=file, line=lineno) from None
    _parse(text, path, state, depth + 1, stack + (real,))
