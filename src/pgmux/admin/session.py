"""One admin console connection: speaks the simple protocol (as PgBouncer) and the extended
protocol (Parse/Bind/Describe/Execute/Sync, for drivers that only use it) over the commands."""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgmux.admin.commands import Context, Prepared, execute, prepare
from pgmux.admin.outcome import AdminError, Deferred, Result
from pgmux.admin.parse import bind_params, count_params
from pgmux.admin.show import Column
from pgmux.protocol import messages as m

if TYPE_CHECKING:
    from pgmux.proxy.client import ClientConnection
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_INT64 = struct.Struct("!q")

PARSE_COMPLETE = m.message(m.B_PARSE_COMPLETE)
BIND_COMPLETE = m.message(m.B_BIND_COMPLETE)
CLOSE_COMPLETE = m.message(m.B_CLOSE_COMPLETE)
NO_DATA = m.message(ord("n"))
EMPTY_QUERY = m.message(m.B_EMPTY_QUERY)
READY = m.ready_for_query(b"I")


# ---- encoding results -------------------------------------------------------------------

def numeric_binary(n: int) -> bytes:
    """An integer in PostgreSQL's binary NUMERIC format (base-10000 digits)."""
    sign = 0x4000 if n < 0 else 0
    n = abs(n)
    digits: list[int] = []
    while n:
        n, d = divmod(n, 10000)
        digits.append(d)
    digits.reverse()
    weight = len(digits) - 1 if digits else 0
    while digits and digits[-1] == 0:
        digits.pop()
    return struct.pack(f"!hhhh{len(digits)}h", len(digits), weight, sign, 0, *digits)


def encode_value(value: Any, column: Column, binary: bool) -> bytes | None:
    if value is None:
        return None
    if column.kind == "b":
        raw = bytes(value)
        return raw if binary else b"\\x" + raw.hex().encode()
    if not binary or column.kind in ("s", "T"):
        return str(value).encode()
    if column.kind == "i":
        return _INT32.pack(int(value))
    if column.kind == "q":
        return _INT64.pack(int(value))
    return numeric_binary(int(value))


def row_description(columns: Sequence[Column], formats: Sequence[int] = ()) -> bytes:
    body = [_INT16.pack(len(columns))]
    for i, col in enumerate(columns):
        size = {"i": 4, "q": 8}.get(col.kind, -1)
        fmt = formats[i] if i < len(formats) else 0
        body.append(m.cstr(col.name) + struct.pack("!ihihih", 0, 0, col.oid, size, -1, fmt))
    return m.message(m.B_ROW_DESCRIPTION, b"".join(body))


def data_row(values: Sequence[Any], columns: Sequence[Column],
             formats: Sequence[int] = ()) -> bytes:
    body = [_INT16.pack(len(values))]
    for i, value in enumerate(values):
        raw = encode_value(value, columns[i], i < len(formats) and formats[i] == 1)
        body.append(_INT32.pack(-1) if raw is None else _INT32.pack(len(raw)) + raw)
    return m.message(m.B_DATA_ROW, b"".join(body))


def notice(message: str, detail: str = "") -> bytes:
    fields = [b"SNOTICE\x00", b"VNOTICE\x00", b"C00000\x00", b"M" + m.cstr(message)]
    if detail:
        fields.append(b"D" + m.cstr(detail))
    return m.message(m.B_NOTICE, b"".join(fields) + b"\x00")


def result_formats(codes: Sequence[int], ncols: int) -> list[int]:
    """Bind's result-format codes expanded to one per column (0 text, 1 binary)."""
    if not codes:
        return [0] * ncols
    if len(codes) == 1:
        return [codes[0]] * ncols
    return list(codes[:ncols]) + [0] * max(0, ncols - len(codes))


def encode_result(result: Result, formats: Sequence[int] = (), describe: bool = True) -> bytes:
    out: list[bytes] = []
    if result.notice is not None:
        out.append(notice(*result.notice))
    if result.columns is not None:
        if describe:
            out.append(row_description(result.columns, formats))
        out.extend(data_row(r, result.columns, formats) for r in result.rows)
    out.append(m.command_complete(result.tag))
    return b"".join(out)


# ---- reading extended-protocol messages -------------------------------------------------

class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def cstr(self) -> str:
        end = self.body.index(b"\x00", self.pos)
        text = self.body[self.pos:end].decode("utf-8", "replace")
        self.pos = end + 1
        return text

    def int16(self) -> int:
        (v,) = _INT16.unpack_from(self.body, self.pos)
        self.pos += 2
        return int(v)

    def int32(self) -> int:
        (v,) = _INT32.unpack_from(self.body, self.pos)
        self.pos += 4
        return int(v)

    def take(self, n: int) -> bytes:
        data = self.body[self.pos:self.pos + n]
        self.pos += n
        return data


