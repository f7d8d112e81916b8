"""The SHOW commands as a table: PgBouncer 1.25's columns (names, order, types) and the rows,
all derived from the pool cores, the config and the counters at the time of asking."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgmux.config.model import FALLBACK_DATABASE, POOL_SIZE_AUTO
from pgmux.config.reload import NOT_RELOADABLE
from pgmux.config.settings import Settings
from pgmux.pool.core import ClientState, ServerState
from pgmux.protocol.state import PIN_SESSION
from pgmux.proxy.client import Phase
from pgmux.proxy.clientauth import peer_credentials
from pgmux.proxy.control import ADMIN_DB, wall_clock
from pgmux.proxy.replication import ReplicationLink
from pgmux.stats import period
from pgmux.stats.counters import Counters

if TYPE_CHECKING:
    from pgmux.pool.pool import Pool
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler
    from pgmux.proxy.server import ServerConnection

Row = tuple[Any, ...]

# Column kinds, as PgBouncer types them: text, int4, int8, numeric, timestamp-as-text, bytea.
OIDS = {"s": 25, "i": 23, "q": 20, "N": 1700, "T": 25, "b": 17}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str  # one of OIDS

    @property
    def oid(self) -> int:
        return OIDS[self.kind]


def cols(kinds: str, *names: str) -> tuple[Column, ...]:
    """Columns from a kind string ("ssi...") and as many names."""
    assert len(kinds) == len(names), names
    return tuple(Column(n, k) for k, n in zip(kinds, names, strict=True))


@dataclass(frozen=True, slots=True)
class Show:
    columns: tuple[Column, ...]
    rows: Callable[[Pooler], Iterable[Row]]


# ---- shared helpers ---------------------------------------------------------------------

def _stamp(monotonic_time: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall_clock(monotonic_time)))


def _ptr(obj: object | None) -> str:
    return f"{id(obj):#x}" if obj is not None else ""


def _pools(pooler: Pooler) -> list[Pool]:
    return [pooler.pools[k] for k in sorted(pooler.pools)]


def _admin_clients(pooler: Pooler) -> list[Any]:
    return [c for c in pooler.clients if c.admin is not None]


def _db_names(pooler: Pooler) -> list[str]:
    names = {n for n in pooler.config.databases if n != FALLBACK_DATABASE}
    names.update(p.name for p in pooler.pools.values())
    return sorted(names | {ADMIN_DB})


def _secs_us(seconds: float) -> tuple[int, int]:
    us = max(0, int(seconds * 1_000_000))
    return us // 1_000_000, us % 1_000_000


# ---- SHOW POOLS -------------------------------------------------------------------------

POOLS = cols("ssiiiiiiiiiiiiiss", "database", "user", "cl_active", "cl_waiting",
             "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
             "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait",
             "maxwait_us", "pool_mode", "load_balance_hosts")


def pools_rows(pooler: Pooler) -> Iterator[Row]:
    now = time.monotonic()
    admins = len(_admin_clients(pooler))
    rows: list[Row] = [(ADMIN_DB, "pgbouncer", admins, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        "statement", None)]
    for pool in _pools(pooler):
        core = pool.core
        wait_s, wait_us = _secs_us(core.max_wait(now))
        db = pooler.config.database(pool.name)
        lbh = db.load_balance_hosts if db is not None and db.host and "," in db.host else None
        rows.append((pool.name, pool.user, len(core.clients), len(core.waiting), 0, 0,
                     len(core.active), 0, 0, len(core.idle), len(core.used), len(core.tested),
                     len(core.login), wait_s, wait_us, pool.pool_mode, lbh))
    rows.sort(key=lambda r: (r[0], r[1]))
    yield from rows


# ---- SHOW CLIENTS / SERVERS / SOCKETS ---------------------------------------------------

_SOCKET_KINDS = "ssssssisiTTiiississii"
_SOCKET_NAMES = ("type", "user", "database", "replication", "state", "addr", "port",
                 "local_addr", "local_port", "connect_time", "request_time", "wait", "wait_us",
                 "close_needed", "ptr", "link", "remote_pid", "tls", "application_name",
                 "prepared_statements", "id")
_DEBUG_NAMES = ("recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail",
                "send_avail")
# NOTE: pgmux's own column goes after all of PgBouncer's: why a client keeps its server
# across transactions (its session state cannot move, or it asked for a session).
SOCKET = cols(_SOCKET_KINDS + "s", *_SOCKET_NAMES, "pinned")
SOCKET_DEBUG = cols(_SOCKET_KINDS + "iiiiiii" + "s", *(_SOCKET_NAMES + _DEBUG_NAMES),
                    "pinned")


def pin_reason(client: ClientConnection | None) -> str:
    """SHOW CLIENTS/SERVERS `pinned`: why this client keeps its server, "" when it does not."""
    if client is None:
        return ""
    if client.wants_session and client.pool is not None and \
            client.pool.pool_mode != "session":
        return PIN_SESSION
    return ",".join(client.session.pins)


def _tls_info(transport: Any) -> str:
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if obj is None:
        return ""
    cipher = obj.cipher()
    return f"{obj.version()}/{cipher[0] if cipher else ''}"


def _unsent(transport: asyncio.Transport | None) -> int:
    """Bytes written to ``transport`` and not yet taken by the socket."""
    return transport.get_write_buffer_size() if transport is not None else 0


def _peer_pid(client: Any) -> int:
    creds = peer_credentials(client.transport)
    return creds[0] if creds is not None else 0


def client_row(pooler: Pooler, client: ClientConnection, state: str, now: float,
               debug: bool) -> Row:
    if state == "active" and client.server is None:
        state = "idle"
    waited = now - client.wait_start if client.client_state is ClientState.WAITING else 0.0
    wait_s, wait_us = _secs_us(waited)
    unix = client.addr == "unix"
    row: Row = (
        "C", client.user or "(nouser)", client.dbname or "(nodb)", client.replication, state,
        client.addr, client.port,
        "unix" if unix else client.local_addr,
        pooler.settings.listen_port if unix else client.local_port,
        _stamp(client.connect_time), _stamp(client.request_time), wait_s, wait_us, 0,
        _ptr(client), _ptr(client.server), _peer_pid(client) if unix else 0,
        _tls_info(client.transport), client.params.get("application_name", ""),
        0 if client.stmts is None else len(client.stmts), client.ident)
    if debug:
        row += (0, 0, 0, 0, 0, client.framer.buffered, _unsent(client.transport))
    return row + (pin_reason(client),)


_SERVER_STATE = {ServerState.ACTIVE: "active", ServerState.IDLE: "idle",
                 ServerState.USED: "used", ServerState.TESTED: "tested",
                 ServerState.LOGIN: "new"}


def _addresses(transport: Any, port: int) -> tuple[str, int, str, int]:
    """addr, port, local_addr, local_port of a server socket."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    sock = transport.get_extra_info("sockname") if transport is not None else None
    addr, rport = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("unix", port)
    laddr, lport = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else ("unix", 0)
    return addr, rport, laddr, lport


