"""Message framing without I/O: a whole-message framer and a cut-through scanner that reads
only 5-byte headers and the bodies of the few message types a decision depends on."""

from __future__ import annotations

from typing import Final

from pgmux.protocol.messages import HEADER, ProtocolError, byte_table

_unpack_header: Final = HEADER.unpack_from

# NOTE: PostgreSQL caps a message at 1 GB; a length below 4 can never be valid.
MAX_MESSAGE: Final = 0x40000000
# What a client may send after its startup packet: the simple and extended protocol, COPY,
# function calls, Terminate, and password messages during authentication.
_ANY_TYPE: Final = b"\x01" * 256
FRONTEND_TYPES: Final = bytes(1 if chr(t) in "QPBEDCHSFXdcfp" else 0 for t in range(256))


class Framer:
    """Collects bytes and hands out runs of complete messages.

    `feed` returns the contiguous bytes of every complete message now available together with
    (type, start, end) offsets into them. When nothing is buffered and the data holds only whole
    messages, the input object itself is returned, so the common case copies nothing.
    """

    __slots__ = ("_buf", "max_message", "types")

    def __init__(self, max_message: int = MAX_MESSAGE, types: bytes | None = None) -> None:
        self._buf = bytearray()
        self.max_message = max_message
        # NOTE: a byte table of the message types the peer may send; another type ends the
        # connection at its header (PostgreSQL's "invalid frontend message type"), instead of
        # waiting for as many bytes as its would-be length says.
        self.types = types if types is not None else _ANY_TYPE

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
        n = len(data)
        if not self._buf and n >= 5:
            # NOTE: the common case, one whole message (a Query), without the loop.
            t, length = _unpack_header(data, 0)
            if length + 1 == n and 4 <= length <= self.max_message and self.types[t]:
                return data, [(t, 0, n)]
        if self._buf:
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        n = len(data)
        pos = 0
        out: list[tuple[int, int, int]] = []
        max_message = self.max_message
        types = self.types
        while pos + 5 <= n:
            t, length = _unpack_header(data, pos)
            end = pos + 1 + length
            if not types[t]:
                raise ProtocolError(f"invalid frontend message type {t}")
            if length < 4 or length > max_message:
                raise ProtocolError(f"invalid message length {length} for type {chr(t)!r}")
            if end > n:
                break
            out.append((t, pos, end))
            pos = end
        if pos < n:
            if not types[data[pos]]:
                raise ProtocolError(f"invalid frontend message type {data[pos]}")
            self._buf += data[pos:] if pos else data
            data = data[:pos]
        return data, out


class BackendScanner:
    """Cut-through scanner for the server -> client stream.

    Fast mode: bytes are released for forwarding as soon as they arrive; only messages whose type
    is marked in `watch` are held until complete and reported as (type, message bytes). Whole
    mode: every complete message is reported and nothing is released, so the caller can drop
    some (answers to messages the pooler injected) and forward the rest itself.
    """

    __slots__ = ("_skip", "_tail", "watch", "_table", "_all")

    def __init__(self, watch: bytes | bytearray) -> None:
        self._skip = 0  # body bytes of an unwatched message still to pass through
        self._tail = b""  # held-back start of a message (partial header or watched body)
        self.watch = byte_table(watch)  # NOTE: a byte table: the hot loop does one index op
        self._all = _ANY_TYPE
        self._table = self.watch  # the table in force: `watch`, or every type in whole mode
        self.whole = False

    @property
    def whole(self) -> bool:
        return self._table is self._all

    @whole.setter
    def whole(self, on: bool) -> None:
        self._table = self._all if on else self.watch

    @property
    def at_boundary(self) -> bool:
        """True when no message is partly seen: it is safe to switch modes or hand over."""
        return not self._skip and not self._tail

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, bytes, int]]]:
        """Returns (bytes to forward now, events): watched or - in whole mode - all complete
        messages as (type, message bytes, offset of the message in the forwarded bytes; in
        whole mode nothing is forwarded and the offset means nothing)."""
        skip = self._skip
        if skip:
            return self._after_skip(data, skip)
        events: list[tuple[int, bytes, int]] = []
        if self._tail:
            data = self._tail + data
            self._tail = b""
        n = len(data)
        pos = 0
        table = self._table
        # NOTE: the hot loop: one header unpack and one table lookup per unwatched message.
        while pos + 5 <= n:
            t, length = _unpack_header(data, pos)
            if table[t] or length < 4:
                if length < 4:
                    raise ProtocolError(f"invalid message length {length} from server")
                end = pos + 1 + length
                if end > n:
                    break
                events.append((t, data[pos:end], pos))
                pos = end
            else:
                pos += 1 + length
        if pos > n:
            # NOTE: an unwatched message runs past the data: its rest streams through later.
            self._skip = pos - n
        elif pos < n:
            self._tail = data[pos:]
            data = data[:pos]
        if table is self._all:
            return b"", events
        return data, events

    def _after_skip(self, data: bytes, skip: int) -> tuple[bytes, list[tuple[int, bytes, int]]]:
        """feed() while the rest of an unwatched message is still passing through."""
        n = len(data)
        if skip >= n:
            self._skip = skip - n
            return data, []
        # NOTE: in whole mode an unwatched message started in fast mode still streams out.
        self._skip = 0
        rest_out, events = self.feed(data[skip:])
        return data[:skip] + rest_out, [(t, msg, pos + skip) for t, msg, pos in events]
