"""What the messages crossing one client-server link mean for linking and release, as a pure
state machine: counts of outstanding Syncs, open extended batches, COPY and transaction status."""

from __future__ import annotations

from typing import Final

from pgmux.protocol.messages import (
    F_COPY_DONE,
    F_COPY_FAIL,
    F_EXECUTE,
    F_FUNCTION_CALL,
    F_QUERY,
    F_SYNC,
    byte_table,
)

# NOTE: a byte table: 1 for frontend messages that extend an extended-protocol batch.
_BATCH: Final = byte_table(b"PBDECH")
# NOTE: 1 for frontend messages that begin server work when nothing is outstanding.
_STARTS: Final = byte_table((F_QUERY, F_SYNC, F_FUNCTION_CALL, ord("H")))


class LinkState:
    """Tracks one server's conversation to know when it is idle and reusable.

    The server is releasable exactly when it has answered every Query/Sync/FunctionCall sent
    (`outstanding == 0`), the client has no extended-protocol batch open after its last Sync,
    no COPY is in progress, and the last ReadyForQuery said `I`.
    """

    __slots__ = ("outstanding", "in_batch", "status", "copy_in", "_syncs_since_execute",
                 "_extended")

    def __init__(self) -> None:
        self.outstanding = 0
        self.in_batch = False
        self.status = 73  # ord("I")
        self.copy_in = False
        self._syncs_since_execute = 0
        self._extended = False

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def client_message(self, t: int) -> None:
        """A frontend message of type t is about to be written to the server."""
        self.client_batch([(t, 0, 0)])

    def client_batch(self, msgs: list[tuple[int, int, int]]) -> bool:
        """The frontend messages (type, start, end) of a batch are about to be written to the
        server. True when one of them begins server work while nothing was outstanding (a
        query starts now)."""
        starts = False
        for t, _, _ in msgs:
            if _STARTS[t] and not self.outstanding:
                starts = True
            if _BATCH[t]:
                self.in_batch = True
                if t == F_EXECUTE:
                    self._syncs_since_execute = 0
                    self._extended = True
            elif t == F_SYNC:
                self.in_batch = False
                if self.copy_in:
                    # NOTE: the server ignores Sync during copy-in; it will not answer it.
                    continue
                self.outstanding += 1
                self._syncs_since_execute += 1
            elif t == F_QUERY or t == F_FUNCTION_CALL:
                # NOTE: a simple Query (or FunctionCall) ends the implicit transaction of an
                # unsynced extended batch; its ReadyForQuery leaves the server idle.
                self.outstanding += 1
                self.in_batch = False
                self._extended = False
            elif t == F_COPY_DONE or t == F_COPY_FAIL:
                self.copy_in = False
        return starts

    def copy_in_started(self) -> None:
        """The server sent CopyInResponse: from now on it ignores Sync until CopyDone/Fail."""
        self.copy_in = True
        if self._extended:
            # NOTE: Syncs sent after the COPY's Execute reached a server already in copy-in
            # mode, so no ReadyForQuery will answer them. They are the newest outstanding
            # ones, but a ReadyForQuery may already have answered some (a server that sends
            # CopyInResponse out of turn): never below zero, or the link is never released.
            self.outstanding -= min(self._syncs_since_execute, self.outstanding)
            self._syncs_since_execute = 0

    def ready(self, status: int) -> bool:
        """The server sent ReadyForQuery; True when the link may now be released."""
        self.status = status
        if self.outstanding > 0:
            self.outstanding -= 1
        self.copy_in = False
        return self.outstanding == 0 and not self.in_batch

    @property
    def idle(self) -> bool:
        return self.outstanding == 0 and not self.in_batch and not self.copy_in


# ---- the decisions about a link, as pure functions ------------------------------------------
# What happens to a server when its client's transaction ends, when its client goes, or when it
# is free again. proxy/link.py carries them out; the tables in tests/protocol/test_session.py
# pin every row.

