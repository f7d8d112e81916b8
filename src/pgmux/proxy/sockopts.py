"""TCP socket options from the settings (tcp_keepalive and its knobs, tcp_user_timeout,
tcp_socket_buffer), for listening sockets (accepted clients inherit them) and server sockets."""

from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger("pgmux")

SockOpt = tuple[int, int, int]  # level, option, value

_failed: set[tuple[int, int]] = set()  # options already reported as refused by the kernel


def tcp_options(settings: Any) -> tuple[SockOpt, ...]:
    """What PgBouncer's socket tuning sets, as data: keepalive always on or off, its knobs only
    when keepalive is on and the knob is set (0: the OS default), the rest when set."""
    out: list[SockOpt] = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1 if settings.tcp_keepalive else 0)]
    if settings.tcp_keepalive:
        # NOTE: names missing on some platforms (macOS has no TCP_KEEPIDLE) are skipped.
        for value, option in ((settings.tcp_keepidle, "TCP_KEEPIDLE"),
                              (settings.tcp_keepintvl, "TCP_KEEPINTVL"),
                              (settings.tcp_keepcnt, "TCP_KEEPCNT")):
            if value > 0 and hasattr(socket, option):
                out.append((socket.IPPROTO_TCP, int(getattr(socket, option)), int(value)))
    timeout = int(settings.tcp_user_timeout)
    if timeout > 0 and hasattr(socket, "TCP_USER_TIMEOUT"):
        out.append((socket.IPPROTO_TCP, int(socket.TCP_USER_TIMEOUT), timeout))
    size = int(settings.tcp_socket_buffer)
    if size > 0:
        out.append((socket.SOL_SOCKET, socket.SO_SNDBUF, size))
        out.append((socket.SOL_SOCKET, socket.SO_RCVBUF, size))
    return tuple(out)


def apply(sock: Any, options: tuple[SockOpt, ...]) -> None:
    """Set options on a TCP socket (a socket, or a transport's socket-like); Unix sockets and
    None are left alone. A refused option is logged once and skipped."""
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:
            if (level, option) not in _failed:
                _failed.add((level, option))
                log.warning("setsockopt(%d, %d, %d) failed: %s", level, option, value, exc)


def tune_server(transport: Any, settings: Any) -> None:
    """The tcp_* settings on a new server connection's socket (a TCP one)."""
    apply(transport.get_extra_info("socket"), tcp_options(settings))
