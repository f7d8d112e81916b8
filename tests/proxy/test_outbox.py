"""The pooler's outbox: writes of one loop iteration go out together, in order, after the
iteration's events; a close sends what was posted first; a closed transport loses only its own
bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgmux.config import config_from_url
from pgmux.proxy.client import ClientConnection
from pgmux.proxy.pooler import Pooler


class Recorder:
    """A transport that records what is written to it, into a log shared by several."""

    def __init__(self, name: str, log: list[tuple[str, bytes]], closed: bool = False) -> None:
        self.name, self.log, self.closed = name, log, closed

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.log.append((self.name, data))

    def close(self) -> None:
        self.log.append((self.name, b"<close>"))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name in ("peername", "sockname") else default


def pooler() -> Pooler:
    return Pooler(config_from_url("postgresql://postgres@127.0.0.1:5432/postgres",
                                  listen_port=6999))


def test_posts_wait_for_the_end_of_the_iteration_and_keep_their_order() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        p = pooler()
        log: list[tuple[str, bytes]] = []
        a, b = Recorder("a", log), Recorder("b", log)
        p.post(a, b"1")  # type: ignore[arg-type]
        p.post(b, b"2")  # type: ignore[arg-type]
        p.post(a, b"3")  # type: ignore[arg-type]
        assert log == []  # nothing written while the iteration runs
        await asyncio.sleep(0)
        return log

    assert asyncio.run(scenario()) == [("a", b"1"), ("b", b"2"), ("a", b"3")]


def test_a_closed_transport_does_not_stop_the_others() -> None:
    p = pooler()
    p.schedule_flush = lambda: None
    log: list[tuple[str, bytes]] = []
    gone, alive = Recorder("gone", log, closed=True), Recorder("alive", log)
    p.post(gone, b"x")  # type: ignore[arg-type]
    p.post(alive, b"y")  # type: ignore[arg-type]
    p.flush_outbox()
    assert log == [("alive", b"y")]
    assert p.outbox == []


@pytest.mark.parametrize("notify", [True, False])
def test_disconnect_sends_what_was_posted_before_the_error_and_the_close(notify: bool) -> None:
    p = pooler()
    p.schedule_flush = lambda: None
    log: list[tuple[str, bytes]] = []
    client = ClientConnection(p)
    client.connection_made(Recorder("client", log))  # type: ignore[arg-type]
    client.send(b"answer")
    client.disconnect("bye", notify=notify)
    assert log[0] == ("client", b"answer")
    assert log[-1] == ("client", b"<close>")
    assert (len(log) == 3) is notify  # the FATAL ErrorResponse sits between the two
