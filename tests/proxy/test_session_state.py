"""Session state through the Protocols on fake transports: a transaction that may change the
session is read back before the client's ReadyForQuery; the next server a client gets is
brought to its state in the same write as its first message; state that cannot move pins the
client, and it unpins when the state is gone; the pin cap; the escape hatch."""

from __future__ import annotations

from pgmux.pool.core import ServerState
from pgmux.protocol import messages as m
from pgmux.protocol.state import READBACK, state
from tests.proxy.harness import Harness, answer, out, readback_answer

SET = m.query("set statement_timeout = '1234ms'")


def test_a_set_is_read_back_before_the_client_hears_ready() -> None:
    h = Harness(pool_size=2)
    server = h.server()
    client = h.client()
    h.send(client, SET)
    h.reply(server, answer("SET"))
    # the ReadyForQuery is held; the read-back went to the server; the link holds
    assert out(client).take() == [("C", b"SET\x00")]
    assert out(server).take() == [("Q", b"set statement_timeout = '1234ms'\x00"),
                                  ("Q", READBACK.encode() + b"\x00")]
    assert client.server is server
    h.reply(server, readback_answer({"statement_timeout": "1234ms"}))
    assert out(client).take() == [("Z", b"I")]
    assert client.session == state({"statement_timeout": "1234ms"})
    assert client.server is None and server.server_state is ServerState.IDLE
    assert server.session is client.session and not server.dirty  # no reset needed


def test_the_next_server_is_brought_to_the_clients_state_in_the_same_write() -> None:
    h = Harness(pool_size=2)
    first, second = h.server(), h.server()
    client = h.client()
    client.session = state({"statement_timeout": "1234ms"})
    # the idle stack is LIFO: this client gets `second`, which holds nothing
    h.send(client, m.query("select 1"))
    assert client.server is second
    assert out(second).take() == [
        ("Q", b"SELECT pg_catalog.set_config('statement_timeout', '1234ms', false)\x00"),
        ("Q", b"select 1\x00")]
    h.reply(second, answer("SET"), answer())  # the replay's answer is swallowed
    assert out(client).take() == [("C", b"SELECT 1\x00"), ("Z", b"I")]
    assert second.session == client.session
    _ = first


def test_another_client_gets_the_server_reset_to_its_own_state() -> None:
    h = Harness(pool_size=1)
    server = h.server()
    a, b = h.client(), h.client()
    a.session = state({"statement_timeout": "1234ms"})
    h.send(a, m.query("select 1"))
    h.reply(server, answer("SELECT pg_catalog.set_config"), answer())
    out(server).take()
    h.send(b, m.query("select 2"))
    assert out(server).take() == [("Q", b'RESET "statement_timeout"\x00'),
                                  ("Q", b"select 2\x00")]
    assert server.session == b.session


def test_state_that_cannot_move_pins_and_unpins() -> None:
    h = Harness(pool_size=3)
    server = h.server()
    client = h.client()
    h.send(client, m.query("select pg_advisory_lock(42)"))
    h.reply(server, answer())
    out(server).take()
    h.reply(server, readback_answer(advisory=1))
    assert out(client).take()[-1] == ("Z", b"I")
    assert client.session.pins == ("advisory lock",)
    # pinned: the server stays across transactions
    h.send(client, m.query("select 1"))
    h.reply(server, answer())
    assert client.server is server
    # the lock goes: read back, unpinned, released
    h.send(client, m.query("select pg_advisory_unlock(42)"))
    h.reply(server, answer())
    h.reply(server, readback_answer())
    assert client.session.pins == () and client.server is None
    assert server.server_state is ServerState.IDLE


def test_a_pinned_client_that_leaves_gets_its_server_reset() -> None:
    h = Harness(pool_size=3)
    server = h.server()
    client = h.client()
    h.send(client, m.query("listen ch"))
    h.reply(server, answer("LISTEN"))
    h.reply(server, readback_answer(listen=1))
    out(server).take()
    client.connection_lost(None)
    h.flush()
    assert out(server).take() == [("Q", b"DISCARD ALL\x00")]


def test_the_pin_cap_undoes_the_state_and_says_why() -> None:
    h = Harness(pool_size=2)  # NOTE: by default pool size minus one: one pin
    s1, s2 = h.server(), h.server()
    a, b = h.client(), h.client()
    h.send(a, m.query("listen ch"))
    h.reply(s2, answer("LISTEN"))
    h.reply(s2, readback_answer(listen=1))
    assert a.session.pins == ("LISTEN",)
    h.send(b, m.query("listen other"))
    h.reply(s1, answer("LISTEN"))
    out(s1).take()
    h.reply(s1, readback_answer(listen=1))
    sent = out(b).take()
    assert [t for t, _ in sent] == ["C", "E", "Z"]
    assert b"max_pinned_servers = 1" in sent[1][1] and b"C53400\x00" in sent[1][1]
    assert out(s1).take() == [("Q", b"UNLISTEN *\x00")]
    assert b.session.pins == () and b.server is None


def test_a_failed_replay_ends_the_client_and_closes_the_server() -> None:
    h = Harness(pool_size=1)
    server = h.server()
    client = h.client()
    client.session = state({"role": "gone"})
    h.send(client, m.query("select 1"))
    err = m.error_response('role "gone" does not exist', "22023")
    h.reply(server, err + m.ready_for_query(b"I"))
    assert server.server_state is ServerState.CLOSED
    sent = out(client).take()
    assert sent[-1][0] == "E"
    assert b'role "gone" does not exist' in sent[-1][1]


def test_session_check_always_reads_back_after_every_transaction() -> None:
    h = Harness(pool_size=1, pgmux={"session_check": "always"})
    server = h.server()
    client = h.client()
    h.send(client, m.query("select my_function()"))
    h.reply(server, answer())
    assert out(server).take()[-1] == ("Q", READBACK.encode() + b"\x00")
    h.reply(server, readback_answer({"work_mem": "3MB"}))
    assert client.session == state({"work_mem": "3MB"})


def test_session_state_off_reads_nothing_back() -> None:
    h = Harness(pool_size=1, pgmux={"session_state": "off"})
    server = h.server()
    client = h.client()
    h.send(client, SET)
    h.reply(server, answer("SET"))
    assert out(server).take() == [("Q", b"set statement_timeout = '1234ms'\x00")]
    assert client.server is None and not server.dirty and not server.recheck
