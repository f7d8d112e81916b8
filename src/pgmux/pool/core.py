"""The synchronous decision core of one pool: idle stack, FIFO waiters, limits and the hand-off
of a released server to the first waiter. No I/O, no clocks: callers pass the time in."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Protocol, TypeVar


class ServerState(Enum):
    LOGIN = "login"      # connecting / authenticating
    IDLE = "idle"        # ready, in the idle stack
    ACTIVE = "active"    # linked to a client
    USED = "used"        # released but needs a reset query before reuse
    TESTED = "tested"    # running a reset/check query
    CLOSED = "closed"


class ClientState(Enum):
    """Where a client sits in its pool; the connection's own lifecycle (login, closed) is the
    proxy's `phase`, not kept here a second time."""

    OUT = "out"          # not in a pool: logging in, or gone
    ACTIVE = "active"    # logged in, linked or not, not waiting
    WAITING = "waiting"  # queued for a server


# NOTE: on Python 3.11 an Enum member lookup goes through EnumType.__getattr__ (4x a plain
# attribute); the hot paths use these module constants.
_ACTIVE, _IDLE = ServerState.ACTIVE, ServerState.IDLE
_C_ACTIVE, _C_WAITING = ClientState.ACTIVE, ClientState.WAITING


class HasServerState(Protocol):
    server_state: ServerState


class HasClientState(Protocol):
    client_state: ClientState
    wait_start: float


S = TypeVar("S", bound=HasServerState)
C = TypeVar("C", bound=HasClientState)


@dataclass(slots=True)
class PoolLimits:
    """Limits of one pool; 0 means unlimited where PgBouncer says so."""

    pool_size: int
    reserve_pool_size: int = 0
    reserve_pool_timeout: float = 5.0
    min_pool_size: int = 0
    server_lifetime: float = 0.0   # [databases] server_lifetime, else the global one; 0: none


class PoolCore(Generic[S, C]):
    """State of one (database, user) pool; every state is a container, counts are lengths.

    The only writer of `server_state`, `client_state`, `wait_start` and the containers;
    `paused` is written by the operator's verbs alone (proxy/control.py).
    """

    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self.idle: list[S] = []            # NOTE: LIFO, so hot servers stay hot
        self.active: set[S] = set()
        self.used: list[S] = []
        self.tested: set[S] = set()
        self.login: set[S] = set()
        self.waiting: deque[C] = deque()   # FIFO
        self.clients: set[C] = set()       # logged-in clients not waiting
        self.paused = False

    # ---- derived numbers (SHOW POOLS) ---------------------------------------------------
    @property
    def server_count(self) -> int:
        return len(self.idle) + len(self.active) + len(self.used) + len(self.tested) + len(
            self.login)

    def servers(self) -> Iterator[S]:
        yield from self.active
        yield from self.idle
        yield from self.used
        yield from self.tested
        yield from self.login

    def max_wait(self, now: float) -> float:
        return now - self.waiting[0].wait_start if self.waiting else 0.0

    # ---- clients ------------------------------------------------------------------------
    def add_client(self, client: C) -> None:
        client.client_state = ClientState.ACTIVE
        self.clients.add(client)

    def remove_client(self, client: C) -> None:
        if client.client_state is ClientState.WAITING:
            try:
                self.waiting.remove(client)
            except ValueError:
                pass
        self.clients.discard(client)
        client.client_state = ClientState.OUT

    # ---- servers ------------------------------------------------------------------------
    def _move(self, server: S, state: ServerState) -> None:
        """The one place a server changes state: leave the old container, join the new one."""
        old = server.server_state
        if old is ServerState.IDLE:
            try:
                self.idle.remove(server)
            except ValueError:
                pass
        elif old is ServerState.ACTIVE:
            self.active.discard(server)
        elif old is ServerState.USED:
            try:
                self.used.remove(server)
            except ValueError:
                pass
        elif old is ServerState.TESTED:
            self.tested.discard(server)
        elif old is ServerState.LOGIN:
            self.login.discard(server)
        server.server_state = state
        if state is ServerState.IDLE:
            self.idle.append(server)
        elif state is ServerState.ACTIVE:
            self.active.add(server)
        elif state is ServerState.USED:
            self.used.append(server)
        elif state is ServerState.TESTED:
            self.tested.add(server)
        elif state is ServerState.LOGIN:
            self.login.add(server)

    def find_server(self, client: C, now: float) -> S | None:
        """Take an idle server for client, or queue client (FIFO) and return None."""
        if self.idle and not self.paused and not self.waiting:
            # NOTE: the hot path of every transaction; IDLE -> ACTIVE written out in place.
            server = self.idle.pop()
            server.server_state = _ACTIVE
            self.active.add(server)
            return server
        if client.client_state is not _C_WAITING:
            client.client_state = _C_WAITING
            client.wait_start = now
            self.clients.discard(client)
            self.waiting.append(client)
        return None

    def unwait(self, client: C) -> None:
        """Take a client off the waiting queue (timeout, disconnect)."""
        if client.client_state is ClientState.WAITING:
            try:
                self.waiting.remove(client)
            except ValueError:
                pass
            client.client_state = ClientState.ACTIVE
            self.clients.add(client)

    def release_server(self, server: S) -> C | None:
        """A server became ready (released, reset or newly logged in).

        Returns the first waiter, now owning the server (state ACTIVE), or None after the server
        went to the idle stack.
        """
        if self.waiting and not self.paused:
            client = self.waiting.popleft()
            client.client_state = _C_ACTIVE
            self.clients.add(client)
            if server.server_state is not _ACTIVE:
                self._move(server, _ACTIVE)
            return client
        if server.server_state is _ACTIVE:
            # NOTE: the hot path of every transaction; ACTIVE -> IDLE written out in place.
            self.active.discard(server)
            server.server_state = _IDLE
            self.idle.append(server)
            return None
        self._move(server, _IDLE)
        return None

    def add_server(self, server: S) -> None:
        server.server_state = ServerState.CLOSED
        self._move(server, ServerState.LOGIN)

    def mark_used(self, server: S) -> None:
        self._move(server, ServerState.USED)

    def mark_tested(self, server: S) -> None:
        self._move(server, ServerState.TESTED)

    def remove_server(self, server: S) -> None:
        self._move(server, ServerState.CLOSED)

    # ---- launch decisions ---------------------------------------------------------------
    def wanted_launches(self, now: float, db_room: int, user_room: int) -> int:
        """How many new server connections to start now.

        db_room/user_room: how many more the database/user limits allow (a large number when
        unlimited). Waiters that are not served by idle, login or used servers get one each,
        up to pool_size, or up to pool_size + reserve_pool_size once the oldest waiter has
        waited reserve_pool_timeout (as in PgBouncer, reserve_pool_timeout = 0 disables the
        reserve pool).
        """
        if self.paused:
            return 0
        lim = self.limits
        cap = lim.pool_size
        if lim.reserve_pool_size > 0 and lim.reserve_pool_timeout > 0 and self.waiting and (
                now - self.waiting[0].wait_start >= lim.reserve_pool_timeout):
            cap += lim.reserve_pool_size
        have = self.server_count
        need = len(self.waiting) - len(self.login) - len(self.used) - len(self.tested)
        need = max(need, lim.min_pool_size - have)
        room = min(cap - have, db_room, user_room)
        return max(0, min(need, room))
