"""tcp_* settings as socket options: the table, and what an accepted client inherits."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from pgmux.config.settings import Settings
from pgmux.proxy import sockopts

KEEP = (socket.SOL_SOCKET, socket.SO_KEEPALIVE)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux options")


def _opts(**kw: object) -> dict[tuple[int, int], int]:
    return {(level, name): value
            for level, name, value in sockopts.tcp_options(Settings(**kw))}  # type: ignore[arg-type]


def test_defaults_only_turn_keepalive_on() -> None:
    assert _opts() == {KEEP: 1}


def test_keepalive_off_drops_its_knobs() -> None:
    assert _opts(tcp_keepalive=False, tcp_keepidle=30) == {KEEP: 0}


@linux_only
def test_every_knob() -> None:
    got = _opts(tcp_keepidle=30, tcp_keepintvl=5, tcp_keepcnt=3, tcp_user_timeout=9000,
                tcp_socket_buffer=65536)
    assert got == {
        KEEP: 1,
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): 30,
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): 5,
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): 3,
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT): 9000,
        (socket.SOL_SOCKET, socket.SO_SNDBUF): 65536,
        (socket.SOL_SOCKET, socket.SO_RCVBUF): 65536,
    }


@linux_only
def test_an_accepted_client_inherits_the_listeners_options() -> None:
    options = sockopts.tcp_options(Settings(tcp_keepidle=31, tcp_keepintvl=6, tcp_keepcnt=4,
                                            tcp_user_timeout=7000))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sockopts.apply(listener, options)
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert client.getsockopt(*KEEP) == 0  # NOTE: the connecting side is untouched
                assert accepted.getsockopt(*KEEP) == 1
                assert [accepted.getsockopt(socket.IPPROTO_TCP, o) for o in (
                    socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT,
                    socket.TCP_USER_TIMEOUT)] == [31, 6, 4, 7000]


class _Recorder:
    def __init__(self, family: int) -> None:
        self.family = family
        self.calls: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append((level, option, value))


def test_only_tcp_sockets_are_tuned() -> None:
    options = sockopts.tcp_options(Settings(tcp_socket_buffer=8192))
    sockopts.apply(None, options)
    unix, tcp6 = _Recorder(socket.AF_UNIX), _Recorder(socket.AF_INET6)
    sockopts.apply(unix, options)
    sockopts.apply(tcp6, options)
    assert unix.calls == []
    assert tcp6.calls == list(options)


@linux_only
def test_the_listener_tunes_its_sockets_at_start_and_on_reload() -> None:
    from pgmux.config import Config
    from pgmux.embedded import free_port
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

    settings = Settings(listen_addr="127.0.0.1", listen_port=free_port(), unix_socket_dir="",
                        tcp_keepidle=41)
    pooler = Pooler(Config(settings=settings))

    def idle() -> list[int]:
        return [sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
                for server in pooler.listener.servers for sock in server.sockets]

    async def run() -> tuple[list[int], list[int]]:
        await pooler.listener.start(lambda: ClientConnection(pooler))
        try:
            at_start = idle()
            pooler.settings = Settings(listen_addr="127.0.0.1", tcp_keepidle=42)
            pooler.listener.tune()
            return at_start, idle()
        finally:
            pooler.listener.stop()

    assert asyncio.run(run()) == ([41], [42])