KEEP: Final = 0      # the client keeps its server
RELEASE: Final = 1   # unlink now; the server is handed on (after a reset when `discard`)
REFUSE: Final = 2    # statement mode: a transaction block was opened: the client is refused
RESET: Final = 3     # run ROLLBACK (`rollback`) and/or the reset query (`discard`), then hand on
CLOSE: Final = 4     # close the server (`reason`)
HAND_ON: Final = 5   # the server is clean and free: first waiter, else the idle stack

STATUS_IDLE: Final = 73  # ord("I"): ReadyForQuery's status outside a transaction


class Decision:
    """One verdict: an action and, for RESET/RELEASE, what to run; for CLOSE, why."""

    __slots__ = ("action", "rollback", "discard", "reason")

    def __init__(self, action: int, rollback: bool = False, discard: bool = False,
                 reason: str = "") -> None:
        self.action = action
        self.rollback = rollback
        self.discard = discard
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and (
            self.action, self.rollback, self.discard, self.reason) == (
            other.action, other.rollback, other.discard, other.reason)

    def __hash__(self) -> int:
        return hash((self.action, self.rollback, self.discard, self.reason))

    def __repr__(self) -> str:
        names = ("KEEP", "RELEASE", "REFUSE", "RESET", "CLOSE", "HAND_ON")
        return (f"Decision({names[self.action]}, rollback={self.rollback}, "
                f"discard={self.discard}, reason={self.reason!r})")


# NOTE: the verdicts of the hot path are made once; callers compare `.action`, never identity.
_KEEP: Final = Decision(KEEP)
_RELEASE: Final = Decision(RELEASE)
_RELEASE_DISCARD: Final = Decision(RELEASE, discard=True)
_REFUSE: Final = Decision(REFUSE, reason="transaction blocks not allowed in statement pooling mode")
_HAND_ON: Final = Decision(HAND_ON)
_NOT_READY: Final = Decision(CLOSE, reason="client disconnect while server was not ready")
_LIFETIME: Final = Decision(CLOSE, reason="server lifetime over")
LIFETIME_OVER: Final = _LIFETIME  # the verdict when_free gives for an old server


def after_ready(mode: str, status: int, dirty: bool, reset_always: bool,
                pinned: bool = False) -> Decision:
    """The server answered everything the client sent and is idle (ReadyForQuery with nothing
    outstanding, at a message boundary): keep (session mode, a transaction still open, or a
    client pinned by state that cannot move), release (with a reset when its session state
    changed untracked, or always when server_reset_query_always), or refuse the client
    (statement mode inside a transaction block)."""
    if mode == "session":
        return _KEEP
    if status != STATUS_IDLE:
        return _REFUSE if mode == "statement" else _KEEP
    if pinned:
        return _KEEP
    if dirty or reset_always:
        return _RELEASE_DISCARD
    return _RELEASE


def client_gone(idle: bool, swallowing: bool, status: int, mode: str, dirty: bool,
                reset_always: bool, reset_query: str) -> Decision:
    """Its client went away (or was closed) while linked: close the server if it is in the
    middle of something, else roll back an open transaction and/or run the reset query (in
    session mode, server_reset_query; in the others only when the session state changed or
    server_reset_query_always), then hand it on."""
    if swallowing or not idle:
        return _NOT_READY
    rollback = status != STATUS_IDLE
    discard = dirty or reset_always or (mode == "session" and bool(reset_query))
    if rollback or discard:
        return Decision(RESET, rollback=rollback, discard=discard)
    return _HAND_ON


def when_free(close_reason: str | None, lifetime_over: bool, waiters: bool) -> Decision:
    """A server is clean and unlinked: close it when it was marked to close (RECONNECT, a
    RELOAD that changed its database, a pool over its size) or its lifetime is over and
    nobody waits (PgBouncer closes an old server only when it is not needed); else hand on."""
    if close_reason is not None:
        return Decision(CLOSE, reason=close_reason)
    if lifetime_over and not waiters:
        return _LIFETIME
    return _HAND_ON
