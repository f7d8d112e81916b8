"""Hypothesis against the sans-IO cores: Framer, BackendScanner, LinkState, the prepared-statement
rewrite and answer filter, startup packets and the `options` parser. No input raises anything but
ProtocolError, and bytes fed in pieces give what the same bytes fed whole give."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pgmux.protocol import messages as m
from pgmux.protocol.framing import MAX_MESSAGE, BackendScanner, Framer
from pgmux.protocol.prepared import (
    ANSWER_TYPES,
    ClientStatements,
    PreparedRegistry,
    ServerStatements,
    rewrite,
)
from pgmux.protocol.session import LinkState
from pgmux.proxy.login import startup_options
from tests.protocol.test_prepared import Direct, Pooled, bind, close, describe, execute, parse
from tests.protocol.test_prepared import query as q
from tests.protocol.test_prepared import sync as sync_msg

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    """data cut at the given points (taken modulo its length, sorted, deduplicated)."""
    if not data:
        return [data]
    at = sorted({p % len(data) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(at, at[1:], strict=False)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


# ---- messages and streams ----------------------------------------------------------------------

def frame(t: int, body: bytes) -> bytes:
    return struct.pack("!BI", t, len(body) + 4) + body


messages = st.builds(frame, st.integers(0, 255), st.binary(max_size=30))
streams = st.lists(messages, max_size=8).map(b"".join)
# Well-framed messages, then possibly bytes with any header at all.
noisy = st.tuples(streams, st.binary(max_size=20)).map(b"".join)
split_points = st.lists(st.integers(0, 1 << 16), max_size=6)


# ---- Framer -------------------------------------------------------------------------------------

def reference_frames(data: bytes, max_message: int = MAX_MESSAGE
                     ) -> tuple[list[bytes], bool, bytes]:
    """(whole messages, whether a bad header follows them, bytes left waiting)."""
    out, pos = [], 0
    while pos + 5 <= len(data):
        t, length = struct.unpack_from("!BI", data, pos)
        if length < 4 or length > max_message:
            return out, True, b""
        if pos + 1 + length > len(data):
            break
        out.append(data[pos:pos + 1 + length])
        pos += 1 + length
    return out, False, data[pos:]


def framer_run(pieces: list[bytes], max_message: int = MAX_MESSAGE
               ) -> tuple[list[bytes], bool, int]:
    framer = Framer(max_message)
    got: list[bytes] = []
    for piece in pieces:
        try:
            chunk, msgs = framer.feed(piece)
        except m.ProtocolError:
            return got, True, framer.buffered
        got += [chunk[s:e] for _, s, e in msgs]
        assert all(chunk[s] == t for t, s, _ in msgs)
    return got, False, framer.buffered


@FUZZ
@given(noisy, split_points)
@example(b"Q\0\0\0\x05x" + b"S\0\0\0\x03", [])
def test_framer_in_pieces_matches_the_reference(data: bytes, points: list[int]) -> None:
    want, bad, rest = reference_frames(data)
    whole = framer_run([data])
    if bad:
        assert whole[1], "a bad length must raise ProtocolError"
    else:
        assert whole == (want, False, len(rest))
    # NOTE: a feed that raises hands out nothing, not even the good messages before the bad
    # header in the same piece (the connection is closing anyway): byte at a time, all of them.
    got, raised, buffered = framer_run(cuts(data, points))
    assert raised == bad and got == want[:len(got)]
    if not bad:
        assert (got, buffered) == (want, len(rest))
    assert framer_run(bytewise(data)) == (want, bad, 0 if bad else len(rest))


@FUZZ
@given(st.binary(max_size=64), st.integers(4, 64))
def test_framer_respects_its_limit(data: bytes, limit: int) -> None:
    want, bad, _ = reference_frames(data, limit)
    got, raised, _ = framer_run(bytewise(data), limit)
    assert (got, raised) == (want, bad)


# ---- BackendScanner -----------------------------------------------------------------------------

valid_messages = st.builds(frame, st.sampled_from(b"TDCZSEGHN12ncsAKRIWdtv"),
                           st.binary(max_size=40))


@FUZZ
@given(st.lists(valid_messages, max_size=10), split_points,
       st.lists(st.booleans(), max_size=12), st.sampled_from([b"Z", b"ZSGE", b"ZSGE123"]))
def test_scanner_loses_nothing_in_either_mode(msgs: list[bytes], points: list[int],
                                              modes: list[bool], watch: bytes) -> None:
    """Fed in pieces, switching between fast and whole mode at random between feeds: every
    byte comes out exactly once and in order (forwarded, or as a whole-mode event), watched
    messages are reported whole, and their offsets point at them."""
    stream = b"".join(msgs)
    scanner = BackendScanner(watch)
    rebuilt = bytearray()
    seen: list[bytes] = []
    for i, piece in enumerate(cuts(stream, points)):
        whole = modes[i] if i < len(modes) else False
        scanner.whole = whole
        out, events = scanner.feed(piece)
        rebuilt += out
        for t, msg, pos in events:
            assert msg[0] == t and len(msg) == struct.unpack_from("!I", msg, 1)[0] + 1
            seen.append(msg)
            if whole:
                rebuilt += msg
            else:
                assert out[pos:pos + len(msg)] == msg
    assert bytes(rebuilt) == stream
    assert scanner.at_boundary
    assert all(msg in msgs for msg in seen)
    assert [x for x in msgs if x[0] in watch] == [x for x in seen if x[0] in watch] or \
        any(modes)


@FUZZ
@given(noisy, split_points, st.booleans())
def test_scanner_raises_only_protocol_errors(data: bytes, points: list[int], whole: bool
                                             ) -> None:
    scanner = BackendScanner(b"ZSGE")
    scanner.whole = whole
    try:
        for piece in cuts(data, points):
            scanner.feed(piece)
    except m.ProtocolError:
        pass


# ---- LinkState ----------------------------------------------------------------------------------

CLIENT_TYPES = b"QPBDECSHFdcfX"
link_ops = st.lists(st.one_of(
    st.tuples(st.just("client"), st.lists(st.sampled_from(CLIENT_TYPES), max_size=6)),
    st.tuples(st.just("ready"), st.sampled_from(b"ITE")),
    st.tuples(st.just("copy_in"), st.none()),
), max_size=30)


@FUZZ
@given(link_ops)
@example([("client", list(b"PBES")), ("ready", ord("I")), ("copy_in", None)])
def test_link_state_counts_never_go_negative(ops: list[tuple[str, object]]) -> None:
    """Whatever order a (misbehaving) server answers in, the counts stay sane: a negative
    `outstanding` would keep the link from ever being released."""
    ls = LinkState()
    for kind, arg in ops:
        if kind == "client":
            assert isinstance(arg, list)
            ls.client_batch([(t, 0, 0) for t in arg])
        elif kind == "ready":
            assert isinstance(arg, int)
            ls.ready(arg)
        else:
            ls.copy_in_started()
        assert ls.outstanding >= 0


# A conversation as PostgreSQL holds it: client units, each answered in order.
units = st.lists(st.one_of(
    st.just("query"), st.just("pipelined_queries"), st.just("extended"),
    st.just("extended_two_syncs"), st.just("copy_simple"), st.just("copy_extended"),
    st.just("flush_then_sync"),
), max_size=12)


@FUZZ
@given(units)
def test_link_state_is_idle_after_every_answered_unit(plan: list[str]) -> None:
    ls = LinkState()
    Q, P, B, E, S, H = (ord(c) for c in "QPBESH")
    d, c = ord("d"), ord("c")
    for unit in plan:
        if unit == "query":
            ls.client_batch([(Q, 0, 0)])
            released = ls.ready(73)
        elif unit == "pipelined_queries":
            ls.client_batch([(Q, 0, 0)] * 3)
            assert not ls.ready(73) and not ls.ready(73)
            released = ls.ready(73)
        elif unit == "extended":
            ls.client_batch([(t, 0, 0) for t in (P, B, E, S)])
            released = ls.ready(73)
        elif unit == "extended_two_syncs":
            ls.client_batch([(t, 0, 0) for t in (P, B, E, S, B, E, S)])
            assert not ls.ready(73)
            released = ls.ready(73)
        elif unit == "flush_then_sync":
            ls.client_batch([(t, 0, 0) for t in (P, B, E, H)])
            assert not ls.idle
            ls.client_batch([(S, 0, 0)])
            released = ls.ready(73)
        elif unit == "copy_simple":
            ls.client_batch([(Q, 0, 0)])
            ls.copy_in_started()
            ls.client_batch([(d, 0, 0), (d, 0, 0), (c, 0, 0)])
            released = ls.ready(73)
        else:  # copy_extended: the Sync after Execute reaches a server already in copy-in
            ls.client_batch([(t, 0, 0) for t in (P, B, E, S)])
            ls.copy_in_started()
            ls.client_batch([(d, 0, 0), (c, 0, 0), (S, 0, 0)])
            released = ls.ready(73)
        assert released and ls.idle, unit


# ---- the prepared-statement rewrite -------------------------------------------------------------

frontend = st.builds(frame, st.sampled_from(b"PBDECSQHFdcfX"), st.one_of(
    st.binary(max_size=24),
    st.lists(st.sampled_from([b"\0", b"S", b"P", b"s1", b"s2", b"select 1", b"DISCARD ALL",
                              b"\0\0", b"\0\1\0\0\0\x17", b"deallocate all;"]),
             max_size=6).map(b"".join)))


@FUZZ
@given(st.lists(frontend, min_size=1, max_size=8), st.integers(0, 3))
@example([frame(ord("P"), b"noterminator")], 2)
@example([frame(ord("B"), b"\0s")], 2)
def test_rewrite_raises_only_protocol_errors(batch: list[bytes], max_prepared: int) -> None:
    registry = PreparedRegistry()
    client, server = ClientStatements(registry), ServerStatements(max_prepared)
    chunk, msgs = Framer().feed(b"".join(batch))
    try:
        out = rewrite(chunk, msgs, client, server)
    except m.ProtocolError:
        return
    # The rewritten batch is itself well framed.
    reframed, rmsgs = Framer().feed(out.data)
    assert sum(e - s for _, s, e in rmsgs) == len(out.data)


answers = st.lists(st.tuples(st.sampled_from(ANSWER_TYPES + b"CDT"), st.binary(max_size=30)),
                   max_size=12)


@FUZZ
@given(st.lists(frontend, min_size=1, max_size=8), answers, st.integers(1, 3))
def test_answer_filter_takes_any_server_answers(batch: list[bytes],
                                                replies: list[tuple[int, bytes]],
                                                max_prepared: int) -> None:
    """After a batch (well formed or not), any answers at all from a misbehaving server:
    feed never raises and only ever forwards, drops or replaces."""
    registry = PreparedRegistry()
    client, server = ClientStatements(registry), ServerStatements(max_prepared)
    chunk, msgs = Framer().feed(b"".join(batch))
    try:
        rewrite(chunk, msgs, client, server)
    except m.ProtocolError:
        pass
    for t, body in replies:
        out = server.feed(t, frame(t, body))
        assert out is None or isinstance(out, bytes)


@FUZZ
@given(st.lists(frontend, min_size=1, max_size=10), split_points)
def test_rewrite_in_pieces_matches_whole(batch: list[bytes], points: list[int]) -> None:
    """The same client bytes framed whole or arriving in pieces (so rewritten batch by batch)
    produce the same bytes for the server, or the same ProtocolError."""
    data = b"".join(batch)

    def run(pieces: list[bytes]) -> tuple[bytes, bool]:
        registry = PreparedRegistry()
        client, server = ClientStatements(registry), ServerStatements(2)
        framer, sent = Framer(), []
        try:
            for piece in pieces:
                chunk, msgs = framer.feed(piece)
                if msgs:
                    sent.append(rewrite(chunk, msgs, client, server).data)
        except m.ProtocolError:
            return b"".join(sent), True
        return b"".join(sent), False

    whole, whole_raised = run([data])
    for pieces in (cuts(data, points), bytewise(data)):
        got, raised = run(pieces)
        assert raised == whole_raised
        if not raised:
            assert got == whole


names = st.sampled_from(["a", "b", "c", "d"])
sqls = st.sampled_from(["SELECT 1", "SELECT 2", "SELECT 3", "bad"])
ops = st.one_of(
    st.builds(parse, names, sqls),
    st.builds(lambda n: bind(n) + execute(), names),
    st.builds(lambda n: describe("S", n), names),
    st.builds(lambda n: close("S", n), names),
    st.just(parse("", "SELECT 0") + bind("") + execute()),
    st.just(q("DEALLOCATE ALL")),
    st.just(q("SELECT 9")),
    st.builds(lambda n: bind(n, portal="p") + close("P", "p"), names),
)
batches = st.lists(st.tuples(st.sampled_from("xyz"), st.integers(0, 2),
                             st.lists(ops, min_size=1, max_size=5), st.booleans()),
                   min_size=1, max_size=25)


@FUZZ
@given(batches)
def test_prepared_traffic_looks_like_direct_postgres(plan: list[tuple[str, int, list[bytes],
                                                                     bool]]) -> None:
    """Hypothesis's version of the seeded traffic test in test_prepared.py: three clients over
    three servers with an LRU of 2 see exactly what their own PostgreSQL would answer."""
    pool, direct = Pooled(max_prepared=2, servers=3), Direct()
    for who, server, batch_ops, per_message in plan:
        batch = b"".join(batch_ops) + sync_msg()
        assert pool.send(who, server, batch, per_message=per_message) == \
            direct.send(who, batch)
        for st_, pg in pool.servers:
            assert not st_.pending
            assert {s.name for s in st_.prepared} <= set(pg.statements)


# ---- startup packets ----------------------------------------------------------------------------

def take_all(pieces: list[bytes]) -> tuple[list[bytes], bool]:
    buf = bytearray()
    out: list[bytes] = []
    try:
        for piece in pieces:
            buf += piece
            while True:
                packet = m.take_startup_packet(buf)
                if packet is None:
                    break
                out.append(packet)
                m.parse_startup_packet(packet)
    except m.ProtocolError:
        return out, True
    return out, False


startup_like = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda n, body: struct.pack("!I", n) + body, st.integers(0, 200),
              st.binary(max_size=60)),
    st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: "\0" not in s),
                    st.text(max_size=8).filter(lambda s: "\0" not in s),
                    max_size=4).map(m.startup_message),
    st.just(m.ssl_request()), st.just(m.cancel_request(1, 2)),
)


@FUZZ
@given(st.lists(startup_like, min_size=1, max_size=3).map(b"".join), split_points)
def test_startup_packets_in_pieces(data: bytes, points: list[int]) -> None:
    """Only ProtocolError, and pieces give the packets whole feeding gives."""
    whole = take_all([data])
    assert take_all(cuts(data, points)) == whole
    assert take_all(bytewise(data)) == whole


@FUZZ
@given(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda s: "\0" not in s),
                       st.text(max_size=10).filter(lambda s: "\0" not in s), max_size=5))
def test_startup_message_round_trip(params: dict[str, str]) -> None:
    parsed = m.parse_startup_packet(m.startup_message(params))
    assert isinstance(parsed, m.Startup)
    assert parsed.params == params


# ---- the `options` startup parameter ------------------------------------------------------------

def escape(text: str) -> str:
    return "".join("\\" + ch if ch.isspace() or ch == "\\" else ch for ch in text)


setting_names = st.text(st.characters(blacklist_characters="=\0"), min_size=1, max_size=10)


@FUZZ
@given(st.text(max_size=40))
@example("-c")
@example("--")
@example("-c a=b\\")
def test_options_parser_never_raises(text: str) -> None:
    got = startup_options(text)
    assert got is None or all(isinstance(n, str) and isinstance(v, str) for n, v in got)


@FUZZ
@given(st.lists(st.tuples(setting_names, st.text(max_size=10), st.booleans()), max_size=4))
def test_options_round_trip(settings_: list[tuple[str, str, bool]]) -> None:
    assume(all(not n.isspace() for n, _, _ in settings_))
    text = " ".join(("-c " if short else "--") + escape(f"{name}={value}")
                    for name, value, short in settings_)
    assert startup_options(text) == [(n, v) for n, v, _ in settings_]


@pytest.mark.parametrize("text", ["-c", "-c ", "--", "-c =x", "-x a=b", "-c a"])
def test_options_parser_refuses(text: str) -> None:
    assert startup_options(text) is None


# ---- the few parsed backend messages ------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=60))
def test_backend_message_parsers(body: bytes) -> None:
    err = m.parse_error(body)
    assert isinstance(err.sqlstate, str) and isinstance(err.message, str)
    try:
        name, value = m.parse_parameter_status(body)
    except m.ProtocolError:
        return
    assert isinstance(name, str) and isinstance(value, str)
