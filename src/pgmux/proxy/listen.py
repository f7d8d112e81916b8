"""Where clients come in: the TCP listeners, the Unix socket file (its mode and group) and the
pidfile; a port, socket or pidfile held by a live process stops the start, a stale one is
taken over.

Owns the listening servers and the files it created (it removes only those).
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
from typing import TYPE_CHECKING

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


def check_unix_socket(path: str) -> None:
    """Refuse to start while a live process accepts on the socket; remove a stale file."""
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
    raise StartError(f"unix socket is in use by another process: {path}")


class Listener:
    """Listening sockets and the pidfile of one pooler."""

    __slots__ = ("pooler", "servers", "_owned")

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self.servers: list[asyncio.AbstractServer] = []
        self._owned: list[str] = []  # files this process made: removed when it stops

    @property
    def unix_socket_path(self) -> str | None:
        s = self.pooler.settings
        return socket_path(s.unix_socket_dir, s.listen_port) if s.unix_socket_dir else None

    async def start(self, factory: Callable[[], ClientConnection]) -> list[str]:
        """Listen on listen_addr:listen_port and the Unix socket, then write the pidfile.
        Returns the places listened on, for the start-up log line. Raises StartError."""
        loop = asyncio.get_running_loop()
        s = self.pooler.settings
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
                with open(s.pidfile, "w") as f:
                    f.write(f"{os.getpid()}\n")
                self._owned.append(s.pidfile)
        except BaseException:
            self.stop()
            raise
        return where

    async def _listen_unix(self, loop: asyncio.AbstractEventLoop,
                           factory: Callable[[], ClientConnection], path: str) -> None:
        s = self.pooler.settings
        check_unix_socket(path)
        try:
            server = await loop.create_unix_server(factory, path, backlog=s.listen_backlog)
        except OSError as exc:
            raise StartError(f"could not listen on unix socket {path}: "
                             f"{exc.strerror or exc}") from None
        self.servers.append(server)
        self._owned.append(path)
        # NOTE: unix_socket_mode is already an int (parsed as octal from the file).
        os.chmod(path, s.unix_socket_mode)
        if s.unix_socket_group:
            try:
                gid = grp.getgrnam(s.unix_socket_group).gr_gid
            except KeyError:
                raise StartError(f"unix_socket_group: no such group: "
                                 f"{s.unix_socket_group}") from None
            try:
                os.chown(path, -1, gid)
            except OSError as exc:
                raise StartError(f"unix_socket_group {s.unix_socket_group}: cannot give it "
                                 f"{path}: {exc.strerror}") from None

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
        for path in owned:
            with contextlib.suppress(OSError):
                os.unlink(path)
