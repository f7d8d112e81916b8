"""The poolers `pgmux wrap` runs: one per distinct URL, each with a free local port, a generated
pgbouncer.ini and the local URL that CMD gets instead of the server's."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pgmux.cli.wrap.environment import WrapError
from pgmux.config import FALLBACK_DATABASE, ConfigError, DatabaseConfig, Settings, load_config
from pgmux.config import config_from_url as _config_from_url

# Query parameters of the app's URL that are about the hop to the real server: they are used
# for the pooler's server side (where pgmux supports them) and left out of the local URL.
_SERVER_HOP_PARAMS = frozenset({
    "host", "hostaddr", "port", "user", "password", "dbname", "service", "passfile",
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir",
    "sslsni", "sslcompression", "sslnegotiation", "sslcertmode", "requiressl", "gssencmode",
    "gsslib", "gssdelegation", "krbsrvname", "channel_binding", "require_auth",
    "target_session_attrs", "load_balance_hosts",
})
# Settings config_from_url takes from URL parameters (sslmode=, sslrootcert=, ...).
_URL_SETTINGS = ("server_tls_sslmode", "server_tls_ca_file", "server_tls_cert_file",
                 "server_tls_key_file", "server_connect_timeout")


@dataclass
class PoolerPlan:
    """One pooler to run: the URL variables it serves and how to reach it."""

    names: list[str]
    db: DatabaseConfig
    port: int
    ini: Path
    client_url: str

    @property
    def label(self) -> str:
        return ", ".join(self.names)


def plan_poolers(names: Sequence[str], env: Mapping[str, str], settings: Mapping[str, str],
                 config_dir: Path) -> list[PoolerPlan]:
    """One pooler per distinct URL (variables holding the same URL share it), its ini
    written to ``config_dir`` and loaded once to check it. Raises WrapError."""
    plans: dict[str, PoolerPlan] = {}
    ports: set[int] = set()
    for name in names:
        url = env.get(name, "").strip()
        if not url:
            raise WrapError(f"{name} is not set (it should hold a postgres:// URL)")
        if url in plans:
            plans[url].names.append(name)
            continue
        try:
            config = _config_from_url(url)
        except ConfigError as exc:
            raise WrapError(f"{name}: {exc.message}") from None
        db = next(d for n, d in config.databases.items() if n != FALLBACK_DATABASE)
        port = _free_port(ports)
        ini = config_dir / f"{name}.ini"
        text = render_ini(db, config.settings, settings, port, name)
        _write_private(ini, text)
        try:
            load_config(ini)
        except ConfigError as exc:
            raise WrapError(f"{name}: {exc}") from None
        plans[url] = PoolerPlan([name], db, port, ini, pooled_url(url, db, port))
    return list(plans.values())


def _free_port(taken: set[int]) -> int:
    from pgmux.embedded import free_port

    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only: it holds the database password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def pooled_url(url: str, db: DatabaseConfig, port: int) -> str:
    """``url`` pointed at 127.0.0.1:port with the same scheme, user, password and database
    name; parameters about the hop to the server (sslmode, host, ...) are dropped, others
    (application_name, connect_timeout, an ORM's own, ...) kept in order."""
    parts = urlsplit(url)
    auth = ""
    if db.user is not None:
        auth = quote(db.user, safe="")
        if db.password is not None:
            auth += ":" + quote(db.password, safe="")
        auth += "@"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in _SERVER_HOP_PARAMS]
    path = "/" + quote(db.dbname or db.name, safe="")
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", path,
                       urlencode(query, quote_via=quote), ""))


def _conn_value(text: str, what: str) -> str:
    if any(ch in text for ch in "\r\n\0"):
        raise WrapError(f"{what} must not contain a line break")
    return "'" + text.replace("'", "''") + "'"


def _connstr(db: DatabaseConfig, *, dbname: str | None, pool_size_auto: bool,
             name: str) -> str:
    pairs: list[tuple[str, str]] = []
    if db.host:
        pairs.append(("host", db.host))
    pairs.append(("port", str(db.port)))
    if dbname is not None:
        pairs.append(("dbname", dbname))
    for key, value in (("user", db.user), ("password", db.password),
                       ("application_name", db.application_name),
                       ("client_encoding", db.client_encoding), ("timezone", db.timezone),
                       ("datestyle", db.datestyle)):
        if value is not None:
            pairs.append((key, value))
    if pool_size_auto:
        pairs.append(("pool_size", "auto"))
    return " ".join(f"{k}={_conn_value(v, f'{name}: the {k}')}" for k, v in pairs)


def _ini_key(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def render_ini(db: DatabaseConfig, url_settings: Settings, settings: Mapping[str, str],
               port: int, name: str) -> str:
    """The pgbouncer.ini for the pooler of one URL: the URL's database under its own name and
    a '*' fallback to the same server, listening on 127.0.0.1:port only (no Unix socket).

    Without an explicit AUTH_TYPE, clients must give the URL's password (scram-sha-256, as the
    buildpack does) when the URL has one, and are let in without one (auth_type any: the
    pool logs in as the URL's user) when it has none."""
    settings = dict(settings)
    auto = settings.get("default_pool_size") == "auto"
    if auto:
        del settings["default_pool_size"]
    auth_type = settings.pop("auth_type", None)
    if auth_type is None:
        auth_type = "scram-sha-256" if db.password else "any"
    elif auth_type.strip().lower() not in ("trust", "any") and not db.password:
        raise WrapError(f"{name}: auth_type {auth_type} needs a password in the URL")
    dbname = db.dbname or db.name
    lines = [
        f"; generated by `pgmux wrap` for {name}",
        "[databases]",
        f"{_ini_key(db.name)} = {_connstr(db, dbname=dbname, pool_size_auto=auto, name=name)}",
        f"{_ini_key(FALLBACK_DATABASE)} = "
        f"{_connstr(db, dbname=None, pool_size_auto=auto, name=name)}",
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        f"auth_type = {auth_type}",
    ]
    defaults = Settings()
    for key in _URL_SETTINGS:
        value = getattr(url_settings, key)
        if value != getattr(defaults, key):
            lines.append(f"{key} = {value}")
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"
