"""SUSPEND's freeze over flow control, on a client Protocol with a fake transport: while frozen
nothing is read whatever flow control wants, and thaw() leaves the transport as flow control
last asked; the pooler's suspend freezes clients and servers and answers once flushed."""

from __future__ import annotations

import pytest

from tests.proxy.harness import Harness, out

# (flow control steps while frozen, transport reading after thaw)
CASES = [
    ((), True),
    (("pause",), False),
    (("pause", "resume"), True),
    (("resume",), True),
    (("pause", "resume", "pause"), False),
]


@pytest.mark.parametrize(("steps", "after"), CASES)
def test_freeze_holds_and_thaw_follows_flow_control(steps: tuple[str, ...], after: bool) -> None:
    client = Harness().client()
    t = out(client)
    client.freeze()
    assert not t.reading
    for step in steps:
        if step == "pause":
            client.pause_reading()
        else:
            client.resume_reading()
        assert not t.reading  # NOTE: frozen: flow control cannot start reading
    client.thaw()
    assert t.reading is after and client.reading_paused is (not after)


def test_freeze_of_an_already_paused_end_keeps_it_paused_after_thaw() -> None:
    client = Harness().client()
    t = out(client)
    client.pause_reading()
    client.freeze()
    client.thaw()
    assert not t.reading
    client.resume_reading()
    assert t.reading


def test_suspend_freezes_clients_and_servers_and_resume_thaws_them() -> None:
    h = Harness()
    client, server = h.client(), h.server()
    answered: list[bool] = []
    h.pooler.control.suspend(lambda: answered.append(True))
    assert answered == [True]  # NOTE: fake transports have nothing left to send
    assert not out(client).reading and not out(server).reading
    h.pooler.control.resume()
    assert out(client).reading and out(server).reading
    assert not h.pooler.control.suspended
