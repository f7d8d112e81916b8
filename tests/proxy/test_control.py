"""Control verbs on a pooler without I/O: reload applied to existing pools (size, mode),
SET, DISABLE refusals, shutdown modes, socket ids, the pause flag of each pool core."""

from __future__ import annotations

import dataclasses
import logging
from types import MappingProxyType
from typing import Any

import pytest

from pgmux.config import Config, DatabaseConfig
from pgmux.config.settings import Settings
from pgmux.pool.core import ServerState
from pgmux.proxy.client import ClientConnection
from pgmux.proxy.control import WAIT_FOR_CLIENTS, ControlError
from pgmux.proxy.pooler import Pooler
from pgmux.proxy.server import ServerConnection
from tests.proxy.harness import FakeTransport


def real_server(pool: Any, t: float) -> ServerConnection:
    """A server object on a fake transport: its close reason says how it went."""
    server = ServerConnection(pool_owner(pool), pool)
    server.transport = FakeTransport()  # type: ignore[assignment]
    server.connect_time = t
    return server


def config(size: int, mode: str = "transaction") -> Config:
    db = DatabaseConfig("app", host="127.0.0.1", port=5432, dbname="app")
    return Config(settings=Settings(default_pool_size=size, pool_mode=mode),
                  databases=MappingProxyType({"app": db}))


_OWNERS: dict[int, Pooler] = {}


def pool_owner(pool: Any) -> Pooler:
    return _OWNERS[id(pool)]


def pool_with_servers(p: Pooler, active: int, idle: int) -> tuple[Any, list[ServerConnection]]:
    db = p.config.database("app")
    assert db is not None
    pool = p.get_pool(db, "u")
    _OWNERS[id(pool)] = p
    servers = [real_server(pool, float(i)) for i in range(active + idle)]
    for s in servers:
        pool.core.add_server(s)
    for s in servers[:active]:
        pool.core._move(s, ServerState.ACTIVE)
    for s in servers[active:]:
        pool.core.release_server(s)
    return pool, servers


def test_reload_shrinks_a_running_pool() -> None:
    p = Pooler(config(10))
    pool, servers = pool_with_servers(p, active=4, idle=4)
    p.control.apply_config(config(3))
    assert pool.core.limits.pool_size == 3
    # idle ones go now, then enough active ones are marked to close when released
    assert [s.close_reason for s in servers[4:]] == ["too many servers in the pool"] * 4
    assert all(s.server_state is ServerState.CLOSED for s in servers[4:])
    marked = [s for s in servers[:4] if s.close_needed]
    assert len(marked) == 1 and marked[0].close_needed == "too many servers in the pool"
    p.control.apply_config(config(3))  # idempotent: nothing more is marked
    assert len([s for s in servers[:4] if s.close_needed]) == 1


def test_reload_changes_mode_of_clients_without_a_server() -> None:
    p = Pooler(config(10, "transaction"))
    pool, _ = pool_with_servers(p, active=0, idle=0)

    class C:
        def __init__(self, linked: bool) -> None:
            self.pool, self.server = pool, (object() if linked else None)
            self.pool_mode, self.watch_session = "transaction", True

        def adopt_mode(self, mode: str) -> None:
            self.pool_mode, self.watch_session = mode, mode != "session"

    free, busy = C(False), C(True)
    p.clients.update({free, busy})  # type: ignore[arg-type]
    p.control.apply_config(config(10, "session"))
    assert pool.pool_mode == "session"
    assert (free.pool_mode, free.watch_session) == ("session", False)
    assert busy.pool_mode == "transaction"  # keeps its server's mode until released


def test_not_reloadable_settings_are_kept() -> None:
    p = Pooler(config(10))
    new = config(10)
    new = dataclasses.replace(new, settings=dataclasses.replace(new.settings,
                                                                listen_port=7777))
    p.control.apply_config(new)
    assert p.settings.listen_port == 6432


def test_set_setting() -> None:
    p = Pooler(config(10))
    p.control.set_setting("default_pool_size", "4")
    assert p.settings.default_pool_size == 4
    for key, value in (("listen_port", "1"), ("nope", "1"), ("default_pool_size", "x")):
        with pytest.raises(ControlError, match="SET failed"):
            p.control.set_setting(key, value)


def test_disable_and_shutdown_refuse_logins_but_not_the_console() -> None:
    p = Pooler(config(10))
    ctl = p.control
    ctl.disable("app")
    assert ctl.refuse_login("app") == ("database does not allow connections: app", "08P01")
    ctl.enable("app")
    assert ctl.refuse_login("app") is None
    with pytest.raises(ControlError, match="no such database: nope"):
        ctl.disable("nope")
    ctl.shutdown(WAIT_FOR_CLIENTS)
    assert ctl.refuse_login("app") == ("server shutting down", "57P01")
    assert ctl.refuse_login("pgbouncer") is None
    with pytest.raises(ControlError, match="pooler is shutting down"):
        ctl.resume()


def test_socket_ids_follow_connect_order_and_kill_client_finds_them() -> None:
    class Transport:
        closed = False

        def write(self, data: bytes) -> None: ...

        def close(self) -> None:
            self.closed = True

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 5555) if name in ("peername", "sockname") else default

    p = Pooler(config(10))
    a, b, c = ClientConnection(p), ClientConnection(p), ClientConnection(p)
    assert (a.ident, b.ident, c.ident) == (1, 2, 3)
    for client in (a, b, c):
        client.connection_made(Transport())  # type: ignore[arg-type]
    p.control.kill_client("2")
    assert b.close_reason == "admin forced disconnect" and b not in p.clients
    assert a in p.clients and c in p.clients
    with pytest.raises(ControlError, match="client not found"):
        p.control.kill_client("9")


def test_pause_state_lives_in_control_and_each_core_follows_it() -> None:
    p = Pooler(config(10))
    pool, _ = pool_with_servers(p, active=0, idle=0)
    p.control.pause("app")
    assert pool.core.paused and p.control.paused_dbs == {"app"} and not p.control.paused
    # a pool made during the pause starts paused
    db = p.config.database("app")
    assert db is not None
    other = p.get_pool(db, "v")
    assert other.core.paused
    p.control.resume("app")
    assert not pool.core.paused and not other.core.paused
    p.control.pause()
    assert p.control.paused and pool.core.paused
    p.control.resume()
    assert not p.control.paused and not pool.core.paused


def test_reload_logs_the_new_files_warnings(caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("pgmux"), "propagate", True)  # NOTE: for caplog
    p = Pooler(config(10))
    new = dataclasses.replace(config(10), warnings=(
        'p.ini:3: setting "dns_max_ttl" is not supported by pgmux and is ignored: why',))
    p.control.reload_fn = lambda: new
    with caplog.at_level(logging.WARNING, logger="pgmux"):
        assert p.control.reload()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        'p.ini:3: setting "dns_max_ttl" is not supported by pgmux and is ignored: why']
