"""Reads PgBouncer's auth_hba_file (a pg_hba.conf subset) and picks the rule for a login."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pgmux.auth.ident import IdentFile
from pgmux.auth.tokens import Token, tokenize
from pgmux.config.errors import ConfigError

# Connection types, in PgBouncer's (and PostgreSQL's) words.
CONNECTION_TYPES = ("local", "host", "hostssl", "hostnossl")

# hba method word -> pgmux auth method. "password" is PgBouncer's auth_type "plain".
METHODS = {
    "trust": "trust",
    "reject": "reject",
    "md5": "md5",
    "password": "plain",
    "scram-sha-256": "scram-sha-256",
    "cert": "cert",
    "peer": "peer",
    "ldap": "ldap",
}

# What a startup packet's ``replication`` parameter asks for (SHOW CLIENTS' words).
REPLICATION_NONE = "none"
REPLICATION_LOGICAL = "logical"
REPLICATION_PHYSICAL = "physical"

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})
_MAX_INCLUDE_DEPTH = 10

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_replication(value: str | None) -> str | None:
    """The replication mode a startup ``replication`` value asks for, or None when the value
    is not understood. "database" is logical replication; a true boolean is physical."""
    if value is None:
        return REPLICATION_NONE
    if value == "database":
        return REPLICATION_LOGICAL
    word = value.strip().lower()
    if word in _TRUE:
        return REPLICATION_PHYSICAL
    if word in _FALSE:
        return REPLICATION_NONE
    return None


@dataclass(frozen=True)
class NameSet:
    """The database or user field of a rule: keywords as flags, plain names as a set.

    NOTE: PgBouncer reads both fields with the database rules, so ``sameuser`` and
    ``replication`` are accepted in the user field too (``sameuser`` there means the user
    name equals the database name).
    """

    all: bool = False
    sameuser: bool = False
    replication: bool = False
    names: frozenset[str] = frozenset()

    def matches(self, name: str, pair: str) -> bool:
        """True when ``name`` is in the set; ``pair`` is the other field's value (sameuser)."""
        if self.all:
            return True
        if self.sameuser and name == pair:
            return True
        return name in self.names


@dataclass(frozen=True)
class HbaRule:
    """One line of the hba file. ``address``/``mask`` are None for ``local`` and ``all``."""

    conn_type: str
    databases: NameSet
    users: NameSet
    method: str  # a pgmux method name: trust, reject, md5, plain, scram-sha-256, cert, peer, ldap
    address: int | None = None
    mask: int | None = None
    ipv6: bool = False
    map_name: str | None = None
    ldap_options: str | None = None
    file: str | None = None
    line: int = 0

    def where(self) -> str:
        """``file:line`` of the rule, for logs."""
        return f"{self.file or 'hba'}:{self.line}"

    def matches_address(self, address: Address) -> bool:
        if self.address is None or self.mask is None:
            return True  # "all"
        if isinstance(address, ipaddress.IPv6Address) != self.ipv6:
            return False
        return (int(address) & self.mask) == self.address


@dataclass(frozen=True)
class HbaFile:
    """The rules of an hba file, in order, and what to warn about: the lines that were
    skipped (with why) and rules kept despite a flaw (an address with bits outside its mask).

    PgBouncer skips a line it cannot parse, logs it and goes on, so ``problems`` are for
    the log; ``parse_hba(strict=True)`` raises the first skipped line instead.
    """

    rules: tuple[HbaRule, ...] = ()
    problems: tuple[ConfigError, ...] = field(default=())


