"""The link between a client and a server, driven through both Protocols on fake transports:
release in every mode and status, a client gone mid-transaction, a server gone, dirty servers,
malformed client input, the bounded read of a queued client."""

from __future__ import annotations

import pytest

from pgmux.pool.core import ClientState, ServerState
from pgmux.protocol import messages as m
from pgmux.proxy.client import PENDING_LIMIT, Phase
from tests.proxy.harness import Harness, answer, out

Q = m.query("select 1")
BEGIN = m.query("begin")


@pytest.mark.parametrize(("mode", "status", "released", "client_open"), [
    ("transaction", b"I", True, True),
    ("transaction", b"T", False, True),
    ("transaction", b"E", False, True),
    ("session", b"I", False, True),
    ("session", b"T", False, True),
    ("statement", b"I", True, True),
    ("statement", b"T", False, False),
    ("statement", b"E", False, False),
])
def test_release_by_mode_and_status(mode: str, status: bytes, released: bool,
                                    client_open: bool) -> None:
    h = Harness(mode)
    server = h.server()
    client = h.client()
    h.send(client, Q)
    assert client.server is server and server.server_state is ServerState.ACTIVE
    assert out(server).take() == [("Q", b"select 1\x00")]
    h.reply(server, answer(status=status))
    assert (client.server is None) == (released or not client_open)
    if released:
        assert server.server_state is ServerState.IDLE and server.link is None
    sent = out(client).take()
    if client_open:
        assert sent[-1] == ("Z", status)
        assert client.phase is Phase.READY
    else:
        # NOTE: statement mode: the refusal stands where the ReadyForQuery was
        assert sent[-1][0] == "E"
        assert b"transaction blocks not allowed in statement pooling mode" in sent[-1][1]
        assert client.phase is Phase.CLOSED
        # its server still has a transaction open: rolled back before anyone else gets it
        assert server.server_state is ServerState.TESTED
        assert out(server).take() == [("Q", b"ROLLBACK\x00")]


def test_a_waiting_client_gets_the_released_server_directly() -> None:
    h = Harness(pool_size=1)
    server = h.server()
    first, second = h.client(), h.client()
    h.send(first, Q)
    h.send(second, m.query("select 2"))
    assert second.client_state is ClientState.WAITING and second.pending
    h.reply(server, answer())
    # hand-off: never idle in between, and the queued query goes out at once
    assert second.server is server and first.server is None
    assert out(server).take() == [("Q", b"select 1\x00"), ("Q", b"select 2\x00")]
    assert not second.pending and second.client_state is ClientState.ACTIVE


def test_client_gone_inside_a_transaction_rolls_back_then_reuses() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, BEGIN)
    h.reply(server, answer("BEGIN", b"T"))
    assert client.server is server
    out(server).take()
    client.connection_lost(None)
    h.flush()
    assert client.phase is Phase.CLOSED and server.link is None
    assert server.server_state is ServerState.TESTED
    assert out(server).take() == [("Q", b"ROLLBACK\x00")]
    other = h.client()
    h.send(other, Q)  # NOTE: the server is busy with the rollback: the client waits
    assert other.client_state is ClientState.WAITING
    h.reply(server, answer("ROLLBACK"))
    assert other.server is server
    assert out(server).take() == [("Q", b"select 1\x00")]


def test_client_gone_with_a_query_in_flight_closes_the_server() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, m.query("select pg_sleep(10)"))
    client.connection_lost(None)
    assert server.server_state is ServerState.CLOSED
    assert server.close_reason == "client disconnect while server was not ready"
    assert out(server).closed
    assert server not in h.pool.core.servers()


def test_client_gone_mid_extended_batch_closes_the_server() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, m.message(ord("P"), b"\x00select 1\x00\x00\x00"), m.message(ord("H")))
    assert client.server is server  # Flush needs the server
    client.connection_lost(None)
    assert server.server_state is ServerState.CLOSED


def test_server_gone_ends_its_client_with_the_reason() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, BEGIN)
    server.connection_lost(None)
    assert client.phase is Phase.CLOSED
    sent = out(client).take()
    assert sent[-1][0] == "E" and b"server conn crashed?" in sent[-1][1]
    assert out(client).closed


def test_server_fatal_reaches_the_client_alone() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, Q)
    fatal = m.error_response("terminating connection due to administrator command", "57P01",
                             severity="FATAL")
    h.reply(server, fatal)
    server.connection_lost(None)
    sent = out(client).take()
    assert [t for t, _ in sent] == ["E"]  # NOTE: the backend's own FATAL, no second error


