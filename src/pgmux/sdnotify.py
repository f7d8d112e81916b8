"""Tells systemd (Type=notify or notify-reload units, as PgBouncer's own) when pgmux is ready,
reloading and stopping, over the datagram socket named by NOTIFY_SOCKET."""

from __future__ import annotations

import contextlib
import os
import socket
import time

# NOTE: taken out of the environment once, by the process systemd started: workers, the
# embedded PostgreSQL and any child must not speak for it (systemd would ignore them, or worse,
# believe them). `_owner` is that process's pid: a forked worker inherits the module state.
_address: str | None = None
_owner = 0
_stopping = False


def take() -> None:
    """Remember NOTIFY_SOCKET for this process and remove it from the environment."""
    global _address, _owner
    address = os.environ.pop("NOTIFY_SOCKET", None)
    if address:
        _address, _owner = address, os.getpid()


def notify(*lines: str) -> None:
    """Send `KEY=value` lines to systemd; nothing when not started by it (or not this process)."""
    if not _address or os.getpid() != _owner:
        return
    address = "\0" + _address[1:] if _address.startswith("@") else _address
    with contextlib.suppress(OSError), \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto("\n".join(lines).encode(), address)


def ready(status: str = "") -> None:
    notify("READY=1", f"MAINPID={os.getpid()}", *([f"STATUS={status}"] if status else []))


def reloading() -> None:
    """Before a reload: Type=notify-reload wants RELOADING=1 with the monotonic time, then
    READY=1 when it is done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> None:
    """Once, at the start of a shutdown (a fast exit after a safe one says nothing more)."""
    global _stopping
    if not _stopping:
        _stopping = True
        notify("STOPPING=1")