def server_row(pooler: Pooler, server: ServerConnection, state: str, debug: bool) -> Row:
    pool = server.pool
    transport = server.transport
    addr, port, laddr, lport = _addresses(transport, pool.port)
    link = server.link
    app = link.params.get("application_name", "") if link is not None else ""
    row: Row = (
        "S", pool.server_user, pool.name, "none", state, addr, port, laddr, lport,
        _stamp(server.connect_time), _stamp(server.request_time), 0, 0,
        int(bool(server.close_needed)), _ptr(server), _ptr(link), server.pid,
        _tls_info(transport), app, 0 if server.stmts is None else len(server.stmts.prepared),
        server.ident)
    if debug:
        # NOTE: pkt_avail 0: a server has no Framer, and its BackendScanner does not tell how
        # many bytes it holds back.
        row += (0, 0, 0, 0, 0, 0, _unsent(transport))
    return row + (pin_reason(link),)


def replication_server_rows(pooler: Pooler) -> Iterator[Row]:
    """The servers of replication clients: each its client's own, never pooled."""
    for client, link in sorted(pooler.replication.items(), key=lambda i: i[0].connect_time):
        if not isinstance(link, ReplicationLink):
            continue
        server = link.server
        transport = server.transport
        addr, port, laddr, lport = _addresses(transport, link.pool.port)
        yield ("S", link.pool.server_user, link.pool.name, client.replication,
               "active" if link.logged_in else "new", addr, port, laddr, lport,
               _stamp(server.connect_time), _stamp(client.request_time), 0, 0, 0,
               _ptr(server), _ptr(client), server.pid, _tls_info(transport),
               link.startup.get("application_name", ""), 0, server.ident, "")


def _ordered_clients(pool: Pool) -> Iterator[tuple[Any, str]]:
    for c in sorted(pool.core.clients, key=lambda c: c.connect_time):
        yield c, "active"
    for c in pool.core.waiting:
        yield c, "waiting"


