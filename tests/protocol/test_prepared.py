"""Named prepared statements across pooled servers: rewriting and the answer filter, checked
against a small in-memory PostgreSQL that answers the extended protocol."""

from __future__ import annotations

import random
import struct

import pytest

from pgmux.protocol.framing import Framer
from pgmux.protocol.messages import error_response, message, parse_error
from pgmux.protocol.prepared import (
    ANSWER_TYPES,
    NOOP_CLOSE,
    PARSE_COMPLETE,
    ClientStatements,
    PreparedRegistry,
    ServerStatements,
    resets_statements,
    rewrite,
)

# ---- frontend message builders --------------------------------------------------------------


def parse(name: str, sql: str, oids: tuple[int, ...] = ()) -> bytes:
    body = name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", len(oids))
    return message(ord("P"), body + b"".join(struct.pack("!I", o) for o in oids))


def bind(stmt: str, portal: str = "", params: tuple[bytes, ...] = ()) -> bytes:
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!h", 0)
    body += struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return message(ord("B"), body + struct.pack("!h", 0))


def describe(kind: str, name: str) -> bytes:
    return message(ord("D"), kind.encode() + name.encode() + b"\0")


def close(kind: str, name: str) -> bytes:
    return message(ord("C"), kind.encode() + name.encode() + b"\0")


def execute(portal: str = "") -> bytes:
    return message(ord("E"), portal.encode() + b"\0" + struct.pack("!i", 0))


def sync() -> bytes:
    return message(ord("S"))


def flush() -> bytes:
    return message(ord("H"))


def query(sql: str) -> bytes:
    return message(ord("Q"), sql.encode() + b"\0")