def _param_text(raw: bytes | None, fmt: int, oid: int) -> str | None:
    if raw is None:
        return None
    if fmt == 1:
        if oid == 21 and len(raw) == 2:
            return str(_INT16.unpack(raw)[0])
        if oid == 23 and len(raw) == 4:
            return str(_INT32.unpack(raw)[0])
        if oid == 20 and len(raw) == 8:
            return str(_INT64.unpack(raw)[0])
    return raw.decode("utf-8", "replace")


@dataclass(slots=True)
class _Statement:
    query: str
    param_oids: list[int]
    prepared: Prepared | None   # None for an empty query


@dataclass(slots=True)
class _Portal:
    prepared: Prepared | None
    formats: list[int]


# ---- the session ------------------------------------------------------------------------

ADMIN_WELCOME = {
    "server_version": "1.25.0/bouncer",
    "client_encoding": "UTF8",
    "server_encoding": "UTF8",
    "DateStyle": "ISO",
    "TimeZone": "GMT",
    "standard_conforming_strings": "on",
    "is_superuser": "on",
}


class AdminSession:
    """The console for one client; messages are handled in order, and a command that answers
    later (PAUSE) holds back everything after it, as PgBouncer stops reading meanwhile."""

    def __init__(self, pooler: Pooler, client: ClientConnection) -> None:
        self.pooler = pooler
        self.client = client
        s = pooler.settings
        own = pooler.control.is_own_user(client)
        self.is_admin = own or client.user in s.admin_users
        self.allowed = self.is_admin or client.user in s.stats_users or s.auth_type == "any"
        self.ctx = Context(pooler, self.is_admin)
        self._inbox: deque[tuple[int, bytes]] = deque()
        self._blocked = False
        self._draining = False
        self._failed = False          # extended protocol: skip to Sync after an error
        self._statements: dict[str, _Statement] = {}
        self._portals: dict[str, _Portal] = {}
        if not self.allowed:
            client.fatal("not allowed")

    # ---- hooks the pooler calls ---------------------------------------------------------
    def welcome(self) -> dict[str, str]:
        return dict(ADMIN_WELCOME)

    def handle(self, chunk: bytes, msgs: list[tuple[int, int, int]]) -> None:
        for t, start, end in msgs:
            self._inbox.append((t, bytes(chunk[start + 5:end])))
        self._drain()

    # ---- dispatch -----------------------------------------------------------------------
    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._inbox and not self._blocked and not self._closed:
                t, body = self._inbox.popleft()
                self._message(t, body)
        finally:
            self._draining = False

    @property
    def _closed(self) -> bool:
        return self.client.transport is None or self.client.transport.is_closing()

    def _send(self, data: bytes) -> None:
        self.client.send(data)

    def _message(self, t: int, body: bytes) -> None:
        if t == m.F_TERMINATE:
            self.client.disconnect("client close request", notify=False)
            return
        if t == m.F_QUERY:
            self._failed = False
            self._simple(body.rstrip(b"\x00").decode("utf-8", "replace"))
            return
        if t == m.F_SYNC:
            self._failed = False
            self._statements.pop("", None)
            self._portals.pop("", None)
            self._send(READY)
            return
        if self._failed:
            return  # NOTE: after an error, the extended protocol discards up to Sync
        handler = _EXTENDED.get(t)
        if handler is None:
            self._error(AdminError(
                f"unsupported packet type for admin console: {chr(t)!r}"))
            return
        try:
            handler(self, body)
        except AdminError as exc:
            self._error(exc)
        except (ValueError, IndexError, struct.error):
            self._error(AdminError("malformed message for admin console", "08P01"))

    def _error(self, exc: AdminError, ready: bool = False) -> None:
        log.error("%s", exc.message)
        self._send(m.error_response(exc.message, exc.sqlstate) + (READY if ready else b""))
        if not ready:
            self._failed = True

    # ---- simple protocol ----------------------------------------------------------------
    def _simple(self, query: str) -> None:
        if not query.strip().strip(";").strip():
            self._send(EMPTY_QUERY + READY)
            return
        try:
            prepared = prepare(query)
            outcome = execute(self.ctx, prepared)
        except AdminError as exc:
            self._error(exc, ready=True)
            return
        self._answer(outcome, lambda r: encode_result(r) + READY, extended=False)

    def _answer(self, outcome: Result | Deferred, encode: Callable[[Result], bytes],
                extended: bool) -> None:
        """Send outcome now, or hold everything after it until a deferred command answers."""
        if isinstance(outcome, Result):
            self._send(encode(outcome))
            return
        self._blocked = True

        def reply(result: Result | AdminError) -> None:
            if not self._blocked:
                return
            self._blocked = False
            if isinstance(result, AdminError):
                self._error(result, ready=not extended)
            else:
                self._send(encode(result))
            self._drain()

        try:
            outcome.start(reply)
        except AdminError as exc:
            self._blocked = False
            self._error(exc, ready=not extended)

    # ---- extended protocol --------------------------------------------------------------
    def _parse(self, body: bytes) -> None:
        r = _Reader(body)
        name, query = r.cstr(), r.cstr()
        oids = [r.int32() for _ in range(r.int16())] if r.pos < len(body) else []
        if name and name in self._statements:
            raise AdminError(f'prepared statement "{name}" already exists', "42P05")
        prepared = None
        if query.strip().strip(";").strip():
            # NOTE: placeholders are checked with a stand-in word; the real values come at Bind.
            probe = query
            for n in range(count_params(query), 0, -1):
                probe = probe.replace(f"${n}", "x")
            prepared = prepare(probe) if probe != query else prepare(query)
        self._statements[name] = _Statement(query, oids, prepared)
        self._send(PARSE_COMPLETE)

    def _statement(self, name: str) -> _Statement:
        st = self._statements.get(name)
        if st is None:
            raise AdminError(f'prepared statement "{name}" does not exist', "26000")
        return st

    def _bind(self, body: bytes) -> None:
        r = _Reader(body)
        portal, name = r.cstr(), r.cstr()
        st = self._statement(name)
        param_formats = [r.int16() for _ in range(r.int16())]
        values: list[str | None] = []
        for i in range(r.int16()):
            n = r.int32()
            raw = None if n < 0 else r.take(n)
            fmt = param_formats[0] if len(param_formats) == 1 else (
                param_formats[i] if i < len(param_formats) else 0)
            oid = st.param_oids[i] if i < len(st.param_oids) else 0
            values.append(_param_text(raw, fmt, oid))
        codes = [r.int16() for _ in range(r.int16())]
        prepared = st.prepared
        if prepared is not None and values:
            try:
                prepared = prepare(bind_params(st.query, values))
            except ValueError as exc:
                raise AdminError(str(exc), "08P01") from None
        elif prepared is not None and count_params(st.query):
            raise AdminError(f"bind message supplies 0 parameters, but prepared statement "
                             f"\"{name}\" requires {count_params(st.query)}", "08P01")
        ncols = len(prepared.columns or ()) if prepared is not None else 0
        self._portals[portal] = _Portal(prepared, result_formats(codes, ncols))
        self._send(BIND_COMPLETE)

    def _describe(self, body: bytes) -> None:
        kind, name = body[:1], _Reader(body[1:]).cstr()
        if kind == b"S":
            st = self._statement(name)
            nparams = max(count_params(st.query), len(st.param_oids))
            oids = [st.param_oids[i] if i < len(st.param_oids) and st.param_oids[i] else 25
                    for i in range(nparams)]
            out = m.message(ord("t"), _INT16.pack(nparams) +
                            b"".join(_INT32.pack(o) for o in oids))
            columns = st.prepared.columns if st.prepared is not None else None
            self._send(out + (row_description(columns) if columns else NO_DATA))
            return
        portal = self._portals.get(name)
        if portal is None:
            raise AdminError(f'portal "{name}" does not exist', "34000")
        columns = portal.prepared.columns if portal.prepared is not None else None
        self._send(row_description(columns, portal.formats) if columns else NO_DATA)

    def _execute(self, body: bytes) -> None:
        name = _Reader(body).cstr()
        portal = self._portals.get(name)
        if portal is None:
            raise AdminError(f'portal "{name}" does not exist', "34000")
        if portal.prepared is None:
            self._send(EMPTY_QUERY)
            return
        outcome = execute(self.ctx, portal.prepared)
        formats = portal.formats
        self._answer(outcome, lambda r: encode_result(r, formats, describe=False),
                     extended=True)

    def _close(self, body: bytes) -> None:
        kind, name = body[:1], _Reader(body[1:]).cstr()
        (self._statements if kind == b"S" else self._portals).pop(name, None)
        self._send(CLOSE_COMPLETE)

    def _flush(self, body: bytes) -> None:
        return  # NOTE: everything is written as soon as it is ready


_EXTENDED = {
    m.F_PARSE: AdminSession._parse,
    m.F_BIND: AdminSession._bind,
    m.F_DESCRIBE: AdminSession._describe,
    m.F_EXECUTE: AdminSession._execute,
    m.F_CLOSE: AdminSession._close,
    m.F_FLUSH: AdminSession._flush,
}