def client_address(peer: str | Address | None) -> Address | None:
    """An IP address from a peer name string, with IPv4-mapped IPv6 turned into IPv4."""
    if peer is None or peer == "":
        return None
    address = ipaddress.ip_address(peer) if isinstance(peer, str) else peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def match_hba(
    hba: HbaFile | Iterable[HbaRule],
    *,
    unix: bool,
    tls: bool,
    database: str,
    user: str,
    address: str | Address | None = None,
    replication: str = REPLICATION_NONE,
) -> HbaRule | None:
    """The first rule that applies to this login, or None (PgBouncer then refuses with
    "no authentication method is found"). ``address`` is the client's IP (ignored for
    ``unix``); a physical replication login matches only rules whose database field has
    the ``replication`` keyword, a logical one matches database names as usual."""
    rules = hba.rules if isinstance(hba, HbaFile) else hba
    peer = None if unix else client_address(address)
    for rule in rules:
        if unix:
            if rule.conn_type != "local":
                continue
        else:
            if rule.conn_type == "local" or peer is None:
                continue
            if rule.conn_type == "hostssl" and not tls:
                continue
            if rule.conn_type == "hostnossl" and tls:
                continue
            if not rule.matches_address(peer):
                continue
        if replication == REPLICATION_PHYSICAL:
            if not rule.databases.replication:
                continue
        elif not rule.databases.matches(database, user):
            continue
        if rule.users.matches(user, database):
            return rule
    return None


