"""The pool's synchronous core: idle stack, FIFO waiters, hand-off, limits; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from pgmux.pool.core import ClientState, PoolCore, PoolLimits, ServerState


@dataclass(eq=False)
class Srv:
    name: str
    server_state: ServerState = ServerState.CLOSED


@dataclass(eq=False)
class Cli:
    name: str
    client_state: ClientState = ClientState.OUT
    wait_start: float = field(default=0.0)


def ready_pool(n: int, size: int = 3) -> tuple[PoolCore[Srv, Cli], list[Srv]]:
    core: PoolCore[Srv, Cli] = PoolCore(PoolLimits(pool_size=size))
    servers = [Srv(f"s{i}") for i in range(n)]
    for s in servers:
        core.add_server(s)
        assert core.release_server(s) is None
    return core, servers


def test_idle_server_is_taken_lifo() -> None:
    core, servers = ready_pool(2)
    c = Cli("c")
    core.add_client(c)
    assert core.find_server(c, 0.0) is servers[1]
    assert servers[1].server_state is ServerState.ACTIVE
    assert len(core.idle) == 1 and len(core.active) == 1


def test_waiters_are_fifo_and_get_released_servers_directly() -> None:
    core, servers = ready_pool(1)
    a, b, c = Cli("a"), Cli("b"), Cli("c")
    for x in (a, b, c):
        core.add_client(x)
    assert core.find_server(a, 0.0) is servers[0]
    assert core.find_server(b, 1.0) is None
    assert core.find_server(c, 2.0) is None
    assert [w.name for w in core.waiting] == ["b", "c"]
    assert core.max_wait(3.0) == 2.0
    assert core.release_server(servers[0]) is b  # hand-off, never idle in between
    assert servers[0].server_state is ServerState.ACTIVE and not core.idle
    assert core.release_server(servers[0]) is c
    assert core.release_server(servers[0]) is None
    assert core.idle == [servers[0]]


def test_newcomer_does_not_jump_the_queue() -> None:
    core, servers = ready_pool(1)
    a, b = Cli("a"), Cli("b")
    core.find_server(a, 0.0)
    core.find_server(b, 0.0)
    # b waits; a released server goes to b even if a third client asks first.
    assert core.release_server(servers[0]) is b


def test_wanted_launches_respect_pool_size_and_rooms() -> None:
    core: PoolCore[Srv, Cli] = PoolCore(PoolLimits(pool_size=3))
    waiters = [Cli(str(i)) for i in range(5)]
    for w in waiters:
        assert core.find_server(w, 0.0) is None
    assert core.wanted_launches(0.0, 100, 100) == 3
    assert core.wanted_launches(0.0, 2, 100) == 2
    assert core.wanted_launches(0.0, 100, 1) == 1
    s = Srv("s")
    core.add_server(s)  # one logging in already counts
    assert core.wanted_launches(0.0, 100, 100) == 2


def test_reserve_pool_after_timeout() -> None:
    core: PoolCore[Srv, Cli] = PoolCore(PoolLimits(pool_size=1, reserve_pool_size=2,
                                                   reserve_pool_timeout=5.0))
    s = Srv("s")
    core.add_server(s)
    core.release_server(s)
    a, b, c = Cli("a"), Cli("b"), Cli("c")
    core.find_server(a, 0.0)
    core.find_server(b, 0.0)
    core.find_server(c, 0.0)
    assert core.wanted_launches(1.0, 100, 100) == 0
    assert core.wanted_launches(5.0, 100, 100) == 2


def test_counts_are_container_lengths() -> None:
    core, servers = ready_pool(3)
    c = Cli("c")
    core.find_server(c, 0.0)
    core.mark_used(servers[0])
    assert core.server_count == 3
    assert len(core.used) == 1 and len(core.idle) == 1 and len(core.active) == 1
    core.remove_server(servers[0])
    assert core.server_count == 2 and servers[0].server_state is ServerState.CLOSED


def test_unwait_and_remove_client() -> None:
    core, _ = ready_pool(0)
    a = Cli("a")
    core.add_client(a)
    core.find_server(a, 0.0)
    assert a.client_state is ClientState.WAITING
    core.unwait(a)
    assert a.client_state is ClientState.ACTIVE and not core.waiting
    core.find_server(a, 0.0)
    core.remove_client(a)
    assert not core.waiting and a.client_state is ClientState.OUT


def test_paused_pool_hands_out_nothing() -> None:
    core, servers = ready_pool(1)
    core.paused = True
    a = Cli("a")
    assert core.find_server(a, 0.0) is None
    assert core.wanted_launches(0.0, 100, 100) == 0
    core.paused = False
    assert core.release_server(servers[0]) is a
