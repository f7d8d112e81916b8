"""How a client proves who it is, as PgBouncer decides it: the method (auth_type, or the first
matching auth_hba_file rule), the secret (auth_file, a forced user's password, auth_query run
in auth_dbname), and the logins decided without a password exchange (trust, any, cert, peer,
reject).

Owns the parsed auth_hba_file and auth_ident_file (read at start and on RELOAD) and the
auth_query connections.
"""

from __future__ import annotations

import logging
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgmux.auth import (
    TRUST_FAILED,
    HbaFile,
    IdentFile,
    check_cert,
    check_peer,
    load_hba,
    load_ident,
    match_hba,
)
from pgmux.config import ConfigError, DatabaseConfig
from pgmux.proxy.authquery import AuthConnections, lookup_secret

if TYPE_CHECKING:
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")

ADMIN_DB = "pgbouncer"
CONFIG_ERROR = "bouncer config error"
NO_METHOD = "no authentication method is found"
REJECTED = "login rejected"
# auth_type / hba method -> the password exchange ClientAuthenticator runs
EXCHANGES = {"plain": "plain", "password": "plain", "md5": "md5",
             "scram-sha-256": "scram-sha-256"}


def peer_credentials(transport: Any) -> tuple[int, int] | None:
    """(pid, uid) of a Unix-socket peer (SO_PEERCRED), or None when unknown."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or getattr(sock, "family", None) != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, uid, _ = struct.unpack("3i", raw)
    return int(pid), int(uid)


def peer_user(transport: Any) -> str | None:
    """The OS user name of a Unix-socket peer (for the peer method)."""
    creds = peer_credentials(transport)
    if creds is None:
        return None
    try:
        return pwd.getpwuid(creds[1]).pw_name
    except KeyError:
        return None


@dataclass(frozen=True, slots=True)
class Method:
    """How one login is checked: a method name (auth_type's or an hba rule's) and the
    ident map an hba rule names."""

    name: str
    map_name: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a login check that needs no password exchange: `exchange` names the
    exchange to run instead when it does."""

    ok: bool = False
    error: str = ""          # the FATAL text for the client
    log: str | None = None   # why, for the log
    exchange: str | None = None


class ClientAuth:
    """The authentication decisions of one pooler."""

    __slots__ = ("pooler", "hba", "ident", "conns")

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self.hba: HbaFile | None = None
        self.ident: IdentFile | None = None
        self.conns: AuthConnections = {}  # auth_query connections, one per database
        self.load_files()

    def load_files(self) -> None:
        """Read auth_ident_file and (for auth_type=hba) auth_hba_file; a file that cannot be
        read leaves no rules (everything is refused), as in PgBouncer, and says why."""
        s = self.pooler.settings
        self.ident = None
        if s.auth_ident_file:
            try:
                self.ident = load_ident(s.auth_ident_file)
            except ConfigError as exc:
                log.error("%s", exc)
            else:
                for problem in self.ident.problems:
                    log.warning("%s", problem)
        self.hba = None
        if s.auth_type == "hba":
            try:
                self.hba = load_hba(s.auth_hba_file, self.ident)
            except ConfigError as exc:
                log.error("%s", exc)
                self.hba = HbaFile((), ())
            else:
                for problem in self.hba.problems:
                    log.warning("%s", problem)

    # ---- which method ---------------------------------------------------------------------
    def method(self, client: ClientConnection, admin: bool) -> Method | None:
        """The method for this login; None when no hba rule matches."""
        auth_type = self.pooler.settings.auth_type
        if auth_type != "hba":
            return Method(auth_type)
        rule = match_hba(self.hba or HbaFile((), ()), unix=client.addr == "unix",
                         tls=client.tls, database=client.dbname, user=client.user,
                         address=None if client.addr == "unix" else client.addr,
                         replication=client.replication)
        if rule is None:
            return None
        return Method(rule.method, rule.map_name)

    # ---- which secret -----------------------------------------------------------------------
    def known_secret(self, client: ClientConnection, db: DatabaseConfig | None) -> str | None:
        """The user's secret from auth_file, or the [databases] password of the forced user
        it logs in as."""
        secret = self.pooler.config.userlist.get(client.user)
        if secret is None and db is not None and db.user == client.user and db.password:
            secret = db.password
        return secret

    def query_database(self, db: DatabaseConfig | None, admin: bool
                       ) -> DatabaseConfig | str | None:
        """Where auth_query runs for a user missing from auth_file: the auth database's entry,
        None when there is no auth_user (or no known database), or the refusal text."""
        s = self.pooler.settings
        if admin or db is None or not (db.auth_user or s.auth_user):
            return None
        name = db.auth_dbname or s.auth_dbname or db.name
        if name == ADMIN_DB:
            log.error('cannot use the reserved "pgbouncer" database as an auth_dbname')
            return CONFIG_ERROR
        auth_db = self.pooler.config.database(name)
        if auth_db is None:
            log.error('authentication database "%s" is not configured.', name)
            return CONFIG_ERROR
        if name in self.pooler.control.disabled_dbs:
            return f'authentication database "{name}" is disabled'
        return auth_db

    async def query_secret(self, db: DatabaseConfig, auth_db: DatabaseConfig, user: str
                           ) -> str | None:
        """The user's stored secret from auth_query (db's or the global one)."""
        s = self.pooler.settings
        auth_user = db.auth_user or s.auth_user
        return await lookup_secret(self.pooler, self.conns, auth_db, auth_user,
                                   db.auth_query or s.auth_query, user)

    # ---- decisions without a password exchange --------------------------------------------
    def decide(self, client: ClientConnection, db: DatabaseConfig | None, admin: bool,
               how: Method, known: bool) -> Verdict:
        """trust, any, cert, peer and reject; the password methods come back as `exchange`.
        `known`: the user has a secret (auth_file, forced password or auth_query)."""
        name = how.name
        exchange = EXCHANGES.get(name)
        if exchange is not None:
            return Verdict(exchange=exchange)
        if name == "trust":
            return Verdict(ok=True) if known else Verdict(error=TRUST_FAILED,
                                                          log=f"no such user: {client.user}")
        if name == "any":
            # NOTE: PgBouncer's any ignores the client's name: the database must log in as
            # a user of its own (the console checks admin_users/stats_users itself).
            if admin or (db is not None and db.user):
                return Verdict(ok=True)
            return Verdict(error=CONFIG_ERROR, log="auth_type=any requires forced user")
        if name == "cert":
            transport = client.transport
            cert = transport.get_extra_info("peercert") if transport is not None else None
            d = check_cert(tls=client.tls, cert=cert, db_user=client.user,
                           map_name=how.map_name, ident=self.ident, known_user=known)
            return Verdict(ok=d.ok, error=d.error or "", log=d.log)
        if name == "peer":
            d = check_peer(unix=client.addr == "unix", system_user=peer_user(client.transport),
                           db_user=client.user, map_name=how.map_name, ident=self.ident,
                           known_user=known)
            return Verdict(ok=d.ok, error=d.error or "", log=d.log)
        # NOTE: reject, and methods pgmux does not build (pam, ldap): refused.
        return Verdict(error=REJECTED, log=None if name == "reject" else
                       f"authentication method {name} is not supported")