def _ordered_servers(pool: Pool) -> Iterator[tuple[Any, ServerState]]:
    core = pool.core
    for group in (sorted(core.active, key=lambda s: s.connect_time), core.idle, core.used,
                  sorted(core.tested, key=lambda s: s.connect_time),
                  sorted(core.login, key=lambda s: s.connect_time)):
        for s in group:
            yield s, s.server_state


def clients_rows(pooler: Pooler) -> Iterator[Row]:
    now = time.monotonic()
    for c in sorted(_admin_clients(pooler), key=lambda c: c.connect_time):
        yield client_row(pooler, c, "active", now, False)
    for pool in _pools(pooler):
        for c, state in _ordered_clients(pool):
            yield client_row(pooler, c, state, now, False)
    # NOTE: replication clients are in no pool's lists: their server is their own.
    for c in sorted(pooler.replication, key=lambda c: c.connect_time):
        yield client_row(pooler, c, "active" if c.phase is Phase.READY else "waiting", now,
                         False)


def servers_rows(pooler: Pooler) -> Iterator[Row]:
    for pool in _pools(pooler):
        for s, state in _ordered_servers(pool):
            yield server_row(pooler, s, _SERVER_STATE.get(state, "new"), False)
    yield from replication_server_rows(pooler)


def _socket_rows(pooler: Pooler, only_busy: bool) -> Iterator[Row]:
    now = time.monotonic()
    prefix = {ServerState.ACTIVE: "sv_active", ServerState.IDLE: "sv_idle",
              ServerState.USED: "sv_used", ServerState.TESTED: "sv_tested",
              ServerState.LOGIN: "sv_login"}
    rows: list[Row] = []
    for c in sorted(_admin_clients(pooler), key=lambda c: c.connect_time):
        rows.append(client_row(pooler, c, "cl_active", now, True))
    for pool in _pools(pooler):
        for c, state in _ordered_clients(pool):
            rows.append(client_row(pooler, c, "cl_" + state, now, True))
        for s, sstate in _ordered_servers(pool):
            rows.append(server_row(pooler, s, prefix.get(sstate, "sv_login"), True))
    for c in sorted(pooler.clients, key=lambda c: c.connect_time):
        if c.is_logging_in():
            rows.append(client_row(pooler, c, "cl_login", now, True))
    for row in rows:
        if not only_busy or row[-2] or row[-1]:
            yield row


def sockets_rows(pooler: Pooler) -> Iterator[Row]:
    return _socket_rows(pooler, only_busy=False)


def active_sockets_rows(pooler: Pooler) -> Iterator[Row]:
    return _socket_rows(pooler, only_busy=True)


# ---- SHOW FDS ---------------------------------------------------------------------------

# NOTE: PgBouncer's columns; `password` and the SCRAM keys are what its -R hands to the next
# process. pgmux has no -R and never shows a secret: they are NULL.
FDS = cols("issssiqisssssbb", "fd", "task", "user", "database", "addr", "port", "cancel",
           "link", "client_encoding", "std_strings", "datestyle", "timezone", "password",
           "scram_client_key", "scram_server_key")


def _fd(transport: Any) -> int | None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock.fileno() if sock is not None else None


def _cancel(key: tuple[int, int]) -> int:
    """The 8-byte cancel key as one signed int8 (pid, then secret)."""
    raw = b"".join((k & 0xFFFFFFFF).to_bytes(4, "big") for k in key)
    return int.from_bytes(raw, "big", signed=True)


def _fd_row(task: str, end: Any, user: str, db: str, params: dict[str, str],
            key: tuple[int, int], link: Any) -> Row | None:
    fd = _fd(end.transport)
    if fd is None or fd < 0:
        return None
    if task == "client":
        addr, port = end.addr, end.port
    else:
        peer = end.transport.get_extra_info("peername")
        addr, port = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else (
            "unix", end.pool.port)
    return (fd, task, user, db, addr, port, _cancel(key),
            _fd(link.transport) if link is not None else None,
            params.get("client_encoding"), params.get("standard_conforming_strings"),
            params.get("DateStyle"), params.get("TimeZone"), None, None, None)


