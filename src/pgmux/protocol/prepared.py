"""Protocol-level named prepared statements in transaction pooling, as a pure state machine.

Each client has its own namespace (client name -> `Statement`); each server connection holds
pgmux-named statements (`PGMUX_<n>`, one name per distinct Parse content, process-wide) in an
LRU of at most `max_prepared_statements`. `rewrite` turns one batch of client messages into
what the current server must receive; `ServerStatements.feed` tells, per server answer, whether
to forward, drop or replace it. No I/O, no clocks.

How the lead calls it
---------------------
One `PreparedRegistry` per process, one `ClientStatements(registry)` per client, one
`ServerStatements(max_prepared_statements)` per server connection.

Client -> server, per batch of whole messages (the `Framer.feed` output)::

    rw = rewrite(chunk, msgs, client, server)
    server_write(rw.data)        # rw.data is chunk itself when rw.changed is False
    stats.client_parses += rw.client_parses; ...server_parses, binds
    if rw.reset: ...             # the client sent DEALLOCATE ALL / DISCARD ALL

Server -> client, per server message (watch the types in `ANSWER_TYPES`)::

    if server.pending and t in ANSWER_TYPES:     # fast path: empty FIFO => forward, no call
        out = server.feed(t, msg)                # None: forward msg; b"": drop; else send out
    else: forward msg

Messages the pooler writes to a server on its own while `server.pending` is non-empty must be
announced with `server.note_sent(types)` in send order; after the pooler itself runs
DISCARD ALL / DEALLOCATE ALL on a server, call `server.invalidate()`.

Invariants
----------
* Answers line up by order: every Parse, Close, Sync, Query and FunctionCall sent through
  `rewrite` gets one `pending` entry; ParseComplete ('1'), CloseComplete ('3') and
  ReadyForQuery ('Z') each answer the oldest entry of their kind. A 'Z' settles every entry
  before its Sync: an entry still unanswered then was skipped by the server after an error.
* Nothing is ever inserted into the answer stream. A client Parse the server already holds is
  sent as Close of the never-created statement `PGMUX_NONE`, whose CloseComplete is replaced by
  ParseComplete; a client Close('S') is sent as the same no-op Close and its CloseComplete is
  forwarded. So synthetic answers sit exactly where PostgreSQL would put them, and vanish when
  the server skips after an error, as PostgreSQL's would.
* Errors pgmux raises itself (42P05 duplicate name, 26000 unknown name) are made real: pgmux
  sends Describe('S', PGMUX_NONE), the server fails it (aborting the transaction and skipping
  to Sync exactly like PostgreSQL), and `feed` replaces that ErrorResponse with the client's.
* State is optimistic: a Parse marks its statement prepared (client and server side) when it is
  sent; if its answer never comes (the 'Z' settles it as skipped) the effect is undone, newest
  first, and the server-side name is queued for a Close, so a half-known server statement is
  closed (a no-op if absent) before pgmux parses that name again.
* pgmux-made Close messages (LRU eviction, stale names) are sent only right before a Parse that
  pgmux sends, never between COPY data. Eviction spares statements bound since the last Sync
  (closing a statement closes its portals); the LRU may then briefly hold more than its size.
* A Query or FunctionCall sent after extended messages with no Sync between is preceded by a
  no-op Close ("probe", its '3' dropped): PostgreSQL skips such a Query after an earlier error,
  and only the probe's answer (or its absence at the next 'Z') tells whether it did.
* DEALLOCATE ALL / DISCARD ALL from the client (Query, or unnamed Parse) clears the client's
  namespace at once (undone if that Query fails or is skipped) and writes the server's
  statements off as stale (after the Parse's batch: it acts at Execute).
* `feed` only ever drops a '1' or '3', turns a '3' into a '1', or swaps pgmux's own 'E' for the
  client's; 'Z' and everything else pass, so LinkState sees every ReadyForQuery unchanged.
* Portals, unnamed statements and every other message pass through byte for byte.

Known limits: a pipelined batch sent before an earlier batch's error arrives may see the
server-side name in an error text; Syncs sent after a COPY's Execute but before the
CopyInResponse arrives are assumed ignored by the server (the rule LinkState uses too).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from mypy_extensions import mypyc_attr

from pgmux.protocol.messages import (
    B_CLOSE_COMPLETE,
    B_COPY_IN,
    B_ERROR,
    B_PARSE_COMPLETE,
    B_READY,
    F_BIND,
    F_CLOSE,
    F_DESCRIBE,
    F_FUNCTION_CALL,
    F_PARSE,
    F_QUERY,
    F_SYNC,
    HEADER,
    ProtocolError,
    error_response,
    message,
)

# NOTE: pgmux names are PGMUX_<digits>, so this one is never created on a server.
NONE_NAME = b"PGMUX_NONE"
PARSE_COMPLETE = message(B_PARSE_COMPLETE)
NOOP_CLOSE = message(F_CLOSE, b"S" + NONE_NAME + b"\x00")
FAILING_DESCRIBE = message(F_DESCRIBE, b"S" + NONE_NAME + b"\x00")
# Server answer types `feed` must see while `pending` is non-empty.
ANSWER_TYPES = bytes((B_PARSE_COMPLETE, B_CLOSE_COMPLETE, B_READY, B_ERROR, B_COPY_IN))

_S = ord("S")
# NOTE: a byte table: 1 for the extended-protocol messages that a Sync closes.
_EXTENDED = bytearray(256)
for _t in b"PBDECH":
    _EXTENDED[_t] = 1
_DROP = b""

# Kinds of pending entries (what one sent message expects back).
_PASS_1 = 0  # Parse pgmux does not care about: forward its '1'
_PARSE = 1  # client's named Parse, renamed: forward '1'; undo client and server marks
_INJECTED = 2  # Parse pgmux added: drop '1'; undo server mark
_FAKE_PARSE = 3  # no-op Close standing for a client Parse: '3' becomes '1'; undo client mark
_PASS_3 = 4  # Close pgmux does not care about: forward '3'
_CLIENT_CLOSE = 5  # no-op Close standing for a client Close('S'): forward '3'; undo removal
_EVICT = 6  # Close pgmux added: drop '3'; if skipped, the name is still on the server
_FAIL = 7  # failing Describe standing for a client error: replace its 'E'
_SYNC = 8  # Sync: answered by 'Z', ignored by the server in copy-in mode
_QUERY = 9  # Query / FunctionCall: answered by 'Z'
_PROBE = 10  # no-op Close before a Query inside an unsynced extended batch: drop '3'

_ANSWER = {_PASS_1: B_PARSE_COMPLETE, _PARSE: B_PARSE_COMPLETE, _INJECTED: B_PARSE_COMPLETE,
           _FAKE_PARSE: B_CLOSE_COMPLETE, _PASS_3: B_CLOSE_COMPLETE,
           _CLIENT_CLOSE: B_CLOSE_COMPLETE, _EVICT: B_CLOSE_COMPLETE, _FAIL: B_ERROR,
           _SYNC: B_READY, _QUERY: B_READY, _PROBE: B_CLOSE_COMPLETE}


# NOTE: a Python class even in the compiled build: PreparedRegistry holds Statements by weak
# reference, and mypyc's native classes take none.
@mypyc_attr(native_class=False)
@dataclass(eq=False, slots=True, weakref_slot=True)
class Statement:
    """One distinct Parse content (query text + parameter type OIDs) and its server-side name.

    Compared by identity: the registry hands out one object per content while it is in use.
    """

    content: bytes  # the Parse body after the statement name
    name: bytes  # the server-side statement name, e.g. b"PGMUX_12"


class PreparedRegistry:
    """Process-wide: one server-side name per distinct statement content.

    NOTE: weak values, so content no client or server uses any more is forgotten; its name is
    never reused (the counter only grows), so a forgotten name can never clash on a server.
    """

    __slots__ = ("_by_content", "_next")

    def __init__(self) -> None:
        self._by_content: weakref.WeakValueDictionary[bytes, Statement] = (
            weakref.WeakValueDictionary())
        self._next = 0

    def intern(self, content: bytes) -> Statement:
        stmt = self._by_content.get(content)
        if stmt is None:
            self._next += 1
            stmt = Statement(content, b"PGMUX_%d" % self._next)
            self._by_content[content] = stmt
        return stmt

    def name_for(self, content: bytes) -> bytes:
        return self.intern(content).name

    def __len__(self) -> int:
        return len(self._by_content)


class ClientStatements:
    """One client's namespace: client statement name -> `Statement`."""

    __slots__ = ("registry", "names", "_gen")

    def __init__(self, registry: PreparedRegistry) -> None:
        self.registry = registry
        # NOTE: the int tells registrations apart, so undoing an old one spares a newer one.
        self.names: dict[bytes, tuple[Statement, int]] = {}
        self._gen = 0

    def get(self, name: bytes) -> Statement | None:
        reg = self.names.get(name)
        return None if reg is None else reg[0]

    def __contains__(self, name: bytes) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def clear(self) -> None:
        self.names.clear()

    def _add(self, name: bytes, stmt: Statement) -> tuple[Statement, int]:
        self._gen += 1
        reg = (stmt, self._gen)
        self.names[name] = reg
        return reg