def test_fatal_after_ready_for_query_never_reaches_the_next_client() -> None:
    """PostgreSQL shutting down: a FATAL right behind a ReadyForQuery (one read). The server
    is closed, not pooled: the next client must not get a dead server and lose its query
    without a word (seen as silent closes during a fast restart)."""
    h = Harness()
    server = h.server()
    first = h.client()
    h.send(first, Q)
    fatal = m.error_response("terminating connection due to administrator command", "57P01",
                             severity="FATAL")
    h.reply(server, answer() + fatal)
    assert [t for t, _ in out(first).take()][-2:] == ["Z", "E"]
    assert server not in server.pool.core.idle
    other = h.server()
    second = h.client()
    h.send(second, Q)
    assert second.server is other


def test_dirty_server_is_reset_before_the_next_client() -> None:
    h = Harness(pool_size=1, pgmux={"session_state": "reset"})
    server = h.server()
    client = h.client()
    h.send(client, m.query("set work_mem = '8MB'"))
    assert server.dirty
    h.reply(server, answer("SET"))
    assert client.server is None
    assert server.server_state is ServerState.TESTED
    assert out(server).take() == [("Q", b"set work_mem = '8MB'\x00"), ("Q", b"DISCARD ALL\x00")]
    h.reply(server, answer("DISCARD ALL"))
    assert server.server_state is ServerState.IDLE and not server.dirty


def test_reset_query_always_resets_clean_servers_too() -> None:
    h = Harness(server_reset_query_always=True)
    server = h.server()
    client = h.client()
    h.send(client, Q)
    h.reply(server, answer())
    assert out(server).take()[-1] == ("Q", b"DISCARD ALL\x00")


def test_retired_server_closes_when_free() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, Q)
    h.pooler.links.retire(server, "database configuration changed")
    assert server.server_state is ServerState.ACTIVE  # NOTE: not while in use
    h.reply(server, answer())
    assert server.server_state is ServerState.CLOSED
    assert server.close_reason == "database configuration changed"
    assert out(server).take()[-1] == ("X", b"")  # NOTE: a clean close says Terminate


@pytest.mark.parametrize("bad", [
    m.message(ord("Q"), b""),                 # no terminator at all
    m.message(ord("D"), b"S"),                # Describe without a name
    m.message(ord("P"), b"x"),                # Parse far too short
    m.message(ord("z"), b"hello\x00"),        # not a frontend message type
    m.message(ord("p"), b"secret\x00"),       # a password message after login
])
def test_malformed_message_ends_its_sender_alone(bad: bytes) -> None:
    h = Harness(pool_size=1)
    server = h.server()
    bad_client, good = h.client(), h.client()
    h.send(good, BEGIN)
    h.reply(server, answer("BEGIN", b"T"))
    out(server).take()
    h.send(bad_client, bad)
    sent = out(bad_client).take()
    assert sent and sent[-1][0] == "E" and b"C08P01\x00" in sent[-1][1]
    assert bad_client.phase is Phase.CLOSED
    # the other client and its server carry on as if nothing happened
    assert server.server_state is ServerState.ACTIVE and server.link is good
    assert out(server).take() == []
    h.send(good, m.query("commit"))
    h.reply(server, answer("COMMIT"))
    assert out(good).take()[-1] == ("Z", b"I")


def test_malformed_message_from_a_linked_client_leaves_its_server_usable() -> None:
    h = Harness(pool_size=1)
    server = h.server()
    client = h.client()
    h.send(client, Q)
    h.reply(server, answer())
    h.send(client, BEGIN)
    h.reply(server, answer("BEGIN", b"T"))
    out(server).take()
    h.send(client, m.message(ord("z"), b"\x00"))
    assert client.phase is Phase.CLOSED
    # NOTE: nothing of the bad batch was written: the open transaction is rolled back
    assert out(server).take() == [("Q", b"ROLLBACK\x00")]
    h.reply(server, answer("ROLLBACK"))
    assert server.server_state is ServerState.IDLE


def test_prepared_rewrite_failure_closes_the_half_told_server() -> None:
    h = Harness(pool_size=1)
    server = h.server()
    client = h.client()
    # a named Parse with no terminator anywhere: the rewrite cannot find the name's end
    bad = m.message(ord("P"), b"s1select 1")
    h.send(client, bad, m.message(ord("S")))
    assert client.phase is Phase.CLOSED
    sent = out(client).take()
    assert sent[-1][0] == "E" and b"C08P01\x00" in sent[-1][1]
    assert server.server_state is ServerState.CLOSED  # what it was told is unknown
    assert h.pool.core.server_count == 0


