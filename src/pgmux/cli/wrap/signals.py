"""The signals `pgmux wrap` forwards to CMD, delivered to its select loop through a pipe."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
# Before CMD runs, these abort the start.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})
# A terminal sends these to its whole foreground process group, CMD included.
KEYBOARD_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT})


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler does nothing: the signal number reaches the main loop through
    the wakeup fd."""


class SignalPipe:
    """Delivers the forwarded signals (and SIGCHLD) as bytes on a pipe the main loop selects
    on, so a signal is never handled in the middle of other work. Signals this process was
    started ignoring (a background job's SIGINT) stay ignored, and CMD inherits that."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup = -1

    def __enter__(self) -> SignalPipe:
        self._old_wakeup = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
        for sig in (*FORWARDED_SIGNALS, signal.SIGCHLD):
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            self._old_handlers[sig] = old
            signal.signal(sig, _ignore_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self.r)
        os.close(self.w)

    def received(self) -> list[int]:
        data = b""
        while True:
            try:
                chunk = os.read(self.r, 512)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [n for n in data if n in self._old_handlers]


def terminal_sent_it_too() -> bool:
    """True when this process group is the foreground group of the controlling terminal: then
    a keyboard signal (Ctrl-C) has reached CMD directly, and forwarding it would double it."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)