@dataclass(slots=True)
class _Expect:
    """What one message sent to the server expects back, and how to undo it if skipped."""

    kind: int
    client: ClientStatements | None = None
    name: bytes = b""  # client statement name
    reg: tuple[Statement, int] | None = None  # client registration made or removed
    stmt: Statement | None = None  # server-side statement parsed or closed
    seq: int = 0  # server-side mark made by this Parse
    reply: bytes = field(default=b"", repr=False)  # the ErrorResponse for _FAIL
    saved: dict[bytes, tuple[Statement, int]] | None = None  # names a reset Query cleared
    failed: bool = False  # the reset Query got an ErrorResponse


_E_PASS_1 = _Expect(_PASS_1)
_E_PASS_3 = _Expect(_PASS_3)
_E_SYNC = _Expect(_SYNC)
_E_QUERY = _Expect(_QUERY)
_E_PROBE = _Expect(_PROBE)


class ServerStatements:
    """One server connection: the statements it holds (an LRU) and the answers it owes.

    `prepared` maps each statement believed prepared (once everything sent succeeds) to the
    sequence number of the Parse that made it; oldest first. `pending` is the FIFO of answers
    still owed for messages sent through `rewrite`.
    """

    __slots__ = ("max_prepared", "prepared", "pending", "_seq", "_stale", "_in_batch",
                 "_zs", "_fails", "_invalidate_at_sync", "_open", "server_parses")

    def __init__(self, max_prepared: int) -> None:
        self.max_prepared = max_prepared
        self.prepared: OrderedDict[Statement, int] = OrderedDict()
        self.pending: deque[_Expect] = deque()
        self._seq = 0
        # NOTE: names that may exist on the server unknown to `prepared`; closed before the
        # next Parse pgmux sends (Close of an absent name is a no-op).
        self._stale: dict[bytes, Statement] = {}
        # NOTE: statements bound since the last Sync: evicting one would close its portal.
        self._in_batch: set[Statement] = set()
        self._zs = 0  # pending entries answered by 'Z'
        self._fails = 0  # pending _FAIL entries
        self._invalidate_at_sync = False
        # NOTE: extended-protocol messages were sent since the last Sync: after an error
        # there the server skips everything, a Query included, until the Sync.
        self._open = False
        self.server_parses = 0

    def __contains__(self, stmt: Statement) -> bool:
        return stmt in self.prepared

    def invalidate(self) -> None:
        """Everything on the server may be gone (DEALLOCATE ALL / DISCARD ALL ran)."""
        for stmt in self.prepared:
            self._stale[stmt.name] = stmt
        self.prepared.clear()

    def note_sent(self, types: bytes) -> None:
        """The pooler itself wrote messages of these types to the server, in this order."""
        for t in types:
            if t == F_PARSE:
                self.pending.append(_E_PASS_1)
            elif t == F_CLOSE:
                self.pending.append(_E_PASS_3)
            elif t == F_SYNC:
                self.pending.append(_E_SYNC)
                self._zs += 1
            elif t == F_QUERY or t == F_FUNCTION_CALL:
                self.pending.append(_E_QUERY)
                self._zs += 1

    # ---- server -> client ------------------------------------------------------------------

    def feed(self, t: int, msg: bytes = b"") -> bytes | None:
        """One server message of type t (msg: its bytes, needed for 'E' only).

        Returns None to forward it unchanged, b"" to drop it, or the bytes to send instead.
        """
        q = self.pending
        if not q:
            return None
        if t == B_READY:
            if not self._zs:
                return None  # NOTE: not an answer to anything sent through `rewrite`
            skipped: list[_Expect] = []
            probe_missed = False
            while q:
                e = q.popleft()
                kind = e.kind
                if kind == _SYNC:
                    break
                if kind == _QUERY:
                    if probe_missed:
                        # NOTE: the server was skipping to Sync when this Query came: no 'Z'.
                        self._zs -= 1
                        skipped.append(e)
                        continue
                    if e.failed:
                        skipped.append(e)
                    break
                if kind == _PROBE:
                    probe_missed = True
                skipped.append(e)
            self._zs -= 1
            for e in reversed(skipped):  # NOTE: undo newest first, like an undo log
                self._undo(e)
            return None
        if t == B_ERROR:
            head = q[0]
            if head.kind == _QUERY and head.saved is not None:
                head.failed = True  # NOTE: a DEALLOCATE ALL that may not have run
            if self._fails and NONE_NAME in msg and b"C26000\x00" in msg:
                while q:
                    e = q.popleft()
                    if e.kind == _FAIL:
                        self._fails -= 1
                        return e.reply
                    self._undo(e)  # NOTE: cannot happen when the stream is in step
            return None
        if t == B_COPY_IN:
            # NOTE: in copy-in mode the server ignores the Syncs sent after the COPY's Execute
            # (all still pending: everything before it is answered). Same rule as LinkState.
            if self._zs and any(e.kind == _SYNC for e in q):
                kept = [e for e in q if e.kind != _SYNC]
                self._zs -= len(q) - len(kept)
                q.clear()
                q.extend(kept)
            return None
        e = q[0]
        if _ANSWER[e.kind] != t:
            return None  # NOTE: out of step (should not happen): never touch what we don't know
        q.popleft()
        kind = e.kind
        if kind == _INJECTED or kind == _EVICT or kind == _PROBE:
            return _DROP
        if kind == _FAKE_PARSE:
            return PARSE_COMPLETE
        return None

    def _undo(self, e: _Expect) -> None:
        """Entry e's message was skipped by the server (an earlier error in its batch)."""
        kind = e.kind
        if kind == _FAIL:
            self._fails -= 1
            return
        client = e.client
        if e.saved is not None and client is not None:
            names = client.names
            for name, reg in e.saved.items():
                names.setdefault(name, reg)
            return
        if client is not None and e.reg is not None:
            names = client.names
            if kind == _CLIENT_CLOSE:
                if e.name not in names:
                    names[e.name] = e.reg
            elif names.get(e.name) == e.reg:
                # NOTE: == and not `is`: compiled, a tuple is re-created each time it is read
                # back; the generation number in it is what tells this registration apart.
                del names[e.name]
        stmt = e.stmt
        if stmt is None:
            return
        if kind == _EVICT:
            self._stale[stmt.name] = stmt
        elif self.prepared.get(stmt) == e.seq:
            # NOTE: the Parse may have failed because the name already existed there: close
            # it before parsing it again.
            del self.prepared[stmt]
            self._stale[stmt.name] = stmt

    # ---- client -> server helpers -----------------------------------------------------------

    def _parse(self, stmt: Statement, out: list[bytes]) -> int:
        """Make room for stmt and mark it prepared; emits Closes into out. Returns its seq."""
        pending = self.pending
        if self._stale:
            for name, old in self._stale.items():
                self.prepared.pop(old, None)
                out.append(message(F_CLOSE, b"S" + name + b"\x00"))
                pending.append(_Expect(_EVICT, stmt=old))
            self._stale.clear()
        prepared = self.prepared
        while len(prepared) >= self.max_prepared:
            victim = next((s for s in prepared if s not in self._in_batch), None)
            if victim is None:
                break  # NOTE: all in use by this batch: overflow until the next Parse
            del prepared[victim]
            out.append(message(F_CLOSE, b"S" + victim.name + b"\x00"))
            pending.append(_Expect(_EVICT, stmt=victim))
        self._seq += 1
        prepared[stmt] = self._seq
        self.server_parses += 1
        return self._seq


