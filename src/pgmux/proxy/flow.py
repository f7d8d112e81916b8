"""Flow control across a link: when one side's transport buffer fills, stop reading the
other side until it drains (uvicorn's pause_writing -> pause_reading rule); SUSPEND freezes
reading over it."""

from __future__ import annotations

import asyncio


class FlowControlled(asyncio.Protocol):
    """One end of a client-server link; `peer()` is the other end, if linked."""

    __slots__ = ("transport", "reading_paused", "writing_paused", "frozen")

    transport: asyncio.Transport | None
    reading_paused: bool  # what flow control (and queueing) want; the transport follows it...
    writing_paused: bool
    frozen: bool  # ...unless SUSPEND froze this end: then it reads nothing until thaw()

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
            if not self.frozen:
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            if not self.frozen:
                self.transport.resume_reading()

    def freeze(self) -> None:
        """SUSPEND: read nothing more from this socket until thaw(), whatever flow control
        decides meanwhile (its wish is kept in reading_paused)."""
        if not self.frozen and self.transport is not None:
            self.frozen = True
            if not self.reading_paused:
                self.transport.pause_reading()

    def thaw(self) -> None:
        """RESUME after SUSPEND: reading follows flow control again."""
        if self.frozen:
            self.frozen = False
            if not self.reading_paused and self.transport is not None \
                    and not self.transport.is_closing():
                self.transport.resume_reading()
