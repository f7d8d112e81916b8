"""Framing without I/O: whole, byte at a time, split anywhere, trailing bytes, bad lengths."""

from __future__ import annotations

import pytest

from pgmux.protocol import messages as m
from pgmux.protocol.framing import BackendScanner, Framer

STREAM = (m.query("select 1") + m.message(ord("P"), b"s1\0select $1\0\0\0") +
          m.message(ord("B"), b"\0s1\0\0\0\0\0\0\0") + m.message(ord("S")))
TYPES = [ord("Q"), ord("P"), ord("B"), ord("S")]


def frame_all(framer: Framer, pieces: list[bytes]) -> list[tuple[int, bytes]]:
    out = []
    for piece in pieces:
        chunk, msgs = framer.feed(piece)
        out += [(t, chunk[s:e]) for t, s, e in msgs]
    return out


def test_whole() -> None:
    framer = Framer()
    chunk, msgs = framer.feed(STREAM)
    assert chunk is STREAM  # the common case copies nothing
    assert [t for t, _, _ in msgs] == TYPES
    assert b"".join(chunk[s:e] for _, s, e in msgs) == STREAM


def test_byte_at_a_time() -> None:
    got = frame_all(Framer(), [STREAM[i:i + 1] for i in range(len(STREAM))])
    assert [t for t, _ in got] == TYPES
    assert b"".join(msg for _, msg in got) == STREAM


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_anywhere(cut: int) -> None:
    got = frame_all(Framer(), [STREAM[:cut], STREAM[cut:]])
    assert b"".join(msg for _, msg in got) == STREAM


def test_trailing_bytes_wait_for_the_rest() -> None:
    framer = Framer()
    chunk, msgs = framer.feed(STREAM + b"Q\0\0")
    assert len(msgs) == 4 and chunk == STREAM
    assert framer.buffered == 3
    chunk, msgs = framer.feed(b"\0\x05\0")
    assert [(t, chunk[s:e]) for t, s, e in msgs] == [(ord("Q"), b"Q\0\0\0\x05\0")]
    assert framer.buffered == 0


def test_bad_length_is_a_protocol_error() -> None:
    with pytest.raises(m.ProtocolError):
        Framer().feed(b"Q\0\0\0\x02")


def server_stream() -> bytes:
    return (m.message(ord("T"), b"\0\x01x\0" + b"\0" * 18) +
            m.data_row(["1"]) + m.data_row(["2" * 5000]) + m.command_complete("SELECT 2") +
            m.parameter_status("TimeZone", "UTC") + m.ready_for_query(b"T"))


def test_scanner_forwards_everything_and_reports_watched() -> None:
    data = server_stream()
    scanner = BackendScanner(b"ZS")
    out, events = scanner.feed(data)
    assert out == data
    assert [t for t, _, _ in events] == [ord("S"), ord("Z")]
    for _, msg, pos in events:
        assert out[pos:pos + len(msg)] == msg
    assert events[-1][1][5] == ord("T")
    assert scanner.at_boundary


def test_scanner_byte_at_a_time_preserves_stream() -> None:
    data = server_stream()
    scanner = BackendScanner(b"ZS")
    out = b""
    events = []
    for i in range(len(data)):
        o, e = scanner.feed(data[i:i + 1])
        out += o
        events += e
    assert out == data
    assert [(t, msg) for t, msg, _ in events] == [
        (ord("S"), m.parameter_status("TimeZone", "UTC")), (ord("Z"), m.ready_for_query(b"T"))]


def test_scanner_streams_unwatched_bodies_before_they_complete() -> None:
    big = m.data_row(["x" * 100000])
    scanner = BackendScanner(b"Z")
    out, events = scanner.feed(big[:50000])
    # Cut-through: the partial DataRow goes out at once.
    assert out == big[:50000] and not events and not scanner.at_boundary
    out, events = scanner.feed(big[50000:] + m.ready_for_query())
    assert out == big[50000:] + m.ready_for_query()
    assert scanner.at_boundary


def test_scanner_holds_a_watched_message_until_complete() -> None:
    z = m.ready_for_query(b"I")
    scanner = BackendScanner(b"Z")
    out, events = scanner.feed(m.command_complete("SELECT 1") + z[:3])
    assert out == m.command_complete("SELECT 1") and not events
    out, events = scanner.feed(z[3:])
    assert out == z and events == [(ord("Z"), z, 0)]


def test_scanner_whole_mode_reports_all_and_forwards_nothing() -> None:
    data = m.command_complete("SET") + m.ready_for_query() + m.data_row(["a"])
    scanner = BackendScanner(b"Z")
    scanner.whole = True
    out, events = scanner.feed(data)
    assert out == b""
    assert [t for t, _, _ in events] == [ord("C"), ord("Z"), ord("D")]


def test_startup_packet_parsing() -> None:
    pkt = m.startup_message({"user": "u", "database": "d", "application_name": "x"})
    buf = bytearray(pkt + b"extra")
    got = m.take_startup_packet(buf)
    assert got == pkt and buf == b"extra"
    parsed = m.parse_startup_packet(pkt)
    assert isinstance(parsed, m.Startup)
    assert parsed.params == {"user": "u", "database": "d", "application_name": "x"}
    assert isinstance(m.parse_startup_packet(m.cancel_request(7, 9)), m.CancelRequest)
    assert m.take_startup_packet(bytearray(pkt[:5])) is None
    with pytest.raises(m.ProtocolError):
        m.take_startup_packet(bytearray(b"\0\0\0\x02"))


def test_scanner_offsets_survive_a_streamed_prefix() -> None:
    big = m.data_row(["y" * 3000])
    z = m.ready_for_query(b"I")
    scanner = BackendScanner(b"Z")
    scanner.feed(big[:100])
    out, events = scanner.feed(big[100:] + z)
    assert events == [(ord("Z"), z, len(big) - 100)]
    assert out[events[0][2]:] == z
