"""Flow control across a link: when one side's transport buffer fills, stop reading the
other side until it drains (uvicorn's pause_writing -> pause_reading rule)."""

from __future__ import annotations

import asyncio


class FlowControlled(asyncio.Protocol):
    """One end of a client-server link; `peer()` is the other end, if linked."""

    __slots__ = ("transport", "reading_paused", "writing_paused")

    transport: asyncio.Transport | None
    reading_paused: bool
    writing_paused: bool

    def peer(self) -> FlowControlled | None:
        raise NotImplementedError

    def pause_writing(self) -> None:
        # NOTE: our peer produces faster than this side's socket drains: stop reading it.
        self.writing_paused = True
        other = self.peer()
        if other is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        other = self.peer()
        if other is not None:
            other.resume_reading()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