def fds_rows(pooler: Pooler) -> Iterator[Row]:
    """PgBouncer's order: listening sockets, clients logging in, then per pool its clients
    and servers; console sessions left out."""
    for server in pooler.listener.servers:
        for sock in getattr(server, "sockets", None) or ():
            name = sock.getsockname()
            addr, port = (name[0], name[1]) if isinstance(name, tuple) else (
                "unix", pooler.settings.listen_port)
            yield (sock.fileno(), "pooler", None, None, addr, port, 0, None, None, None,
                   None, None, None, None, None)
    ends: list[Row | None] = []
    for c in sorted(pooler.clients, key=lambda c: c.connect_time):
        if c.is_logging_in():
            ends.append(_fd_row("client", c, c.user, c.dbname, c.params, c.cancel_key, None))
    for pool in _pools(pooler):
        for c, _ in _ordered_clients(pool):
            ends.append(_fd_row("client", c, c.user, c.dbname, c.params, c.cancel_key,
                                c.server))
        for s, _ in _ordered_servers(pool):
            ends.append(_fd_row("server", s, pool.server_user, pool.name, s.params,
                                (s.pid, s.key), s.link))
    yield from (row for row in ends if row is not None)


# ---- SHOW DATABASES / USERS / PEERS -----------------------------------------------------

DATABASES = cols("ssissiiiissiiiiii", "name", "host", "port", "database", "force_user",
                 "pool_size", "min_pool_size", "reserve_pool_size", "server_lifetime",
                 "pool_mode", "load_balance_hosts", "max_connections", "current_connections",
                 "max_client_connections", "current_client_connections", "paused",
                 "disabled")


def databases_rows(pooler: Pooler) -> Iterator[Row]:
    conf = pooler.config
    s = conf.settings
    ctl = pooler.control
    for name in _db_names(pooler):
        clients = [c for c in pooler.clients if c.dbname == name and
                   (c.pool is not None or (name == ADMIN_DB and c.admin is not None))]
        if name == ADMIN_DB:
            yield (ADMIN_DB, None, s.listen_port, ADMIN_DB, "pgbouncer", 2, 0, 0,
                   int(s.server_lifetime), "statement", None, s.max_db_connections, 0,
                   s.max_db_client_connections, len(clients), 0, 0)
            continue
        db = conf.database(name)
        if db is None:
            continue
        servers = sum(p.core.server_count for p in pooler.pools.values() if p.name == name)
        size = db.pool_size if db.pool_size is not None and db.pool_size != POOL_SIZE_AUTO \
            else s.default_pool_size
        if db.pool_size == POOL_SIZE_AUTO:
            sizes = [p.core.limits.pool_size for p in pooler.pools.values() if p.name == name]
            size = max(sizes, default=size)
        lifetime = db.server_lifetime if db.server_lifetime else s.server_lifetime
        yield (name, db.host, db.port, db.dbname or name, db.user, size,
               db.min_pool_size if db.min_pool_size is not None else s.min_pool_size,
               db.reserve_pool_size if db.reserve_pool_size is not None
               else s.reserve_pool_size,
               int(lifetime), db.pool_mode,
               db.load_balance_hosts if db.host and "," in db.host else None,
               db.max_db_connections or s.max_db_connections, servers,
               db.max_db_client_connections or s.max_db_client_connections, len(clients),
               int(ctl.db_paused(name)), int(name in ctl.disabled_dbs))


USERS = cols("ssssiiii", "name", "pool_size", "reserve_pool_size", "pool_mode",
             "max_user_connections", "current_connections", "max_user_client_connections",
             "current_client_connections")


def users_rows(pooler: Pooler) -> Iterator[Row]:
    conf = pooler.config
    s = conf.settings
    names = set(conf.userlist) | set(conf.users) | {p.server_user for p in pooler.pools.values()}
    names |= {c.user for c in pooler.clients if c.pool is not None}
    names.add("pgbouncer")
    for name in sorted(names):
        u = conf.users.get(name)
        servers = sum(p.core.server_count for p in pooler.pools.values()
                      if p.server_user == name)
        clients = sum(1 for c in pooler.clients if c.user == name and c.pool is not None)
        yield (name,
               str(u.pool_size) if u is not None and u.pool_size is not None else None,
               str(u.reserve_pool_size) if u is not None and u.reserve_pool_size is not None
               else None,
               u.pool_mode if u is not None else None,
               (u.max_user_connections if u and u.max_user_connections else 0)
               or s.max_user_connections, servers,
               (u.max_user_client_connections if u and u.max_user_client_connections else 0)
               or s.max_user_client_connections, clients)


PEERS = cols("isii", "peer_id", "host", "port", "pool_size")


