"""The startup phase: SSLRequest / GSSENCRequest answered 'N', startup parameters (unsupported,
`options`, ignore_startup_parameters) and CancelRequest with a wrong key."""

from __future__ import annotations

import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pg8000.native
import psycopg
import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from tests.integration.conftest import Pgmux, PgmuxFactory, render_ini, wait_port

pytestmark = pytest.mark.timeout(60)

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


class Raw:
    """A bare protocol-v3 client on a socket, to send exactly the bytes a test needs."""

    def __init__(self, mux: Pgmux) -> None:
        self.sock = socket.create_connection(("127.0.0.1", mux.port), timeout=5)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, code: int) -> bytes:
        """Send an SSLRequest/GSSENCRequest; return the one-byte answer."""
        self.send(struct.pack("!II", 8, code))
        return self._exactly(1)

    def startup(self, **params: str) -> None:
        body = struct.pack("!I", 196608)
        for k, v in params.items():
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        self.send(struct.pack("!I", len(body) + 4) + body)

    def query(self, sql: str) -> None:
        data = sql.encode() + b"\0"
        self.send(b"Q" + struct.pack("!I", len(data) + 4) + data)

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; had {self.buf!r}")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def message(self) -> tuple[bytes, bytes]:
        head = self._exactly(5)
        (length,) = struct.unpack("!I", head[1:])
        return head[:1], self._exactly(length - 4)

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        """Messages up to and including ReadyForQuery; stops early at a FATAL error."""
        out = []
        while True:
            t, body = self.message()
            out.append((t, body))
            if t == b"Z" or (t == b"E" and b"SFATAL\0" in body):
                return out

    def at_eof(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False


def error_text(messages: list[tuple[bytes, bytes]]) -> str:
    for t, body in messages:
        if t == b"E":
            fields = dict((f[:1], f[1:]) for f in body.split(b"\0") if f)
            return fields[b"M"].decode()
    return ""


def logged_in(messages: list[tuple[bytes, bytes]]) -> bool:
    types = [t for t, _ in messages]
    return types[0] == b"R" and messages[0][1][:4] == b"\0\0\0\0" and types[-1] == b"Z"


def select_one(raw: Raw) -> list[bytes]:
    raw.query("select 41 + 1")
    return [body for t, body in raw.until_ready() if t == b"D"]


@pytest.fixture(scope="module")
def mux(pg: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pgmux]:
    """One pgmux with the fixture defaults, shared by this module's tests (none changes it);
    session_state = reset, for PgBouncer's rules on startup parameters (with track, other
    settings become part of the session: tests/integration/test_session_state.py)."""
    base = tmp_path_factory.mktemp("startup")
    port = free_port()
    ini, log = base / "pgbouncer.ini", base / "pgmux.log"
    ini.write_text(render_ini(pg, port, base, {}, None, None, {"session_state": "reset"}, None))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pgmux", "serve", str(ini)],
                                stdout=out, stderr=subprocess.STDOUT)
    shared = Pgmux(proc, port, ini, log, base)
    try:
        wait_port(port, proc, log=log)
        yield shared
    finally:
        shared.stop()


# ---- SSLRequest / GSSENCRequest ----------------------------------------------------------

def test_ssl_and_gssenc_requests_answered_n(mux: Pgmux) -> None:
    for codes in ([SSL_REQUEST], [GSSENC_REQUEST], [GSSENC_REQUEST, SSL_REQUEST]):
        raw = Raw(mux)
        try:
            # libpq's order with gssencmode=prefer: GSSENCRequest, then SSLRequest, then plain.
            for code in codes:
                assert raw.request(code) == b"N"
            raw.startup(user="postgres", database="postgres")
            assert logged_in(raw.until_ready())
            rows = select_one(raw)
            assert len(rows) == 1 and rows[0].endswith(b"42")
        finally:
            raw.close()
    # libpq's default sslmode=prefer falls back to plain text after the 'N'.
    with psycopg.connect(mux.dsn(sslmode="prefer")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.info.pgconn.ssl_in_use is False
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        psycopg.connect(mux.dsn(sslmode="require"), connect_timeout=5)


def _startup_bytes(**params: str) -> bytes:
    body = struct.pack("!I", 196608)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def _query_bytes(sql: str) -> bytes:
    data = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(data) + 4) + data


def test_startup_in_pieces(mux: Pgmux) -> None:
    startup = _startup_bytes(user="postgres", database="postgres")
    # One byte at a time.
    raw = Raw(mux)
    try:
        for i in range(len(startup)):
            raw.send(startup[i:i + 1])
            time.sleep(0.002)
        assert logged_in(raw.until_ready())
        assert len(select_one(raw)) == 1
    finally:
        raw.close()
    # SSLRequest and startup in one write, without waiting for the 'N'.
    raw = Raw(mux)
    try:
        raw.send(struct.pack("!II", 8, SSL_REQUEST) + startup)
        assert raw._exactly(1) == b"N"
        assert logged_in(raw.until_ready())
        assert len(select_one(raw)) == 1
    finally:
        raw.close()
    # A startup packet with an absurd length is refused, not waited for.
    raw = Raw(mux)
    try:
        raw.send(struct.pack("!II", 1 << 30, 196608))
        t, body = raw.message()
        assert t == b"E" and b"startup packet" in body
        assert raw.at_eof()
    finally:
        raw.close()


