"""What a console command answers: a result (notice, rows, tag), an error, or an answer that
comes later; shared by the commands and the workers' console, which import nothing else of
each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pgmux.admin.show import Column, Row


@dataclass(frozen=True, slots=True)
class Result:
    """What a command answers: optional notice, optional result set, the command tag."""

    tag: str
    columns: tuple[Column, ...] | None = None
    rows: list[Row] = field(default_factory=list)
    notice: tuple[str, str] | None = None  # (message, detail)


class AdminError(Exception):
    """An ERROR answer (the connection stays usable); sqlstate 08P01 unless said otherwise."""

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


# NOTE: a deferred answer may also be a refusal (an error found after the command started).
Reply = Callable[[Result | AdminError], None]


@dataclass(frozen=True, slots=True)
class Deferred:
    """An answer that comes later (PAUSE, WAIT_CLOSE): start(reply) arranges reply(result)."""

    start: Callable[[Reply], None]


Outcome = Result | Deferred