def peers_rows(pooler: Pooler) -> Iterator[Row]:
    s = pooler.settings
    for pid in sorted(pooler.config.peers):
        peer = pooler.config.peers[pid]
        yield (pid, peer.host, peer.port,
               peer.pool_size if peer.pool_size is not None else s.default_pool_size)


PEER_POOLS = cols("iiiii", "peer_id", "cl_active_cancel_req", "cl_waiting_cancel_req",
                  "sv_active_cancel", "sv_login")


def _none(pooler: Pooler) -> Iterator[Row]:
    return iter(())


# ---- SHOW STATS family ------------------------------------------------------------------

_TOTAL_FIELDS = ("server_assignment_count", "xact_count", "query_count", "bytes_received",
                 "bytes_sent", "xact_time", "query_time", "wait_time", "client_parse_count",
                 "server_parse_count", "bind_count")
_AVG_FIELDS = ("server_assignment_count", "xact_count", "query_count", "recv", "sent",
               "xact_time", "query_time", "wait_time", "client_parse_count",
               "server_parse_count", "bind_count")
_STATS_TOTAL_NAMES = ("total_server_assignment_count", "total_xact_count", "total_query_count",
                      "total_received", "total_sent", "total_xact_time", "total_query_time",
                      "total_wait_time", "total_client_parse_count", "total_server_parse_count",
                      "total_bind_count")
_STATS_AVG_NAMES = ("avg_server_assignment_count", "avg_xact_count", "avg_query_count",
                    "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
                    "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count")
STATS = cols("s" + "N" * 22, "database", *_STATS_TOTAL_NAMES, *_STATS_AVG_NAMES)
STATS_TOTALS = cols("s" + "N" * 11, "database", "server_assignment_count", "xact_count",
                    "query_count", "bytes_received", "bytes_sent", "xact_time", "query_time",
                    "wait_time", "client_parse_count", "server_parse_count", "bind_count")
STATS_AVERAGES = cols("s" + "N" * 11, "database", "server_assignment_count", "xact_count",
                      "query_count", "bytes_received", "bytes_sent", "xact_time", "query_time",
                      "wait_time", "avg_client_parse_count", "avg_server_parse_count",
                      "avg_bind_count")
TOTALS = cols("sN", "name", "value")


def _by_database(pooler: Pooler) -> list[tuple[str, Counters, period.Averages]]:
    tracker = period.tracker(pooler)
    groups: dict[str, list[tuple[str, str]]] = {ADMIN_DB: []}
    for key, pool in pooler.pools.items():
        groups.setdefault(pool.name, []).append(key)
    out = []
    for name in sorted(groups):
        keys = groups[name]
        totals = period.total(pooler.pools[k].stats for k in keys)
        out.append((name, totals, tracker.averages(keys)))
    return out


def stats_rows(pooler: Pooler) -> Iterator[Row]:
    for name, t, a in _by_database(pooler):
        yield (name, *(getattr(t, f) for f in _TOTAL_FIELDS),
               *(getattr(a, f) for f in _AVG_FIELDS))


def stats_totals_rows(pooler: Pooler) -> Iterator[Row]:
    for name, t, _ in _by_database(pooler):
        yield (name, *(getattr(t, f) for f in _TOTAL_FIELDS))


def stats_averages_rows(pooler: Pooler) -> Iterator[Row]:
    for name, _, a in _by_database(pooler):
        yield (name, *(getattr(a, f) for f in _AVG_FIELDS))


# NOTE: SHOW TOTALS names its rows after PgBouncer's struct fields, hence the odd spellings.
_TOTALS_NAMES = ("server_assignment_count", "xact_count", "query_count", "client_bytes",
                 "server_bytes", "xact_time", "query_time", "wait_time",
                 "ps_client_parse_count", "ps_server_parse_count", "ps_bind_count")


def totals_rows(pooler: Pooler) -> Iterator[Row]:
    t = period.total(p.stats for p in pooler.pools.values())
    a = period.tracker(pooler).all_averages()
    for label, f in zip(_TOTALS_NAMES, _TOTAL_FIELDS, strict=True):
        yield (f"total_{label}", getattr(t, f))
    for label, f in zip(_TOTALS_NAMES, _AVG_FIELDS, strict=True):
        yield (f"avg_{label}", getattr(a, f))


# ---- SHOW LISTS / MEM / STATE / DNS / VERSION / CONFIG ----------------------------------

LISTS = cols("si", "list", "items")


