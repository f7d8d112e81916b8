"""Reads PgBouncer's auth_file (userlist.txt): one '"user" "secret"' pair per line."""

from __future__ import annotations

import os

from pgmux.config.errors import ConfigError


def parse_userlist(text: str, filename: str | None = None) -> dict[str, str]:
    """Parse userlist.txt text into ``{user: secret}``; a later line for a user wins.

    Like PgBouncer: a line that does not start with a double quote (a ``;`` or ``#``
    comment, a blank line) is skipped, "" inside a field is one quote, and anything after
    the second field is ignored. A secret is plain text, ``md5<32 hex>`` or a
    ``SCRAM-SHA-256$...`` verifier; it is stored as written.
    """
    users: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line.startswith('"'):
            continue
        user, pos = read_quoted(line, 0, "field", filename, lineno)
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if pos >= len(line) or line[pos] != '"':
            raise ConfigError(f"missing password field for user '{user}'",
                              file=filename, line=lineno)
        secret, _ = read_quoted(line, pos, "field", filename, lineno)
        users[user] = secret
    return users


def load_userlist(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read and parse an auth_file. Raises ConfigError (also when it cannot be read)."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read auth_file: {exc.strerror or exc}", file=name) from None
    return parse_userlist(text, name)


def read_quoted(line: str, start: int, what: str, filename: str | None,
                lineno: int) -> tuple[str, int]:
    """Read the double-quoted text opening at ``start`` ("" stands for one quote); return it
    and the index after its closing quote. Shared by userlist fields and ini names."""
    chars: list[str] = []
    pos = start + 1
    while pos < len(line):
        ch = line[pos]
        if ch == '"':
            if line[pos + 1 : pos + 2] == '"':
                chars.append('"')
                pos += 2
                continue
            return "".join(chars), pos + 1
        chars.append(ch)
        pos += 1
    raise ConfigError(f"unterminated quoted {what}", file=filename, line=lineno)