def test_queued_client_is_read_no_further_than_the_bound() -> None:
    h = Harness(pool_size=1)
    server = h.server()
    busy, queued = h.client(), h.client()
    h.send(busy, BEGIN)
    h.reply(server, answer("BEGIN", b"T"))
    big = m.query("select '" + "x" * 4000 + "'")
    sent = 0
    while out(queued).reading:
        h.send(queued, big)
        sent += 1
        assert sent * len(big) < PENDING_LIMIT + 2 * len(big)
    assert queued.pending_bytes > PENDING_LIMIT and queued.reading_paused
    out(server).take()
    h.send(busy, m.query("commit"))
    h.reply(server, answer("COMMIT"))
    # served: everything it sent goes out in order, and reading resumes
    assert queued.server is server and out(queued).reading and not queued.reading_paused
    assert len(out(server).take()) == 1 + sent  # the COMMIT, then all it queued


def test_copy_leftovers_without_a_transaction_are_dropped() -> None:
    h = Harness(pool_size=1)
    server = h.server()
    client = h.client()
    h.send(client, m.message(ord("d"), b"1\t2\n"), m.message(ord("c")))
    assert client.server is None and client.phase is Phase.READY and not client.pending
    h.send(client, Q)
    assert out(server).take() == [("Q", b"select 1\x00")]


def test_terminate_never_reaches_a_pooled_server() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, Q)
    h.reply(server, answer())
    h.send(client, m.message(ord("X")))
    assert client.phase is Phase.CLOSED
    assert [t for t, _ in out(server).take()] == ["Q"]
    assert server.server_state is ServerState.IDLE


def test_ready_for_query_split_across_reads_releases_once() -> None:
    h = Harness()
    server = h.server()
    client = h.client()
    h.send(client, Q)
    reply = answer()
    for i in range(len(reply)):
        h.reply(server, reply[i:i + 1])
    assert client.server is None and server.server_state is ServerState.IDLE
    assert out(client).take()[-1] == ("Z", b"I")


def test_a_message_over_max_packet_size_closes_the_client() -> None:
    h = Harness(max_packet_size=1000)
    server = h.server()
    client = h.client()
    h.send(client, m.query("SELECT " + "1" * 900))  # NOTE: under the limit: passed on
    assert bytes(out(server).data).startswith(b"Q")
    h.reply(server, answer())
    assert not out(client).closed
    out(client).take()
    h.send(client, m.query("SELECT " + "1" * 1000))
    assert out(client).closed
    assert [t for t, _ in out(client).take()] == ["E"]


def test_disable_pqexec_refuses_a_simple_query_but_not_the_extended_protocol() -> None:
    h = Harness(disable_pqexec=True)
    server = h.server()
    client = h.client()
    h.send(client, m.message(ord("P"), b"\x00select 1\x00\x00\x00"),
           m.message(ord("B"), b"\x00\x00\x00\x00\x00\x00\x00\x00"),
           m.message(ord("E"), b"\x00\x00\x00\x00\x00"), m.message(ord("S")))
    assert bytes(out(server).data).startswith(b"P")  # NOTE: passed on unchanged
    h.reply(server, m.message(ord("1")), m.message(ord("2")), answer())
    out(client).take()
    h.send(client, m.query("SELECT 1"))
    assert out(client).closed
    [(kind, body)] = out(client).take()
    assert kind == "E" and b"PQexec disallowed" in body


def test_a_client_gets_its_statement_table_at_its_first_named_statement() -> None:
    """An idle client carries no prepared-statement table (memory per idle client); unnamed
    statements pass unchanged without one; the first named Parse makes it and is renamed."""
    h = Harness()
    server = h.server()
    client = h.client()
    assert client.tracks_stmts and client.stmts is None and client.pending is None
    h.send(client, m.message(ord("P"), b"\x00select 1\x00\x00\x00"), m.message(ord("S")))
    assert client.stmts is None
    h.reply(server, m.message(ord("1")), answer())
    out(server).take()
    h.send(client, m.message(ord("P"), b"mine\x00select 2\x00\x00\x00"), m.message(ord("S")))
    assert client.stmts is not None and b"mine" in client.stmts
    sent = bytes(out(server).data)
    assert sent.startswith(b"P") and b"mine\x00" not in sent  # NOTE: renamed for the server
