"""Wire knowledge of the PostgreSQL v3 protocol: message codes, the few parsers and the builders
for messages the pooler writes itself."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PROTOCOL_V3 = 196608  # 3.0
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

HEADER = struct.Struct("!BI")  # type byte, length (includes itself, not the type byte)
INT32 = struct.Struct("!i")
UINT32 = struct.Struct("!I")
INT16 = struct.Struct("!h")

# Frontend (client -> server) message types, as byte values.
F_QUERY = ord("Q")
F_PARSE = ord("P")
F_BIND = ord("B")
F_DESCRIBE = ord("D")
F_EXECUTE = ord("E")
F_CLOSE = ord("C")
F_SYNC = ord("S")
F_FLUSH = ord("H")
F_FUNCTION_CALL = ord("F")
F_TERMINATE = ord("X")
F_PASSWORD = ord("p")
F_COPY_DATA = ord("d")
F_COPY_DONE = ord("c")
F_COPY_FAIL = ord("f")

# Backend (server -> client) message types.
B_AUTH = ord("R")
B_PARAMETER_STATUS = ord("S")
B_BACKEND_KEY = ord("K")
B_READY = ord("Z")
B_ERROR = ord("E")
B_NOTICE = ord("N")
B_PARSE_COMPLETE = ord("1")
B_BIND_COMPLETE = ord("2")
B_CLOSE_COMPLETE = ord("3")
B_COMMAND_COMPLETE = ord("C")
B_COPY_IN = ord("G")
B_COPY_OUT = ord("H")
B_COPY_BOTH = ord("W")
B_ROW_DESCRIPTION = ord("T")
B_DATA_ROW = ord("D")
B_EMPTY_QUERY = ord("I")
B_NOTIFICATION = ord("A")

# Frontend messages that (may) end a batch and so need a server right away.
NEEDS_SERVER = frozenset((F_QUERY, F_SYNC, F_FLUSH, F_FUNCTION_CALL))
# Extended-protocol messages that open or extend a batch that only a Sync closes.
EXTENDED = frozenset((F_PARSE, F_BIND, F_DESCRIBE, F_EXECUTE, F_CLOSE, F_FLUSH))


def byte_table(entries: Mapping[int, int] | Iterable[int]) -> bytes:
    """A 256-entry lookup table by message type: the mapping's values, or 1 for each type
    listed. Immutable bytes, so compiled code indexes it without a call."""
    table = bytearray(256)
    if isinstance(entries, Mapping):
        for t, value in entries.items():
            table[t] = value
    else:
        for t in entries:
            table[t] = 1
    return bytes(table)


class ProtocolError(Exception):
    """The peer sent bytes that break the protocol; the connection must be closed."""


def message(type_byte: int, body: bytes = b"") -> bytes:
    """Frame one message: type, length, body."""
    return HEADER.pack(type_byte, len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


# ---- builders for what the pooler says itself ---------------------------------------------

def auth_ok() -> bytes:
    return message(B_AUTH, INT32.pack(0))


def parameter_status(name: str, value: str) -> bytes:
    return message(B_PARAMETER_STATUS, cstr(name) + cstr(value))


def parameter_status_block(params: Mapping[str, str]) -> bytes:
    """One ParameterStatus message per parameter, concatenated."""
    return b"".join(parameter_status(name, value) for name, value in params.items())


def backend_key_data(pid: int, key: int) -> bytes:
    return message(B_BACKEND_KEY, INT32.pack(pid) + INT32.pack(key))


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(B_READY, status)


def error_response(
    message_text: str, sqlstate: str = "08P01", severity: str = "ERROR", detail: str | None = None
) -> bytes:
    fields = [b"S" + cstr(severity), b"V" + cstr(severity), b"C" + cstr(sqlstate),
              b"M" + cstr(message_text)]
    if detail:
        fields.append(b"D" + cstr(detail))
    return message(B_ERROR, b"".join(fields) + b"\x00")


def notice_response(message_text: str, sqlstate: str = "00000", severity: str = "NOTICE") -> bytes:
    fields = [b"S" + cstr(severity), b"V" + cstr(severity), b"C" + cstr(sqlstate),
              b"M" + cstr(message_text)]
    return message(B_NOTICE, b"".join(fields) + b"\x00")


def command_complete(tag: str) -> bytes:
    return message(B_COMMAND_COMPLETE, cstr(tag))


def row_description(columns: Iterable[tuple[str, int]]) -> bytes:
    """Columns as (name, type oid); all text format."""
    cols = list(columns)
    body = [INT16.pack(len(cols))]
    for name, oid in cols:
        size = {20: 8, 23: 4, 21: 2, 16: 1}.get(oid, -1)
        body.append(cstr(name) + struct.pack("!ihihih", 0, 0, oid, size, -1, 0))
    return message(B_ROW_DESCRIPTION, b"".join(body))


def data_row(values: Iterable[str | int | float | None]) -> bytes:
    vals = list(values)
    body = [INT16.pack(len(vals))]
    for v in vals:
        if v is None:
            body.append(INT32.pack(-1))
        else:
            raw = str(v).encode()
            body.append(INT32.pack(len(raw)) + raw)
    return message(B_DATA_ROW, b"".join(body))


def query(sql: str) -> bytes:
    return message(F_QUERY, cstr(sql))


def terminate() -> bytes:
    return message(F_TERMINATE)


def startup_message(params: Mapping[str, str]) -> bytes:
    body = INT32.pack(PROTOCOL_V3) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return INT32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack("!ii", 8, SSL_REQUEST)


def cancel_request(pid: int, key: int) -> bytes:
    return struct.pack("!iiii", 16, CANCEL_REQUEST, pid, key)


# ---- parsers for the few messages whose content matters ----------------------------------

def parse_cstrings(body: bytes) -> list[str]:
    """Split NUL-terminated strings (a trailing empty terminator is dropped)."""
    parts = body.split(b"\x00")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "replace") for p in parts]


def parse_data_row(body: bytes) -> list[bytes | None]:
    """The column values of a DataRow body (None for NULL). Raises ValueError if short."""
    if len(body) < 2:
        raise ValueError("DataRow too short")
    count = INT16.unpack_from(body, 0)[0]
    pos = 2
    out: list[bytes | None] = []
    for _ in range(count):
        if pos + 4 > len(body):
            raise ValueError("DataRow too short")
        size = INT32.unpack_from(body, pos)[0]
        pos += 4
        if size < 0:
            out.append(None)
            continue
        if pos + size > len(body):
            raise ValueError("DataRow too short")
        out.append(body[pos:pos + size])
        pos += size
    return out


def parse_parameter_status(body: bytes) -> tuple[str, str]:
    parts = parse_cstrings(body)
    if len(parts) < 2:
        raise ProtocolError("malformed ParameterStatus")
    return parts[0], parts[1]


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """The fields of an ErrorResponse or NoticeResponse that the pooler reads."""

    severity: str
    sqlstate: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message} ({self.sqlstate})"


def parse_error(body: bytes) -> ErrorFields:
    fields: dict[str, str] = {}
    for part in body.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return ErrorFields(fields.get("V", fields.get("S", "ERROR")), fields.get("C", "XX000"),
                       fields.get("M", ""))


@dataclass(frozen=True, slots=True)
class Startup:
    """A parsed StartupMessage."""

    protocol: int
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    key: int


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


StartupPacket = Startup | CancelRequest | SSLRequest | GSSENCRequest

MAX_STARTUP_PACKET = 10000


def parse_startup_packet(packet: bytes) -> StartupPacket:
    """Parse an untyped startup-phase packet (length included)."""
    if len(packet) < 8:
        raise ProtocolError("startup packet too short")
    code = INT32.unpack_from(packet, 4)[0]
    if code == SSL_REQUEST:
        return SSLRequest()
    if code == GSSENC_REQUEST:
        return GSSENCRequest()
    if code == CANCEL_REQUEST:
        if len(packet) < 16:
            raise ProtocolError("cancel request too short")
        pid, key = struct.unpack_from("!ii", packet, 8)
        return CancelRequest(pid, key)
    if code >> 16 != 3:
        raise ProtocolError(f"unsupported protocol version {code >> 16}.{code & 0xFFFF}")
    items = packet[8:].split(b"\x00")
    params: dict[str, str] = {}
    it = iter(items)
    for k in it:
        if not k:
            break
        v = next(it, None)
        if v is None:
            raise ProtocolError("malformed startup packet")
        params[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return Startup(code, params)


def take_startup_packet(buf: bytearray) -> bytes | None:
    """Remove and return one complete untyped startup packet from buf, or None if incomplete."""
    if len(buf) < 4:
        return None
    length = INT32.unpack_from(buf, 0)[0]
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise ProtocolError(f"bad startup packet length {length}")
    if len(buf) < length:
        return None
    packet = bytes(buf[:length])
    del buf[:length]
    return packet