@dataclass(slots=True)
class Rewrite:
    """What to send to the server for one batch of client messages."""

    data: bytes
    changed: bool  # False: data is the input chunk itself
    reset: bool = False  # the client sent DEALLOCATE ALL / DISCARD ALL
    client_parses: int = 0  # named Parses from the client (total_client_parse_count)
    server_parses: int = 0  # Parses pgmux sent to the server (total_server_parse_count)
    binds: int = 0  # Binds of named statements (total_bind_count)
    # NOTE: (client statement name, SQLSTATE) of each message pgmux answered with an error of
    # its own (42P05 name in use, 26000 unknown name): the caller logs them as PgBouncer does.
    refused: list[tuple[bytes, str]] | None = None


_RESET_STATEMENTS = (b"deallocate all", b"deallocate prepare all", b"discard all")
_RESET_WORDS = (b"deallocate", b"discard")


def resets_statements(sql: bytes, start: int = 0, end: int | None = None) -> bool:
    """True when SQL text (sql[start:end]) deallocates every prepared statement of the session.

    Cheap for ordinary queries: a look at the first bytes and a search for ';' in C.
    """
    stop = len(sql) if end is None else end
    stop = min(stop, start + 65536)
    head = sql[start:start + 64].lstrip().lower()
    if not head.startswith(_RESET_WORDS) and sql.find(b";", start, stop) < 0:
        return False
    low = sql[start:stop].lower()
    return any(b" ".join(stmt.split()).startswith(_RESET_STATEMENTS) for stmt in low.split(b";"))