def lists_rows(pooler: Pooler) -> Iterator[Row]:
    servers = sum(p.core.server_count for p in pooler.pools.values())
    users = sum(1 for _ in users_rows(pooler))
    login = sum(1 for c in pooler.clients if c.is_logging_in())
    yield from (("databases", len(_db_names(pooler))), ("users", users),
                ("peers", len(pooler.config.peers)), ("pools", len(pooler.pools) + 1),
                ("peer_pools", 0), ("free_clients", 0), ("used_clients", len(pooler.clients)),
                ("login_clients", login), ("free_servers", 0), ("used_servers", servers),
                ("dns_names", 0), ("dns_zones", 0), ("dns_queries", 0), ("dns_pending", 0))


MEM = cols("siiii", "name", "size", "used", "free", "memtotal")


def mem_rows(pooler: Pooler) -> Iterator[Row]:
    servers = [s for p in pooler.pools.values() for s in p.core.servers()]
    clients = list(pooler.clients)
    groups: list[tuple[str, list[Any]]] = [
        ("user_cache", list(users_rows(pooler))), ("db_cache", _db_names(pooler)),
        ("pool_cache", list(pooler.pools.values())), ("server_cache", servers),
        ("client_cache", clients)]
    for name, objs in groups:
        size = max((sys.getsizeof(o) + sys.getsizeof(getattr(o, "__dict__", {}))
                    for o in objs[:1]), default=0)
        yield (name, size, len(objs), 0, size * len(objs))


STATE = cols("ss", "key", "value")


def state_rows(pooler: Pooler) -> Iterator[Row]:
    ctl = pooler.control
    yield ("active", "no" if ctl.paused or ctl.suspended else "yes")
    yield ("paused", "yes" if ctl.paused else "no")
    yield ("suspended", "yes" if ctl.suspended else "no")


DNS_HOSTS = cols("sqs", "hostname", "ttl", "addrs")
DNS_ZONES = cols("sqi", "zonename", "serial", "count")
VERSION = cols("s", "version")


def version_rows(pooler: Pooler) -> Iterator[Row]:
    from pgmux.cli.main import version_line

    yield (version_line(),)


CONFIG = cols("ssss", "key", "value", "default", "changeable")


def config_value(value: Any) -> str:
    """A setting as PgBouncer prints it: booleans 1/0, times in seconds, lists comma-joined."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value == int(value) else repr(value)
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def config_rows(pooler: Pooler) -> Iterator[Row]:
    s = pooler.settings
    for f in sorted(dataclasses.fields(Settings), key=lambda f: f.name):
        value = getattr(s, f.name)
        default = f.default
        if f.name == "unix_socket_mode":
            shown, shown_default = f"0{value:o}", f"0{default:o}"
        else:
            shown, shown_default = config_value(value), config_value(default)
        yield (f.name, shown, shown_default, "no" if f.name in NOT_RELOADABLE else "yes")


# ---- the table --------------------------------------------------------------------------

SHOWS: dict[str, Show] = {
    "active_sockets": Show(SOCKET_DEBUG, active_sockets_rows),
    "clients": Show(SOCKET, clients_rows),
    "config": Show(CONFIG, config_rows),
    "databases": Show(DATABASES, databases_rows),
    "dns_hosts": Show(DNS_HOSTS, _none),
    "dns_zones": Show(DNS_ZONES, _none),
    "fds": Show(FDS, fds_rows),
    "lists": Show(LISTS, lists_rows),
    "mem": Show(MEM, mem_rows),
    "peer_pools": Show(PEER_POOLS, _none),
    "peers": Show(PEERS, peers_rows),
    "pools": Show(POOLS, pools_rows),
    "servers": Show(SOCKET, servers_rows),
    "sockets": Show(SOCKET_DEBUG, sockets_rows),
    "state": Show(STATE, state_rows),
    "stats": Show(STATS, stats_rows),
    "stats_averages": Show(STATS_AVERAGES, stats_averages_rows),
    "stats_totals": Show(STATS_TOTALS, stats_totals_rows),
    "totals": Show(TOTALS, totals_rows),
    "users": Show(USERS, users_rows),
    "version": Show(VERSION, version_rows),
}

# Server parameters some drivers SHOW or SET on connect; the console fakes them (as PgBouncer).
FAKE_PARAMS = {"client_encoding": "UTF-8", "default_transaction_isolation": "read committed",
               "standard_conforming_strings": "on", "datestyle": "ISO", "timezone": "GMT"}
