"""SUSPEND's freeze over flow control: while frozen nothing is read whatever flow control
wants, and thaw() leaves the transport as flow control last asked."""

from __future__ import annotations

import pytest

from pgmux.proxy.flow import FlowControlled


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False


class End(FlowControlled):
    def __init__(self) -> None:
        self.transport = FakeTransport()  # type: ignore[assignment]
        self.reading_paused = False
        self.writing_paused = False
        self.frozen = False

    def peer(self) -> FlowControlled | None:
        return None


# (steps while frozen, transport reading after thaw)
CASES = [
    ((), True),
    (("pause",), False),
    (("pause", "resume"), True),
    (("resume",), True),
    (("pause", "resume", "pause"), False),
]


@pytest.mark.parametrize(("steps", "after"), CASES)
def test_freeze_holds_and_thaw_follows_flow_control(steps: tuple[str, ...], after: bool) -> None:
    end = End()
    end.freeze()
    t = end.transport
    assert isinstance(t, FakeTransport)
    assert not t.reading
    for step in steps:
        end.pause_reading() if step == "pause" else end.resume_reading()
        assert not t.reading  # NOTE: frozen: flow control cannot start reading
    end.thaw()
    assert t.reading is after and end.reading_paused is (not after)


def test_freeze_of_an_already_paused_end_keeps_it_paused_after_thaw() -> None:
    end = End()
    end.pause_reading()
    end.freeze()
    end.thaw()
    t = end.transport
    assert isinstance(t, FakeTransport) and not t.reading
    end.resume_reading()
    assert t.reading