def _cstr_end(chunk: bytes, start: int, end: int) -> int:
    i = chunk.find(0, start, end)
    if i < 0:
        raise ProtocolError("unterminated string in message")
    return i


def _ensure(server: ServerStatements, stmt: Statement, out: list[bytes]) -> None:
    """stmt must be prepared on the server before the message about to be sent."""
    if stmt in server.prepared:
        server.prepared.move_to_end(stmt)
    else:
        seq = server._parse(stmt, out)
        out.append(message(F_PARSE, stmt.name + b"\x00" + stmt.content))
        server.pending.append(_Expect(_INJECTED, stmt=stmt, seq=seq))


class _Batch:
    """One batch of client messages being rewritten: what is sent so far and its counts."""

    def __init__(self, chunk: bytes, client: ClientStatements, server: ServerStatements
                 ) -> None:
        self.chunk = chunk
        self.client = client
        self.server = server
        self.out: list[bytes] = []
        self.done = 0  # chunk[:done] is already in out
        self.changed = False
        self.reset = False
        self.client_parses = 0
        self.binds = 0
        self.refused: list[tuple[bytes, str]] | None = None

    def take(self, s: int, e: int) -> None:
        """Message chunk[s:e] is replaced: send what came before it, skip it."""
        self.out.append(self.chunk[self.done:s])
        self.done = e
        self.changed = True

    def fail(self, name: bytes, sqlstate: str) -> None:
        """Send what makes the server fail like PostgreSQL would; `feed` swaps in this
        error."""
        what = "already exists" if sqlstate == "42P05" else "does not exist"
        text = f'prepared statement "{name.decode("utf-8", "replace")}" {what}'
        server = self.server
        self.out.append(FAILING_DESCRIBE)
        server.pending.append(_Expect(_FAIL, reply=error_response(text, sqlstate)))
        server._fails += 1
        if self.refused is None:
            self.refused = []
        self.refused.append((name, sqlstate))

    def resolve(self, name: bytes) -> Statement | None:
        """The statement a client's name stands for, made sure of on this server; None after
        queuing the "does not exist" error PostgreSQL would give."""
        reg = self.client.names.get(name)
        if reg is None:
            self.fail(name, "26000")
            return None
        _ensure(self.server, reg[0], self.out)
        return reg[0]

    def parse(self, s: int, e: int) -> None:
        chunk, server, client = self.chunk, self.server, self.client
        n = chunk.find(0, s + 5, e)
        if n < 0:
            raise ProtocolError("malformed Parse message")
        if n == s + 5:  # unnamed statement: pass through
            server.pending.append(_E_PASS_1)
            first = chunk[n + 1] if n + 1 < e else 0
            # NOTE: only text starting with d/D or a blank can be DEALLOCATE/DISCARD.
            if ((first | 0x20) == 0x64 or first <= 0x20) and resets_statements(chunk, n + 1, e):
                client.clear()
                # NOTE: it takes effect at Execute, so the server is written off at Sync.
                server._invalidate_at_sync = True
                self.reset = True
            return
        name = chunk[s + 5:n]
        self.take(s, e)
        if name in client.names:
            self.fail(name, "42P05")
            return
        self.client_parses += 1
        stmt = client.registry.intern(chunk[n + 1:e])
        added = client._add(name, stmt)
        if stmt in server.prepared:
            server.prepared.move_to_end(stmt)
            self.out.append(NOOP_CLOSE)
            server.pending.append(_Expect(_FAKE_PARSE, client, name, added))
        else:
            seq = server._parse(stmt, self.out)
            self.out.append(message(F_PARSE, stmt.name + b"\x00" + stmt.content))
            server.pending.append(_Expect(_PARSE, client, name, added, stmt, seq))

    def bind(self, s: int, e: int) -> None:
        chunk = self.chunk
        p = chunk.find(0, s + 5, e)
        n = chunk.find(0, p + 1, e) if p >= 0 else -1
        if n < 0:
            raise ProtocolError("malformed Bind message")
        if n == p + 1:  # unnamed statement
            return
        name = chunk[p + 1:n]
        self.take(s, e)
        known = self.resolve(name)
        if known is None:
            return
        self.server._in_batch.add(known)
        self.binds += 1
        body = chunk[s + 5:p + 1] + known.name + chunk[n:e]
        self.out.append(HEADER.pack(F_BIND, len(body) + 4) + body)

    def describe_or_close(self, t: int, s: int, e: int) -> None:
        chunk = self.chunk
        if e - s < 7:
            raise ProtocolError("Describe/Close message too short")
        n = _cstr_end(chunk, s + 6, e)
        if chunk[s + 5] != _S or n == s + 6:  # portal or unnamed statement
            if t == F_CLOSE:
                self.server.pending.append(_E_PASS_3)
            return
        name = chunk[s + 6:n]
        self.take(s, e)
        if t == F_CLOSE:
            # NOTE: never close the server's copy (other clients share it); PostgreSQL
            # answers CloseComplete even for a name that does not exist.
            reg = self.client.names.pop(name, None)
            self.out.append(NOOP_CLOSE)
            self.server.pending.append(_Expect(_CLIENT_CLOSE, self.client, name, reg))
            return
        known = self.resolve(name)
        if known is not None:
            self.out.append(message(F_DESCRIBE, b"S" + known.name + b"\x00"))

    def sync(self) -> None:
        server = self.server
        server.pending.append(_E_SYNC)
        server._zs += 1
        server._open = False
        server._in_batch.clear()
        if server._invalidate_at_sync:
            server._invalidate_at_sync = False
            server.invalidate()

    def query(self, t: int, s: int, e: int) -> None:
        server, client = self.server, self.client
        if server._open:
            # NOTE: the probe's CloseComplete comes only if the server is not skipping to
            # Sync after an error, which tells whether this Query will be answered.
            self.out.append(self.chunk[self.done:s])
            self.out.append(NOOP_CLOSE)
            self.done = s
            self.changed = True
            server.pending.append(_E_PROBE)
        else:
            server._in_batch.clear()
        server._zs += 1
        if t == F_QUERY and resets_statements(self.chunk, s + 5, e):
            # NOTE: undone if the Query fails or is skipped; the server side is only written
            # off, which is safe either way (stale names get a no-op Close).
            server.pending.append(_Expect(_QUERY, client, saved=dict(client.names)))
            client.clear()
            server.invalidate()
            self.reset = True
        else:
            server.pending.append(_E_QUERY)


def rewrite(chunk: bytes, msgs: list[tuple[int, int, int]], client: ClientStatements,
            server: ServerStatements) -> Rewrite:
    """Rewrite one batch of whole client messages for the server the client now has.

    msgs are (type, start, end) offsets into chunk, as `Framer.feed` returns them.
    """
    if server.max_prepared <= 0:
        return Rewrite(chunk, False)
    batch = _Batch(chunk, client, server)
    parses_before = server.server_parses
    for t, s, e in msgs:
        if _EXTENDED[t]:
            server._open = True
        if t == F_PARSE:
            batch.parse(s, e)
        elif t == F_BIND:
            batch.bind(s, e)
        elif t == F_DESCRIBE or t == F_CLOSE:
            batch.describe_or_close(t, s, e)
        elif t == F_SYNC:
            batch.sync()
        elif t == F_QUERY or t == F_FUNCTION_CALL:
            batch.query(t, s, e)
    if not batch.changed:
        return Rewrite(chunk, False, batch.reset)
    batch.out.append(chunk[batch.done:])
    return Rewrite(b"".join(batch.out), True, batch.reset, batch.client_parses,
                   server.server_parses - parses_before, batch.binds, batch.refused)
