"""What the messages crossing one client-server link mean for linking and release, as a pure
state machine: counts of outstanding Syncs, open extended batches, COPY and transaction status."""

from __future__ import annotations

from pgmux.protocol.messages import (
    F_COPY_DONE,
    F_COPY_FAIL,
    F_EXECUTE,
    F_FUNCTION_CALL,
    F_QUERY,
    F_SYNC,
)

# NOTE: a byte table: 1 for frontend messages that extend an extended-protocol batch.
_BATCH = bytearray(256)
for _t in b"PBDECH":
    _BATCH[_t] = 1
# NOTE: 1 for frontend messages that begin server work when nothing is outstanding.
_STARTS = bytearray(256)
for _t in (F_QUERY, F_SYNC, F_FUNCTION_CALL, ord("H")):
    _STARTS[_t] = 1


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
