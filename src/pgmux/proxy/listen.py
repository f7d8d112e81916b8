"""Where clients come in: the TCP listeners, the Unix socket file (its mode and group) and the
pidfile; a port, socket or pidfile held by a live process stops the start, a stale one is
taken over (a live socket too with so_reuseport, for a rolling restart). Listening sockets
may also be handed over ready-made (workers: the supervisor binds them once, bind_sockets).

Owns the listening servers and the files it created (it removes only those, and only while
they are still its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgmux.proxy import sockopts

if TYPE_CHECKING:
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")


class StartError(OSError):
    """The pooler cannot start: the message says why, in the operator's terms."""


def socket_path(directory: str, port: int) -> str:
    return os.path.join(directory, f".s.PGSQL.{port}")


def pid_alive(pid: int) -> bool:
    """Whether process pid exists (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_pidfile(path: str) -> None:
    """Refuse to start while the pidfile names a live process; remove a stale one."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartError(f"could not read pidfile {path}: {exc.strerror}") from None
    try:
        pid = int(text.split()[0]) if text else 0
    except ValueError:
        pid = 0
    if pid and pid != os.getpid() and pid_alive(pid):
        raise StartError(f"pidfile exists, another instance running? ({path}, pid {pid})")
    log.info("stale pidfile, removing: %s", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def check_unix_socket(path: str, take_over: bool = False) -> None:
    """Refuse to start while a live process accepts on the socket; remove a stale file. With
    take_over (so_reuseport: a new pgmux starting next to the old one on purpose), a live
    socket's file is replaced: new clients come to us, the old process keeps its own."""
    if not os.path.lexists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            log.info("removing stale unix socket: %s", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        raise StartError(f"unix socket {path} is in use or unusable: {exc.strerror}") from None
    finally:
        probe.close()
    if take_over:
        log.info("unix socket %s is in use: taking it over (so_reuseport)", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    raise StartError(f"unix socket is in use by another process: {path}")


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _remove_own(owned: list[tuple[str, tuple[int, int] | None]]) -> None:
    """Remove the files we made, unless another process has replaced them since (a successor
    that took the Unix socket over)."""
    for path, made in owned:
        if made is None or _file_id(path) == made:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _own_unix_socket(path: str, settings: Any) -> None:
    """Give the socket file unix_socket_mode and unix_socket_group."""
    # NOTE: unix_socket_mode is already an int (parsed as octal from the file).
    os.chmod(path, settings.unix_socket_mode)
    if settings.unix_socket_group:
        try:
            gid = grp.getgrnam(settings.unix_socket_group).gr_gid
        except KeyError:
            raise StartError(f"unix_socket_group: no such group: "
                             f"{settings.unix_socket_group}") from None
        try:
            os.chown(path, -1, gid)
        except OSError as exc:
            raise StartError(f"unix_socket_group {settings.unix_socket_group}: cannot give "
                             f"it {path}: {exc.strerror}") from None


def _write_pidfile(path: str) -> tuple[str, tuple[int, int] | None]:
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    return path, _file_id(path)


@dataclass
class Bound:
    """Listening sockets bound ahead of any event loop (for workers), and the files made."""

    sockets: list[socket.socket] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    owned: list[tuple[str, tuple[int, int] | None]] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def remove_files(self) -> None:
        owned, self.owned = self.owned, []
        _remove_own(owned)


def _tcp_sockets(addr: str, settings: Any) -> list[socket.socket]:
    host = None if addr == "*" else addr
    out: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, settings.listen_port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if settings.so_reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(settings.listen_backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in out:
            sock.close()
        raise StartError(f"could not listen on {addr}:{settings.listen_port}: "
                         f"{exc.strerror or exc}") from None
    return out


def bind_sockets(settings: Any) -> Bound:
    """Check the pidfile, bind listen_addr:listen_port and the Unix socket, write the pidfile
    (our pid): what `workers = N` hands every worker. Raises StartError, everything undone."""
    bound = Bound()
    try:
        if settings.pidfile:
            check_pidfile(settings.pidfile)
        for addr in [a.strip() for a in (settings.listen_addr or "").split(",") if a.strip()]:
            bound.sockets += _tcp_sockets(addr, settings)
            bound.where.append(f"{addr}:{settings.listen_port}")
        if settings.unix_socket_dir:
            path = socket_path(settings.unix_socket_dir, settings.listen_port)
            check_unix_socket(path, take_over=settings.so_reuseport)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            bound.sockets.append(sock)
            try:
                sock.bind(path)
            except OSError as exc:
                raise StartError(f"could not listen on unix socket {path}: "
                                 f"{exc.strerror or exc}") from None
            bound.owned.append((path, _file_id(path)))
            _own_unix_socket(path, settings)
            sock.listen(settings.listen_backlog)
            sock.setblocking(False)
            bound.where.append(f"unix:{path}")
        if settings.pidfile:
            bound.owned.append(_write_pidfile(settings.pidfile))
    except BaseException:
        bound.close()
        bound.remove_files()
        raise
    return bound


class Listener:
    """Listening sockets and the pidfile of one pooler."""

    __slots__ = ("pooler", "servers", "_owned")

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self.servers: list[asyncio.AbstractServer] = []
        # files this process made (and their identity then): removed when it stops
        self._owned: list[tuple[str, tuple[int, int] | None]] = []

    @property
    def unix_socket_path(self) -> str | None:
        s = self.pooler.settings
        return socket_path(s.unix_socket_dir, s.listen_port) if s.unix_socket_dir else None

    async def start(self, factory: Callable[[], ClientConnection],
                    ready: list[socket.socket] | None = None) -> list[str]:
        """Listen on listen_addr:listen_port and the Unix socket, then write the pidfile; or,
        given `ready` sockets (a worker's, bound by its supervisor), accept on those.
        Returns the places listened on, for the start-up log line. Raises StartError."""
        loop = asyncio.get_running_loop()
        s = self.pooler.settings
        if ready is not None:
            return await self._adopt(loop, factory, ready)
        if s.pidfile:
            check_pidfile(s.pidfile)
        where: list[str] = []
        addrs = [a.strip() for a in (s.listen_addr or "").split(",") if a.strip()]
        try:
            for addr in addrs:
                host = None if addr == "*" else addr
                try:
                    server = await loop.create_server(
                        factory, host, s.listen_port, reuse_address=True,
                        reuse_port=s.so_reuseport or None, backlog=s.listen_backlog)
                except OSError as exc:
                    raise StartError(f"could not listen on {addr}:{s.listen_port}: "
                                     f"{exc.strerror or exc}") from None
                self.servers.append(server)
                where.append(f"{addr}:{s.listen_port}")
            path = self.unix_socket_path
            if path:
                await self._listen_unix(loop, factory, path)
                where.append(f"unix:{path}")
            if s.pidfile:
                self._owned.append(_write_pidfile(s.pidfile))
        except BaseException:
            self.stop()
            raise
        self.tune()
        return where

    async def _adopt(self, loop: asyncio.AbstractEventLoop,
                     factory: Callable[[], ClientConnection],
                     ready: list[socket.socket]) -> list[str]:
        where: list[str] = []
        try:
            for sock in ready:
                if sock.family == socket.AF_UNIX:
                    server = await loop.create_unix_server(factory, sock=sock)
                    where.append(f"unix:{sock.getsockname()}")
                else:
                    server = await loop.create_server(factory, sock=sock)
                    host, port = sock.getsockname()[:2]
                    where.append(f"{host}:{port}")
                self.servers.append(server)
        except BaseException:
            self.stop()
            raise
        self.tune()
        return where

    async def _listen_unix(self, loop: asyncio.AbstractEventLoop,
                           factory: Callable[[], ClientConnection], path: str) -> None:
        s = self.pooler.settings
        check_unix_socket(path, take_over=s.so_reuseport)
        try:
            server = await loop.create_unix_server(factory, path, backlog=s.listen_backlog)
        except OSError as exc:
            raise StartError(f"could not listen on unix socket {path}: "
                             f"{exc.strerror or exc}") from None
        self.servers.append(server)
        self._owned.append((path, _file_id(path)))
        _own_unix_socket(path, s)

    def tune(self) -> None:
        """Set the tcp_* settings on the TCP listening sockets (at start and on RELOAD).

        NOTE: an accepted socket inherits them from its listener (Linux and the BSDs), so
        clients get them without a system call per connection."""
        options = sockopts.tcp_options(self.pooler.settings)
        for server in self.servers:
            for sock in getattr(server, "sockets", None) or ():
                sockopts.apply(sock, options)

    def close_tcp(self) -> None:
        """Stop accepting TCP clients; the Unix socket stays (for the admin console)."""
        keep = []
        for server in self.servers:
            socks = list(getattr(server, "sockets", None) or ())
            if socks and all(sock.family == socket.AF_UNIX for sock in socks):
                keep.append(server)
            else:
                server.close()
        self.servers[:] = keep

    def stop(self) -> None:
        """Stop listening and remove the socket file and pidfile this process made."""
        for server in self.servers:
            server.close()
        self.servers.clear()
        owned, self._owned = self._owned, []
        _remove_own(owned)
