"""LinkState: when a server is idle and may be released."""

from __future__ import annotations

from pgmux.protocol.session import LinkState

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