def load_hba(path: str | os.PathLike[str], ident: IdentFile | None = None,
             *, strict: bool = False) -> HbaFile:
    """Read and parse an auth_hba_file. Raises ConfigError when it cannot be read."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"could not open hba config file: {exc.strerror or exc}",
                          file=name) from None
    return parse_hba(text, name, ident=ident, strict=strict)


def parse_hba(
    text: str,
    filename: str | None = None,
    *,
    ident: IdentFile | None = None,
    strict: bool = False,
    read_file: Callable[[str], str] | None = None,
) -> HbaFile:
    """Parse hba file text. ``@file`` names are read (relative to ``filename``'s directory)
    with ``read_file`` (default: open the file). ``map=`` must name a map of ``ident``."""
    reader = read_file or _read_text
    rules: list[HbaRule] = []
    problems: list[ConfigError] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        try:
            try:
                tokens = tokenize(raw)
            except ValueError as exc:
                raise ConfigError(str(exc), file=filename, line=lineno) from None
            if tokens:
                parser = _LineParser(tokens, filename, lineno, ident, reader, problems)
                rules.append(parser.rule())
        except ConfigError as err:
            if strict:
                raise
            problems.append(err)
    return HbaFile(tuple(rules), tuple(problems))


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


class _LineParser:
    """Turns the tokens of one hba line into an HbaRule, or raises ConfigError."""

    def __init__(self, tokens: list[Token], filename: str | None, lineno: int,
                 ident: IdentFile | None, reader: Callable[[str], str],
                 problems: list[ConfigError]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.filename = filename
        self.lineno = lineno
        self.ident = ident
        self.reader = reader
        self.problems = problems

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, file=self.filename, line=self.lineno)

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token | None:
        token = self.peek()
        if token is not None:
            self.pos += 1
        return token

    def rule(self) -> HbaRule:
        first = self.take()
        assert first is not None
        if first.kind != "word" or first.text not in CONNECTION_TYPES:
            raise self.error(f"unknown connection type '{first.text}'")
        conn_type = first.text
        databases = self.names("database")
        users = self.names("user")
        address = mask = None
        ipv6 = False
        if conn_type != "local":
            address, mask, ipv6 = self.address()
        method = self.method()
        ldap_options = None
        map_name = None
        if method == "ldap":
            ldap_options = " ".join(t.text for t in self.tokens[self.pos:])
            self.pos = len(self.tokens)
        else:
            map_name = self.map_option()
        if self.peek() is not None:
            raise self.error("unsupported parameters after the method")
        return HbaRule(conn_type, databases, users, method, address, mask, ipv6, map_name,
                       ldap_options, self.filename, self.lineno)

    def names(self, what: str) -> NameSet:
        flags: dict[str, bool] = {"all": False, "sameuser": False, "replication": False}
        names: set[str] = set()
        while True:
            token = self.take()
            if token is None or token.kind == ",":
                raise self.error(f"missing {what} name")
            self.one_name(token, flags, names, self.filename, 0)
            following = self.peek()
            if following is None or following.kind != ",":
                break
            self.pos += 1
        return NameSet(flags["all"], flags["sameuser"], flags["replication"], frozenset(names))

    def one_name(self, token: Token, flags: dict[str, bool], names: set[str],
                 parent: str | None, depth: int) -> None:
        if token.kind == "word":
            if token.text in flags:
                flags[token.text] = True
                return
            if token.text in ("samerole", "samegroup"):
                raise self.error(f"{token.text} is not supported")
            if token.text.startswith("+"):
                raise self.error(f"group names ('{token.text}') are not supported")
            if token.text.startswith("@"):
                self.include(token.text[1:], flags, names, parent, depth)
                return
        names.add(token.text)

    def include(self, name: str, flags: dict[str, bool], names: set[str], parent: str | None,
                depth: int) -> None:
        """``@file``: names listed in another file, relative to the including file."""
        if not name:
            raise self.error("'@' needs a file name")
        if depth >= _MAX_INCLUDE_DEPTH:
            raise self.error(f"@{name}: files include each other too deeply")
        base = os.path.dirname(parent) if parent else ""
        path = name if os.path.isabs(name) else os.path.join(base, name)
        try:
            text = self.reader(path)
        except OSError as exc:
            raise self.error(f"cannot read @{name}: {exc.strerror or exc}") from None
        # NOTE: PgBouncer fails the rule on a blank or comment line in an @file; we skip
        # them (as PostgreSQL does), which only accepts files PgBouncer would refuse.
        for raw in text.splitlines():
            try:
                tokens = tokenize(raw)
            except ValueError as exc:
                raise self.error(f"@{name}: {exc}") from None
            for token in tokens:
                if token.kind != ",":
                    self.one_name(token, flags, names, path, depth + 1)

    def address(self) -> tuple[int | None, int | None, bool]:
        token = self.take()
        if token is None or token.kind != "word":
            raise self.error("did not find the address")
        if token.keyword("all"):
            return None, None, False
        text, _, bits = token.text.partition("/")
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise self.error(f"failed to parse address '{text}' (host names, samehost and "
                             f"samenet are not supported)") from None
        width = ip.max_prefixlen
        if bits:
            if not bits.isdigit() or int(bits) > width:
                raise self.error(f"invalid mask '/{bits}'")
            mask = ((1 << width) - 1) ^ ((1 << (width - int(bits))) - 1)
        else:
            mask_token = self.take()
            if mask_token is None or mask_token.kind != "word":
                raise self.error("did not find the mask")
            try:
                mask_ip = ipaddress.ip_address(mask_token.text)
            except ValueError:
                raise self.error(f"failed to parse mask '{mask_token.text}'") from None
            if mask_ip.version != ip.version:
                raise self.error(f"failed to parse mask '{mask_token.text}'")
            mask = int(mask_ip)
        if int(ip) & ~mask:
            # NOTE: kept, as PgBouncer keeps it; such a rule can never match.
            shown = ipaddress.IPv6Address(mask) if ip.version == 6 else ipaddress.IPv4Address(mask)
            self.problems.append(self.error(f"address does not match mask: {ip} / {shown}"))
        return int(ip), mask, ip.version == 6

    def method(self) -> str:
        token = self.take()
        if token is None or token.kind != "word" or token.text not in METHODS:
            found = token.text if token is not None else "nothing"
            raise self.error(f"unsupported method '{found}' (expected one of "
                             f"{', '.join(METHODS)})")
        return METHODS[token.text]

    def map_option(self) -> str | None:
        token = self.peek()
        if token is None or token.kind != "word":
            return None
        self.pos += 1
        key, sep, value = token.text.partition("=")
        if key != "map" or not sep or not value:
            raise self.error(f"ident map option '{token.text}' is malformed: "
                             f"it is not in map=value format")
        if self.ident is None or value not in self.ident.maps:
            raise self.error(f"ident map '{value}' is not found in the ident config file")
        return value
