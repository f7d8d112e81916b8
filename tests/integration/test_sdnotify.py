"""systemd's notify protocol, as PgBouncer's Type=notify(-reload) units expect it: READY=1 once
listening, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on shutdown; sent only by the process
systemd started (the supervisor, with workers), checked with the sender's credentials."""

from __future__ import annotations

import os
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PgmuxFactory

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o777)  # NOTE: pgmux runs as an unprivileged user (-u) when we are root
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(15)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """(sender pid, KEY=value lines) of the next datagram."""
    data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = 0
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    return pid, dict(line.split("=", 1) for line in data.decode().splitlines())


@pytest.mark.parametrize("workers", [1, 2])
def test_ready_reloading_stopping(workers: int, notify_socket: tuple[socket.socket, Path],
                                  pgmux_factory: PgmuxFactory) -> None:
    sock, path = notify_socket
    pgm = pgmux_factory(pgmux={"workers": workers}, env={"NOTIFY_SOCKET": str(path)})
    main = pgm.proc.pid
    pid, msg = receive(sock)
    assert (pid, msg["READY"], msg["MAINPID"]) == (main, "1", str(main)), msg
    pgm.signal(signal.SIGHUP)
    pid, msg = receive(sock)
    assert pid == main and msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    pid, msg = receive(sock)
    assert pid == main and msg["READY"] == "1"
    pgm.signal(signal.SIGTERM)
    pid, msg = receive(sock)
    assert (pid, msg) == (main, {"STOPPING": "1"})
    assert pgm.proc.wait(10) == 0
    # NOTE: nothing from a worker or anyone else.
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        receive(sock)