def frames(data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
    chunk, msgs = Framer().feed(data)
    assert len(chunk) == len(data)
    return chunk, msgs


def split(data: bytes) -> list[bytes]:
    """Whole messages, one bytes object each."""
    chunk, msgs = frames(data)
    return [chunk[s:e] for _, s, e in msgs]


def cstr_at(body: bytes, pos: int) -> tuple[bytes, int]:
    end = body.index(b"\0", pos)
    return body[pos:end], end + 1


# ---- a tiny PostgreSQL: just enough of the extended protocol --------------------------------


class FakePG:
    """Answers frontend messages like one PostgreSQL backend (implicit transactions only)."""

    def __init__(self) -> None:
        self.statements: dict[bytes, bytes] = {}
        self.portals: set[bytes] = set()
        self.skipping = False
        self.parses = 0
        self.log: list[tuple[str, bytes]] = []  # (type, name) of statement messages seen

    def _error(self, text: str, code: str) -> list[bytes]:
        self.skipping = True
        return [error_response(text, code)]

    def handle(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for m in split(data):
            out += self._one(m)
        return out

    def _one(self, m: bytes) -> list[bytes]:
        t, body = chr(m[0]), m[5:]
        if t == "S":
            self.skipping = False
            self.portals.discard(b"")
            return [message(ord("Z"), b"I")]
        if self.skipping:
            return []
        if t == "Q":
            if resets_statements(body[:-1]):
                self.statements.clear()
            return [message(ord("C"), b"OK\0"), message(ord("Z"), b"I")]
        if t == "P":
            name, pos = cstr_at(body, 0)
            self.log.append(("P", name))
            if name and name in self.statements:
                return self._error(f'prepared statement "{name.decode()}" already exists',
                                   "42P05")
            if body[pos:].startswith(b"bad"):
                return self._error("syntax error at or near \"bad\"", "42601")
            self.parses += 1
            self.statements[name] = body[pos:]
            return [message(ord("1"))]
        if t == "B":
            portal, pos = cstr_at(body, 0)
            name, _ = cstr_at(body, pos)
            self.log.append(("B", name))
            if name not in self.statements:
                return self._error(f'prepared statement "{name.decode()}" does not exist',
                                   "26000")
            self.portals.add(portal)
            return [message(ord("2"))]
        if t == "D":
            name, _ = cstr_at(body, 1)
            if body[:1] == b"S":
                self.log.append(("D", name))
                if name not in self.statements:
                    return self._error(
                        f'prepared statement "{name.decode()}" does not exist', "26000")
                return [message(ord("t"), b"\0\0"), message(ord("n"))]
            return [message(ord("n"))]
        if t == "E":
            return [message(ord("C"), b"SELECT 1\0")]
        if t == "C":
            name, _ = cstr_at(body, 1)
            if body[:1] == b"S":
                self.log.append(("C", name))
                self.statements.pop(name, None)
            else:
                self.portals.discard(name)
            return [message(ord("3"))]
        if t == "H":
            return []
        raise AssertionError(f"unexpected message {t}")


class Pooled:
    """pgmux's view: clients and servers, each client batch sent to a chosen server."""

    def __init__(self, max_prepared: int = 100, servers: int = 2) -> None:
        self.registry = PreparedRegistry()
        self.servers = [(ServerStatements(max_prepared), FakePG()) for _ in range(servers)]
        self.clients: dict[str, ClientStatements] = {}
        self.sent: list[bytes] = []  # what the last batch wrote to the server

    def client(self, who: str) -> ClientStatements:
        if who not in self.clients:
            self.clients[who] = ClientStatements(self.registry)
        return self.clients[who]

    def send(self, who: str, server: int, data: bytes, per_message: bool = False) -> list[bytes]:
        """One client batch through rewrite, the server and the answer filter."""
        st, pg = self.servers[server]
        client = self.client(who)
        pieces = split(data) if per_message else [data]
        self.sent = []
        for piece in pieces:
            chunk, msgs = frames(piece)
            rw = rewrite(chunk, msgs, client, st)
            if not rw.changed:
                assert rw.data is chunk
            self.sent.append(rw.data)
        answers = pg.handle(b"".join(self.sent))
        return self.filter(st, answers)

    @staticmethod
    def filter(st: ServerStatements, answers: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for m in answers:
            if st.pending and m[0] in ANSWER_TYPES:
                r = st.feed(m[0], m)
                out.append(m if r is None else r)
            else:
                out.append(m)
        return [m for m in out if m]


class Direct:
    """What each client would see talking to its own PostgreSQL."""

    def __init__(self) -> None:
        self.pgs: dict[str, FakePG] = {}

    def send(self, who: str, data: bytes) -> list[bytes]:
        return self.pgs.setdefault(who, FakePG()).handle(data)


def types(msgs: list[bytes]) -> str:
    return "".join(chr(m[0]) for m in msgs)


def sent_log(pool: Pooled) -> list[tuple[str, bytes]]:
    """(type, name) of each statement message in what the last batch wrote."""
    out = []
    for m in split(b"".join(pool.sent)):
        t, body = chr(m[0]), m[5:]
        if t == "P":
            out.append((t, cstr_at(body, 0)[0]))
        elif t == "B":
            _, pos = cstr_at(body, 0)
            out.append((t, cstr_at(body, pos)[0]))
        elif t in "DC" and body[:1] == b"S":
            out.append((t, cstr_at(body, 1)[0]))
        else:
            out.append((t, b""))
    return out


# ---- scenarios ------------------------------------------------------------------------------


def test_one_client_two_servers_injects_parse_on_second() -> None:
    pool = Pooled()
    first = parse("s1", "SELECT $1::int", (23,)) + bind("s1", params=(b"1",)) + execute() + sync()
    assert types(pool.send("a", 0, first)) == "12CZ"
    assert sent_log(pool) == [("P", b"PGMUX_1"), ("B", b"PGMUX_1"), ("E", b""), ("S", b"")]

    again = bind("s1", params=(b"2",)) + execute() + sync()
    assert types(pool.send("a", 1, again)) == "2CZ"  # the injected ParseComplete is dropped
    assert sent_log(pool) == [("P", b"PGMUX_1"), ("B", b"PGMUX_1"), ("E", b""), ("S", b"")]
    assert pool.servers[1][1].statements == {b"PGMUX_1": b"SELECT $1::int\0\0\x01\0\0\0\x17"}

    # Back on the first server: already there, nothing injected.
    assert types(pool.send("a", 0, again)) == "2CZ"
    assert sent_log(pool) == [("B", b"PGMUX_1"), ("E", b""), ("S", b"")]
    assert all(not st.pending for st, _ in pool.servers)


def test_describe_statement_injects_parse_too() -> None:
    pool = Pooled()
    pool.send("a", 0, parse("s1", "SELECT 1") + sync())
    assert types(pool.send("a", 1, describe("S", "s1") + sync())) == "tnZ"
    assert sent_log(pool) == [("P", b"PGMUX_1"), ("D", b"PGMUX_1"), ("S", b"")]


def test_two_clients_share_one_server_statement() -> None:
    pool = Pooled()
    assert types(pool.send("a", 0, parse("a1", "SELECT 42") + sync())) == "1Z"
    # Same content under another client name: no Parse reaches the server, yet '1' arrives.
    answers = pool.send("b", 0, parse("b_stmt", "SELECT 42") + bind("b_stmt") + execute() + sync())
    assert answers[0] == PARSE_COMPLETE
    assert types(answers) == "12CZ"
    assert sent_log(pool) == [("C", b"PGMUX_NONE"), ("B", b"PGMUX_1"), ("E", b""), ("S", b"")]
    assert pool.servers[0][1].parses == 1
    assert pool.registry.name_for(b"SELECT 42\0\0\0") == b"PGMUX_1"
    # Different parameter types are a different statement.
    pool.send("b", 0, parse("typed", "SELECT 42", (23,)) + sync())
    assert sent_log(pool)[0] == ("P", b"PGMUX_2")


def test_parse_of_existing_name_fails_like_postgres() -> None:
    pool, direct = Pooled(), Direct()
    batch = parse("s1", "SELECT 1") + sync()
    assert pool.send("a", 0, batch) == direct.send("a", batch)
    again = parse("s1", "SELECT 2") + bind("s1") + execute() + sync()
    got = pool.send("a", 1, again)
    assert got == direct.send("a", again)
    assert types(got) == "EZ"
    err = parse_error(got[0][5:])
    assert (err.sqlstate, err.message) == ("42P05", 'prepared statement "s1" already exists')
    # The original statement is untouched and usable.
    ok = bind("s1") + execute() + sync()
    assert pool.send("a", 1, ok) == direct.send("a", ok)


@pytest.mark.parametrize("msg", [bind("nope"), describe("S", "nope")])
def test_unknown_statement_fails_and_skips_to_sync(msg: bytes) -> None:
    pool, direct = Pooled(), Direct()
    batch = parse("s2", "SELECT 1") + sync() + msg + execute() + parse("later", "SELECT 3") + sync()
    got = pool.send("a", 0, batch)
    assert got == direct.send("a", batch)
    assert types(got) == "1ZEZ"
    err = parse_error(got[2][5:])
    assert (err.sqlstate, err.message) == ("26000", 'prepared statement "nope" does not exist')
    # "later" was skipped by the server after the error, so it does not exist (as in PostgreSQL).
    assert "later" not in [n.decode() for n in pool.clients["a"].names]
    probe = bind("later") + sync()
    assert pool.send("a", 0, probe) == direct.send("a", probe)


def test_close_of_client_statement_keeps_server_copy() -> None:
    pool, direct = Pooled(), Direct()
    for who in ("a", "b"):
        batch = parse("s", "SELECT 7") + sync()
        assert pool.send(who, 0, batch) == direct.send(who, batch)
    batch = close("S", "s") + sync()
    got = pool.send("a", 0, batch)
    assert got == direct.send("a", batch)
    assert types(got) == "3Z"
    assert sent_log(pool) == [("C", b"PGMUX_NONE"), ("S", b"")]
    assert b"PGMUX_1" in pool.servers[0][1].statements
    # a's name is gone, b's still works; closing an unknown name is not an error.
    for who, batch in (("a", bind("s") + sync()), ("b", bind("s") + execute() + sync()),
                       ("a", close("S", "never") + sync())):
        assert pool.send(who, 0, batch) == direct.send(who, batch)
    # a can reuse the name, in the same batch as a Close.
    batch = close("S", "s") + parse("s", "SELECT 8") + bind("s") + execute() + sync()
    assert pool.send("a", 1, batch) == direct.send("a", batch)


def test_deallocate_all_clears_the_client_namespace() -> None:
    pool, direct = Pooled(), Direct()
    batch = parse("s1", "SELECT 1") + parse("s2", "SELECT 2") + sync()
    assert pool.send("a", 0, batch) == direct.send("a", batch)
    chunk, msgs = frames(query("DEALLOCATE ALL"))
    rw = rewrite(chunk, msgs, pool.client("a"), pool.servers[0][0])
    assert rw.reset and not rw.changed and len(pool.client("a")) == 0
    st, pg = pool.servers[0]
    assert pool.filter(st, pg.handle(rw.data)) == direct.send("a", query("DEALLOCATE ALL"))
    assert pg.statements == {}
    # Parsing the same names again works; stale server names are closed first (no-ops).
    batch = parse("s1", "SELECT 1") + bind("s1") + execute() + sync()
    assert pool.send("a", 0, batch) == direct.send("a", batch)
    assert ("C", b"PGMUX_1") in sent_log(pool)
    assert not st.pending


def test_discard_all_in_unnamed_parse_is_reported() -> None:
    pool = Pooled()
    pool.send("a", 0, parse("s1", "SELECT 1") + sync())
    chunk, msgs = frames(parse("", "  discard\n ALL") + bind("") + execute() + sync())
    rw = rewrite(chunk, msgs, pool.client("a"), pool.servers[0][0])
    assert rw.reset and not rw.changed
    assert len(pool.client("a")) == 0
    assert not pool.servers[0][0].prepared  # written off at the Sync


def test_lru_eviction_size_two_five_statements_in_rotation() -> None:
    pool, direct = Pooled(max_prepared=2, servers=1), Direct()
    sqls = [f"SELECT {i}" for i in range(5)]
    batch = b"".join(parse(f"q{i}", s) for i, s in enumerate(sqls)) + sync()
    assert pool.send("a", 0, batch) == direct.send("a", batch)
    st, pg = pool.servers[0]
    closes = [n for t, n in sent_log(pool) if t == "C"]
    assert closes == [b"PGMUX_1", b"PGMUX_2", b"PGMUX_3"]
    assert [s.name for s in st.prepared] == [b"PGMUX_4", b"PGMUX_5"]
    assert set(pg.statements) == {b"PGMUX_4", b"PGMUX_5"}
    for rnd in range(3):
        for i in range(5):
            batch = bind(f"q{i}") + execute() + sync()
            assert pool.send("a", 0, batch) == direct.send("a", batch), (rnd, i)
            log = sent_log(pool)
            # Each Bind needs a re-Parse, preceded by the Close of the least recently used.
            assert log[-4:] == [("P", f"PGMUX_{i + 1}".encode()), ("B", f"PGMUX_{i + 1}".encode()),
                                ("E", b""), ("S", b"")]
            assert log[0][0] == "C"
            assert len(pg.statements) == 2
            assert not st.pending


def test_eviction_spares_statements_of_the_current_batch() -> None:
    pool = Pooled(max_prepared=2, servers=1)
    pool.send("a", 0, b"".join(parse(f"q{i}", f"SELECT {i}") for i in range(3)) + sync())
    batch = bind("q0", "p0") + bind("q1", "p1") + bind("q2", "p2") + execute("p0") + sync()
    assert types(pool.send("a", 0, batch)) == "222CZ"
    # q1 and q2 make room for q0 and q1; q2 cannot evict the bound q0 or q1 and overflows.
    assert [n for t, n in sent_log(pool) if t == "C"] == [b"PGMUX_2", b"PGMUX_3"]
    st, pg = pool.servers[0]
    assert len(st.prepared) == len(pg.statements) == 3
    pool.send("a", 0, parse("q3", "SELECT 3") + sync())  # trimmed back at the next Parse
    assert len(st.prepared) == len(pg.statements) == 2


def test_answer_filter_drops_injected_and_replaces_noop_in_order() -> None:
    reg = PreparedRegistry()
    a, b = ClientStatements(reg), ClientStatements(reg)
    st = ServerStatements(10)
    other = ServerStatements(10)
    chunk, msgs = frames(parse("x", "SELECT 1") + sync())
    rewrite(chunk, msgs, a, other)  # a knows x; this server does not have it
    other.pending.clear()
    chunk, msgs = frames(parse("y", "SELECT 2") + sync())
    rewrite(chunk, msgs, b, st)
    assert [st.feed(ord("1")), st.feed(ord("Z"))] == [None, None]
    # a: Parse(dup of y's content) -> no-op Close; Bind x -> injected Parse; unnamed Parse.
    batch = parse("z", "SELECT 2") + bind("x") + parse("", "SELECT 3") + close("P", "") + sync()
    chunk, msgs = frames(batch)
    rw = rewrite(chunk, msgs, a, st)
    assert rw.data.startswith(NOOP_CLOSE)
    server_answers = [ord(c) for c in "31213Z"]
    actions = [st.feed(t) for t in server_answers]
    assert actions == [PARSE_COMPLETE, b"", None, None, None, None]
    assert not st.pending
    # Fast path: nothing pending, nothing to do.
    assert st.feed(ord("1")) is None


def test_error_mid_batch_discards_the_rest_and_undoes() -> None:
    pool, direct = Pooled(), Direct()
    pool.send("b", 1, parse("shared", "SELECT 5") + sync())  # content known in the registry
    batch = (parse("good", "SELECT 4") + parse("bad1", "bad sql") + parse("s2", "SELECT 5")
             + bind("good") + close("S", "good") + sync())
    got = pool.send("a", 0, batch)
    assert got == direct.send("a", batch)
    assert types(got) == "1EZ"
    st, pg = pool.servers[0]
    assert not st.pending
    client = pool.clients["a"]
    assert "good" in [n.decode() for n in client.names]  # its Close was skipped
    assert b"bad1" not in client and b"s2" not in client
    # The server model holds only what the server really has.
    assert {s.name for s in st.prepared} == set(pg.statements)
    for batch in (bind("s2") + sync(), bind("bad1") + sync(),
                  bind("good") + execute() + sync(), parse("bad1", "SELECT 6") + sync()):
        assert pool.send("a", 0, batch) == direct.send("a", batch)


def test_pipelined_batches_heal_after_a_failed_parse() -> None:
    pool = Pooled(servers=1)
    st, pg = pool.servers[0]
    client = pool.client("a")
    data = [parse("s", "bad") + sync(), bind("s") + execute() + sync()]
    sent = []
    for d in data:  # both written before any answer arrives
        chunk, msgs = frames(d)
        sent.append(rewrite(chunk, msgs, client, st).data)
    got = pool.filter(st, pg.handle(b"".join(sent)))
    assert types(got) == "EZEZ"
    assert not st.pending and not st.prepared and b"s" not in client
    # Stale name gets closed before the statement is parsed again.
    assert types(pool.send("a", 0, parse("s", "bad") + sync())) == "EZ"
    batch = bind("x") + sync()
    assert types(pool.send("a", 0, batch)) == "EZ"


def test_flush_without_sync_still_gets_answers() -> None:
    pool = Pooled()
    pool.send("a", 0, parse("s", "SELECT 1") + sync())
    assert types(pool.send("b", 0, parse("t", "SELECT 1") + flush())) == "1"
    assert types(pool.send("b", 0, sync())) == "Z"
    assert not pool.servers[0][0].pending


def test_unnamed_statements_pass_through_unchanged() -> None:
    pool = Pooled()
    data = (parse("", "SELECT $1", (23,)) + bind("", "", (b"1",)) + describe("P", "")
            + execute() + close("P", "") + sync() + query("SELECT 1"))
    chunk, msgs = frames(data)
    st = pool.servers[0][0]
    rw = rewrite(chunk, msgs, pool.client("a"), st)
    assert not rw.changed and rw.data is chunk and not rw.reset
    assert (rw.client_parses, rw.server_parses, rw.binds) == (0, 0, 0)
    answers = pool.servers[0][1].handle(rw.data)
    assert pool.filter(st, answers) == answers
    assert not st.pending


def test_named_portals_pass_through() -> None:
    pool = Pooled()
    pool.send("a", 0, parse("s", "SELECT 1") + sync())
    pool.send("a", 0, bind("s", portal="cur") + describe("P", "cur") + execute("cur")
              + close("P", "cur") + sync())
    assert sent_log(pool) == [("B", b"PGMUX_1"), ("D", b""), ("E", b""), ("C", b""), ("S", b"")]


def test_disabled_when_max_prepared_statements_is_zero() -> None:
    reg = PreparedRegistry()
    st = ServerStatements(0)
    chunk, msgs = frames(parse("s", "SELECT 1") + bind("s") + sync())
    rw = rewrite(chunk, msgs, ClientStatements(reg), st)
    assert not rw.changed and rw.data is chunk and not st.pending


def test_counters() -> None:
    pool = Pooled()
    chunk, msgs = frames(parse("s", "SELECT 1") + bind("s") + bind("s") + sync())
    rw = rewrite(chunk, msgs, pool.client("a"), pool.servers[0][0])
    assert (rw.client_parses, rw.server_parses, rw.binds) == (1, 1, 2)
    chunk, msgs = frames(bind("s") + sync())
    rw = rewrite(chunk, msgs, pool.client("a"), pool.servers[1][0])
    assert (rw.client_parses, rw.server_parses, rw.binds) == (0, 1, 1)


def test_copy_in_drops_ignored_syncs() -> None:
    pool = Pooled()
    st = pool.servers[0][0]
    pool.send("a", 0, parse("s", "SELECT 1") + sync())
    chunk, msgs = frames(bind("s") + execute() + sync())
    rewrite(chunk, msgs, pool.client("a"), st)
    assert st.feed(ord("G")) is None  # the Sync after the COPY's Execute is ignored
    assert not st.pending


def test_resets_statements() -> None:
    assert resets_statements(b"DEALLOCATE ALL")
    assert resets_statements(b"select 1; deallocate  prepare\tall")
    assert resets_statements(b"DISCARD ALL")
    assert not resets_statements(b"DEALLOCATE s1")
    assert not resets_statements(b"DISCARD TEMP")
    assert not resets_statements(b"SELECT 1")


def test_malformed_messages_raise() -> None:
    from pgmux.protocol.messages import ProtocolError

    pool = Pooled()
    for bad in (message(ord("P"), b"noterminator"), message(ord("D"), b"S"),
                message(ord("B"), b"\0s")):
        chunk, msgs = frames(bad)
        with pytest.raises(ProtocolError):
            rewrite(chunk, msgs, pool.client("a"), pool.servers[0][0])


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("per_message", [False, True])
def test_random_traffic_matches_direct_postgres(seed: int, per_message: bool) -> None:
    """Random batches from three clients over three servers (LRU of 3) look to every client
    exactly as they would on its own PostgreSQL."""
    rng = random.Random(seed)
    pool, direct = Pooled(max_prepared=3, servers=3), Direct()
    names = ["a", "b", "c", "d", "e"]
    sqls = ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4", "bad", "SELECT 5"]

    def op() -> bytes:
        r = rng.random()
        n = rng.choice(names)
        if r < 0.3:
            return parse(n, rng.choice(sqls))
        if r < 0.6:
            return bind(n) + execute()
        if r < 0.7:
            return describe("S", n)
        if r < 0.8:
            return close("S", n)
        if r < 0.85:
            return parse("", "SELECT 0") + bind("") + execute()
        if r < 0.88:
            return query("DEALLOCATE ALL")
        return bind(n, portal="p") + close("P", "p")

    for step in range(60):
        who = rng.choice("xyz")
        batch = b"".join(op() for _ in range(rng.randint(1, 5))) + sync()
        got = pool.send(who, rng.randrange(3), batch, per_message=per_message)
        assert got == direct.send(who, batch), (seed, step)
        for st, pg in pool.servers:
            assert not st.pending
            assert {s.name for s in st.prepared} <= set(pg.statements)


def test_query_inside_an_unsynced_batch_is_probed() -> None:
    pool, direct = Pooled(), Direct()
    for batch in (parse("s", "SELECT 1") + query("SELECT 2") + bind("s") + execute() + sync(),
                  parse("t", "bad") + query("DEALLOCATE ALL") + sync(),
                  bind("s") + execute() + sync()):
        got = pool.send("a", 0, batch)
        assert got == direct.send("a", batch)
        assert not pool.servers[0][0].pending
    # The skipped DEALLOCATE ALL did not clear the client's names.
    assert b"s" in pool.clients["a"]


def test_note_sent_keeps_the_pooler_own_messages_in_step() -> None:
    pool = Pooled()
    st, pg = pool.servers[0]
    pool.send("a", 1, parse("s", "SELECT 1") + sync())
    chunk, msgs = frames(bind("s") + sync())
    own = query("SELECT pg_catalog.set_config('x.y', '1', false)")
    st.note_sent(b"Q")
    rw = rewrite(chunk, msgs, pool.client("a"), st)
    answers = pg.handle(own + rw.data)
    assert types(pool.filter(st, answers)) == "CZ2Z"
    assert not st.pending


def test_resets_statements_within_bounds() -> None:
    data = b"xxDEALLOCATE ALL\0yy"
    assert resets_statements(data, 2, len(data) - 3)
    assert not resets_statements(b"SELECT 1; DEALLOCATE ALL", 0, 9)


@pytest.mark.parametrize(("batch", "refused"), [
    (parse("a", "select 1") + sync(), None),
    (parse("a", "select 1") + parse("a", "select 2") + sync(), [(b"a", "42P05")]),
    (bind("ghost") + execute() + sync(), [(b"ghost", "26000")]),
    (describe("S", "ghost") + sync(), [(b"ghost", "26000")]),
    (parse("a", "select 1") + bind("a") + describe("S", "b") + parse("a", "x") + sync(),
     [(b"b", "26000"), (b"a", "42P05")]),
    # unnamed statements and portals are PostgreSQL's business
    (bind("") + describe("P", "ghost") + sync(), None),
])
def test_rewrite_names_what_it_refused(batch: bytes, refused: list[tuple[bytes, str]] | None
                                       ) -> None:
    """Rewrite.refused: the names pgmux answered with its own error, for PgBouncer's log lines
    ("prepared statement 'x' was already prepared" / "... not found")."""
    client = ClientStatements(PreparedRegistry())
    chunk, msgs = frames(batch)
    assert rewrite(chunk, msgs, client, ServerStatements(10)).refused == refused
