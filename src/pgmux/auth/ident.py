"""Reads PgBouncer's auth_ident_file (user name maps) and decides peer logins through a map."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pgmux.auth.tokens import Token, tokenize
from pgmux.config.errors import ConfigError

# What PgBouncer answers a refused peer login (the client sees it as a FATAL, 08P01).
PEER_REJECTED = "unix socket login rejected"


@dataclass(frozen=True)
class IdentMapping:
    """One ``map-name system-username database-username`` line.

    ``db_user`` None stands for PgBouncer's ``all`` (any database user). A system user
    written ``/regex`` (unquoted) is a regular expression as in PostgreSQL, searched in
    the system user name; ``\\1`` in the database user is replaced by its first group.
    NOTE: PgBouncer 1.25 does not support regular expressions (it compares the text,
    slash included, which no real user name matches); they are an addition here.
    """

    map_name: str
    system_user: str
    db_user: str | None
    regex: re.Pattern[str] | None = None
    file: str | None = None
    line: int = 0

    def grants(self, system_user: str, db_user: str) -> bool:
        """True when this line lets ``system_user`` log in as ``db_user``."""
        if self.regex is None:
            if system_user != self.system_user:
                return False
            return self.db_user is None or self.db_user == db_user
        found = self.regex.search(system_user)
        if found is None:
            return False
        if self.db_user is None:
            return True
        wanted = self.db_user
        if "\\1" in wanted:
            wanted = wanted.replace("\\1", found.group(1) or "", 1)
        return wanted == db_user


@dataclass(frozen=True)
class IdentFile:
    """The maps of an ident file by name, with each map's lines in file order, and the
    lines that were skipped (PgBouncer logs and skips a line it cannot parse)."""

    maps: Mapping[str, tuple[IdentMapping, ...]] = field(default_factory=dict)
    problems: tuple[ConfigError, ...] = ()


@dataclass(frozen=True)
class LocalDecision:
    """The outcome of a login decided without a password (peer, cert).

    ``log`` is why, in PgBouncer's log wording; ``error`` the FATAL text for the client.
    """

    ok: bool
    log: str | None = None
    error: str | None = None


def ident_allows(ident: IdentFile | None, map_name: str, system_user: str,
                 db_user: str) -> IdentMapping | None:
    """The first line of map ``map_name`` that lets ``system_user`` in as ``db_user``."""
    if ident is None:
        return None
    for mapping in ident.maps.get(map_name, ()):
        if mapping.grants(system_user, db_user):
            return mapping
    return None


def check_peer(*, unix: bool, system_user: str | None, db_user: str,
               map_name: str | None = None, ident: IdentFile | None = None,
               known_user: bool = True) -> LocalDecision:
    """PgBouncer's ``peer`` method: over the Unix socket only, the client's OS user (from
    the socket's peer credentials) must be the database user, or be mapped to it by
    ``map_name``. An unknown database user (not in auth_file) is refused the same way."""
    if not unix or system_user is None or not known_user:
        return LocalDecision(False, None, PEER_REJECTED)
    if map_name is None:
        if system_user == db_user:
            return LocalDecision(True)
        return LocalDecision(False, None, PEER_REJECTED)
    if ident_allows(ident, map_name, system_user, db_user) is not None:
        return LocalDecision(True, f"ident map '{map_name}' is applied")
    return LocalDecision(False, f"ident map {map_name} cannot be matched", PEER_REJECTED)


def load_ident(path: str | os.PathLike[str], *, strict: bool = False) -> IdentFile:
    """Read and parse an auth_ident_file. Raises ConfigError when it cannot be read."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"could not open ident config file: {exc.strerror or exc}",
                          file=name) from None
    return parse_ident(text, name, strict=strict)


def parse_ident(text: str, filename: str | None = None, *, strict: bool = False) -> IdentFile:
    """Parse ident file text: ``map-name system-username database-username`` per line,
    ``#`` comments, "double quotes" around names with spaces."""
    maps: dict[str, list[IdentMapping]] = {}
    problems: list[ConfigError] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        try:
            try:
                tokens = tokenize(raw)
            except ValueError as exc:
                raise ConfigError(str(exc), file=filename, line=lineno) from None
            if not tokens:
                continue
            mapping = _mapping(tokens, filename, lineno)
        except ConfigError as err:
            if strict:
                raise
            problems.append(err)
            continue
        maps.setdefault(mapping.map_name, []).append(mapping)
    return IdentFile({name: tuple(lines) for name, lines in maps.items()}, tuple(problems))


def _mapping(tokens: list[Token], filename: str | None, lineno: int) -> IdentMapping:
    def error(message: str) -> ConfigError:
        return ConfigError(message, file=filename, line=lineno)

    kinds = [t.kind for t in tokens]
    texts = [t.text for t in tokens]
    if len(tokens) < 3 or "," in kinds[:3]:
        raise error("expected 'map-name system-username database-username'")
    if len(tokens) > 3:
        raise error("unsupported parameters after the database user name")
    if kinds[0] != "word":
        raise error("the map name must not be quoted")
    map_name, system_user, db_user = texts
    regex = None
    if kinds[1] == "word" and system_user.startswith("/"):
        try:
            regex = re.compile(system_user[1:])
        except re.error as exc:
            raise error(f"invalid regular expression '{system_user[1:]}': {exc}") from None
        if "\\1" in db_user and regex.groups < 1:
            raise error(f"regular expression '{system_user[1:]}' has no group for \\1")
    if db_user.startswith(("+", "/")) and kinds[2] == "word":
        raise error(f"database user '{db_user}': groups and regular expressions are not "
                    f"supported")
    grant: str | None = None if (kinds[2] == "word" and db_user == "all") else db_user
    return IdentMapping(map_name, system_user, grant, regex, filename, lineno)