def test_first_query_pipelined_behind_startup(mux: Pgmux) -> None:
    # Make sure the pool has its welcome, so the login completes within the same read.
    with psycopg.connect(mux.dsn()) as conn:
        conn.execute("select 1")
    raw = Raw(mux)
    try:
        raw.sock.settimeout(1.5)
        raw.send(_startup_bytes(user="postgres", database="postgres") +
                 _query_bytes("select 41 + 1"))
        assert logged_in(raw.until_ready())
        rows = [b for t, b in raw.until_ready() if t == b"D"]
        assert len(rows) == 1 and rows[0].endswith(b"42")
    finally:
        raw.close()


# ---- startup parameters ------------------------------------------------------------------

def test_unsupported_startup_parameter(mux: Pgmux) -> None:
    raw = Raw(mux)
    try:
        raw.startup(user="postgres", database="postgres", extra_float_digits="2")
        messages = raw.until_ready()
        assert error_text(messages) == "unsupported startup parameter: extra_float_digits"
        assert raw.at_eof()
    finally:
        raw.close()
    # pg8000 lets us send any startup parameter too.
    with pytest.raises(pg8000.native.DatabaseError,
                       match="unsupported startup parameter: geqo"):
        pg8000.native.Connection("postgres", host="127.0.0.1", port=mux.port,
                                 database="postgres", startup_params={"geqo": "off"})
    # Parameters pgmux tracks are welcome, and apply to the client's session.
    raw = Raw(mux)
    try:
        raw.startup(user="postgres", database="postgres", TimeZone="Asia/Tokyo",
                    application_name="startup_test")
        assert logged_in(raw.until_ready())
        raw.query("show timezone")
        rows = [body for t, body in raw.until_ready() if t == b"D"]
        assert rows and rows[0].endswith(b"Asia/Tokyo")
    finally:
        raw.close()


def test_ignore_startup_parameters(pgmux_factory: PgmuxFactory) -> None:
    mux = pgmux_factory({"ignore_startup_parameters": "extra_float_digits, geqo, options"})
    raw = Raw(mux)
    try:
        raw.startup(user="postgres", database="postgres", extra_float_digits="2")
        assert logged_in(raw.until_ready())
        assert len(select_one(raw)) == 1
    finally:
        raw.close()
    conn = pg8000.native.Connection("postgres", host="127.0.0.1", port=mux.port,
                                    database="postgres", startup_params={"geqo": "off"})
    try:
        # Ignored means ignored: the setting is not applied.
        assert conn.run("show geqo") == [["on"]]
    finally:
        conn.close()
    # With "options" in the list, unknown -c settings in options are ignored too; tracked
    # ones still apply.
    with psycopg.connect(mux.dsn(), options="-c work_mem=1MB -c TimeZone=Asia/Tokyo") as c2:
        assert c2.execute("show work_mem").fetchone() == ("4MB",)
        assert c2.execute("show timezone").fetchone() == ("Asia/Tokyo",)


def test_options_startup_parameter(mux: Pgmux) -> None:
    # -c of a parameter pgmux tracks is accepted and applied, as in PgBouncer 1.25.
    with psycopg.connect(mux.dsn(), options="-c TimeZone=Asia/Tokyo") as conn:
        assert conn.execute("show timezone").fetchone() == ("Asia/Tokyo",)
    with psycopg.connect(mux.dsn(), options="--search_path=pg_catalog,\\ public") as conn:
        assert conn.execute("show search_path").fetchone() == ("pg_catalog, public",)
    # Anything else in options is refused with PgBouncer's words.
    with pytest.raises(psycopg.OperationalError,
                       match="unsupported startup parameter in options: geqo"):
        psycopg.connect(mux.dsn(), options="-c geqo=off", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError,
                       match="unsupported options startup parameter: only '-c config=val'"):
        psycopg.connect(mux.dsn(), options="-X", connect_timeout=5)



# ---- CancelRequest -----------------------------------------------------------------------

def test_cancel_request_with_wrong_key_is_ignored(mux: Pgmux) -> None:
    with psycopg.connect(mux.dsn(), autocommit=True) as conn:
        pid = conn.info.backend_pid
        outcome: list[object] = []

        def run() -> None:
            try:
                outcome.append(conn.execute("select 1 from pg_sleep(0.8)").fetchone())
            except Exception as exc:  # noqa: BLE001 - looked at below
                outcome.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.2)
        for cancel_pid in (pid, pid + 1):
            raw = Raw(mux)
            try:
                raw.send(struct.pack("!IIii", 16, CANCEL_REQUEST, cancel_pid,
                                     secrets.randbits(31)))
                # pgmux answers nothing and closes, as PostgreSQL does.
                assert raw.at_eof()
            finally:
                raw.close()
        worker.join(5)
        assert outcome == [(1,)]  # not canceled
        assert conn.execute("select 2").fetchone() == (2,)  # and still usable
