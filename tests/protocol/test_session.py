"""LinkState (when a server is idle) and the decisions about a link, as tables."""

from __future__ import annotations

from pgmux.protocol.session import (
    CLOSE,
    HAND_ON,
    KEEP,
    REFUSE,
    RELEASE,
    RESET,
    Decision,
    LinkState,
    after_ready,
    client_gone,
    when_free,
)

IDLE, IN_TX = ord("I"), ord("T")


def send(ls: LinkState, types: str) -> None:
    for t in types:
        ls.client_message(ord(t))


def test_simple_query() -> None:
    ls = LinkState()
    send(ls, "Q")
    assert not ls.idle
    assert ls.ready(IDLE) and ls.idle


def test_extended_batch_released_only_after_sync_answer() -> None:
    ls = LinkState()
    send(ls, "PBDE")
    assert not ls.idle  # batch open, no Sync yet
    send(ls, "S")
    assert ls.ready(IDLE)


def test_pipeline_of_several_syncs() -> None:
    ls = LinkState()
    send(ls, "PBES" * 3)
    assert not ls.ready(IDLE)
    assert not ls.ready(IDLE)
    assert ls.ready(IDLE)


def test_flush_keeps_the_batch_open() -> None:
    ls = LinkState()
    send(ls, "PDH")
    assert not ls.idle
    send(ls, "BES")
    assert ls.ready(IDLE)


def test_query_after_an_unsynced_batch_ends_it() -> None:
    ls = LinkState()
    send(ls, "PDH")
    send(ls, "Q")
    assert ls.ready(IDLE) and ls.idle


def test_transaction_status_is_kept() -> None:
    ls = LinkState()
    send(ls, "Q")
    assert ls.ready(IN_TX)
    assert ls.status == IN_TX


def test_extended_copy_in_ignores_the_sync_sent_with_it() -> None:
    ls = LinkState()
    send(ls, "PBES")
    ls.copy_in_started()
    send(ls, "dd")
    send(ls, "c")
    send(ls, "S")  # libpq sends a Sync after CopyDone in extended mode
    assert ls.ready(IDLE)


def test_simple_copy_in() -> None:
    ls = LinkState()
    send(ls, "Q")
    ls.copy_in_started()
    send(ls, "ddc")
    assert ls.ready(IDLE)


# ---- the decisions about a link (protocol/session.py), row by row ---------------------------

ERR = ord("E")

AFTER_READY = [
    # mode, status, dirty, reset_always -> action, discard
    ("session", IDLE, False, False, KEEP, False),
    ("session", IN_TX, True, True, KEEP, False),
    ("transaction", IDLE, False, False, RELEASE, False),
    ("transaction", IDLE, True, False, RELEASE, True),
    ("transaction", IDLE, False, True, RELEASE, True),
    ("transaction", IN_TX, False, False, KEEP, False),
    ("transaction", ERR, True, False, KEEP, False),
    ("statement", IDLE, False, False, RELEASE, False),
    ("statement", IDLE, True, False, RELEASE, True),
    ("statement", IN_TX, False, False, REFUSE, False),
    ("statement", ERR, False, False, REFUSE, False),
]


def test_after_ready_table() -> None:
    for mode, status, dirty, always, action, discard in AFTER_READY:
        d = after_ready(mode, status, dirty, always)
        assert (d.action, d.discard) == (action, discard), (mode, chr(status), dirty, always)
    refused = after_ready("statement", IN_TX, False, False)
    assert refused.reason == "transaction blocks not allowed in statement pooling mode"


CLIENT_GONE = [
    # idle, swallowing, status, mode, dirty, always, reset_query -> decision
    (False, False, IDLE, "transaction", False, False, "DISCARD ALL",
     Decision(CLOSE, reason="client disconnect while server was not ready")),
    (True, True, IDLE, "transaction", False, False, "DISCARD ALL",
     Decision(CLOSE, reason="client disconnect while server was not ready")),
    (True, False, IDLE, "transaction", False, False, "DISCARD ALL", Decision(HAND_ON)),
    (True, False, IN_TX, "transaction", False, False, "DISCARD ALL",
     Decision(RESET, rollback=True)),
    (True, False, ERR, "transaction", True, False, "DISCARD ALL",
     Decision(RESET, rollback=True, discard=True)),
    (True, False, IDLE, "transaction", True, False, "DISCARD ALL",
     Decision(RESET, discard=True)),
    (True, False, IDLE, "transaction", False, True, "DISCARD ALL",
     Decision(RESET, discard=True)),
    # session mode: server_reset_query after every client, unless it is empty
    (True, False, IDLE, "session", False, False, "DISCARD ALL", Decision(RESET, discard=True)),
    (True, False, IDLE, "session", False, False, "", Decision(HAND_ON)),
    (True, False, IN_TX, "session", False, False, "", Decision(RESET, rollback=True)),
    (True, False, IDLE, "statement", False, False, "DISCARD ALL", Decision(HAND_ON)),
]


def test_client_gone_table() -> None:
    for idle, swallowing, status, mode, dirty, always, query, expected in CLIENT_GONE:
        got = client_gone(idle, swallowing, status, mode, dirty, always, query)
        assert got == expected, (idle, swallowing, chr(status), mode, dirty, always, query)


WHEN_FREE = [
    # close_reason, lifetime over, waiters -> decision
    (None, False, False, Decision(HAND_ON)),
    (None, False, True, Decision(HAND_ON)),
    (None, True, False, Decision(CLOSE, reason="server lifetime over")),
    (None, True, True, Decision(HAND_ON)),  # NOTE: an old server still serves a waiter
    ("close_needed", False, True, Decision(CLOSE, reason="close_needed")),
    ("too many servers in the pool", True, False,
     Decision(CLOSE, reason="too many servers in the pool")),
]


def test_when_free_table() -> None:
    for reason, over, waiters, expected in WHEN_FREE:
        assert when_free(reason, over, waiters) == expected, (reason, over, waiters)
