"""Issue 3's driver features through transaction mode: COPY, pipelines, large values, notices
and notifications."""

from __future__ import annotations

import hashlib
import threading
import time

import psycopg
import pytest

from tests.integration.conftest import Pgmux, PgmuxFactory


def test_copy_in_and_out_10000_rows(pgmux: Pgmux) -> None:
    rows = [(i, f"row-{i}", i * 7 % 1000) for i in range(10000)]
    digest_in = hashlib.sha256(repr(rows).encode()).hexdigest()
    with psycopg.connect(pgmux.dsn(dbname="testdb"), autocommit=True) as conn:
        conn.execute("drop table if exists copy_rows")
        conn.execute("create table copy_rows (id int, name text, v int)")
        with conn.cursor() as cur:
            with cur.copy("copy copy_rows (id, name, v) from stdin") as copy:
                for row in rows:
                    copy.write_row(row)
        out = []
        with conn.cursor() as cur:
            with cur.copy("copy (select id, name, v from copy_rows order by id) to stdout") as copy:
                for row in copy.rows():
                    out.append((int(row[0]), row[1], int(row[2])))
        assert hashlib.sha256(repr(out).encode()).hexdigest() == digest_in
        # The server went back to the pool clean: ordinary queries go on.
        assert conn.execute("select count(*) from copy_rows").fetchone() == (10000,)


def test_copy_errors_before_and_after_copydone(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(dbname="testdb"), autocommit=True) as conn:
        conn.execute("drop table if exists copy_err")
        conn.execute("create table copy_err (id int primary key)")
        # Error before CopyDone: bad data in the stream.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor() as cur, cur.copy("copy copy_err from stdin") as copy:
                copy.write(b"1\nnot-a-number\n")
        # Error raised by the client (CopyFail).
        with pytest.raises(psycopg.errors.QueryCanceled):
            with conn.cursor() as cur, cur.copy("copy copy_err from stdin") as copy:
                copy.write(b"5\n")
                raise psycopg.errors.QueryCanceled("client gave up")
        # Error found only at CopyDone: a duplicate key.
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.cursor() as cur, cur.copy("copy copy_err from stdin") as copy:
                copy.write(b"2\n2\n")
        assert conn.execute("select count(*) from copy_err").fetchone() == (0,)
        with conn.cursor() as cur, cur.copy("copy copy_err from stdin") as copy:
            copy.write(b"3\n4\n")
        assert conn.execute("select count(*) from copy_err").fetchone() == (2,)


def test_pipeline_of_200_inserts(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(dbname="testdb"), autocommit=True) as conn:
        conn.execute("drop table if exists pipe_rows")
        conn.execute("create table pipe_rows (id int)")
        with conn.pipeline():
            for i in range(200):
                conn.execute("insert into pipe_rows values (%s)", (i,))
        assert conn.execute("select count(*), sum(id) from pipe_rows").fetchone() == (
            200, sum(range(200)))
        # A pipeline inside a transaction, answered in order.
        with conn.transaction(), conn.pipeline():
            curs = [conn.execute("select %s::int", (i,)) for i in range(50)]
        assert [c.fetchone() for c in curs] == [(i,) for i in range(50)]


def test_8mb_value_round_trips(pgmux: Pgmux) -> None:
    value = (b"pgmux" * (8 * 1024 * 1024 // 5 + 1))[: 8 * 1024 * 1024]
    with psycopg.connect(pgmux.dsn(), autocommit=True) as conn:
        got = conn.execute("select %s::bytea", (value,)).fetchone()
        assert got is not None and bytes(got[0]) == value
        text = conn.execute("select repeat('x', 8 * 1024 * 1024)").fetchone()
        assert text is not None and len(text[0]) == 8 * 1024 * 1024


def test_notice_arrives(pgmux: Pgmux) -> None:
    notices: list[str] = []
    with psycopg.connect(pgmux.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("do $$ begin raise notice 'hello from the server'; end $$")
        conn.execute("select 1")
    assert notices == ["hello from the server"]


def test_notify_to_self_in_transaction_mode(pgmux: Pgmux) -> None:
    with psycopg.connect(pgmux.dsn(), autocommit=True) as conn:
        with conn.transaction():
            conn.execute("listen pgmux_chan")
            conn.execute("notify pgmux_chan, 'payload-1'")
        got = list(conn.notifies(timeout=2, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [("pgmux_chan", "payload-1")]


def test_listen_notify_across_sessions_in_session_mode(pgmux_factory: PgmuxFactory) -> None:
    px = pgmux_factory({"pool_mode": "session"})
    with psycopg.connect(px.dsn(), autocommit=True) as listener, \
            psycopg.connect(px.dsn(), autocommit=True) as sender:
        listener.execute("listen news")

        def send() -> None:
            time.sleep(0.3)
            sender.execute("notify news, 'extra'")

        t = threading.Thread(target=send)
        t.start()
        got = list(listener.notifies(timeout=5, stop_after=1))
        t.join()
        assert [(n.channel, n.payload) for n in got] == [("news", "extra")]


def test_copy_in_extended_protocol(pgmux_factory: PgmuxFactory) -> None:
    # libpq's extended-protocol COPY: Parse/Bind/Describe/Execute/Sync, the server ignores
    # that Sync in copy-in mode, and libpq sends another Sync after CopyDone. The server must
    # be released afterwards: on a pool of one, a second client would otherwise wait.
    px = pgmux_factory({"default_pool_size": 1, "query_wait_timeout": 5})
    with psycopg.connect(px.dsn(dbname="testdb"), autocommit=True) as conn:
        conn.execute("drop table if exists copy_ext")
        conn.execute("create table copy_ext (id int, name text)")
        pgconn = conn.pgconn
        pgconn.send_query_params(b"copy copy_ext from stdin", None)
        res = pgconn.get_result()
        assert res is not None and res.status == psycopg.pq.ExecStatus.COPY_IN
        for i in range(1000):
            assert pgconn.put_copy_data(f"{i}\trow-{i}\n".encode()) == 1
        assert pgconn.put_copy_end() == 1
        res = pgconn.get_result()
        assert res is not None and res.status == psycopg.pq.ExecStatus.COMMAND_OK
        assert res.command_tuples == 1000
        while pgconn.get_result() is not None:
            pass
        # Out again through the extended protocol.
        pgconn.send_query_params(b"copy (select id, name from copy_ext order by id) to stdout",
                                 None)
        res = pgconn.get_result()
        assert res is not None and res.status == psycopg.pq.ExecStatus.COPY_OUT
        lines = []
        while True:
            n, data = pgconn.get_copy_data(0)
            if n < 0:
                break
            lines.append(bytes(data))
        while pgconn.get_result() is not None:
            pass
        assert len(lines) == 1000 and lines[7] == b"7\trow-7\n"
        assert conn.execute("select count(*) from copy_ext").fetchone() == (1000,)
        # The one server went back to the pool while conn stays connected.
        with psycopg.connect(px.dsn(dbname="testdb"), autocommit=True) as other:
            assert other.execute("select count(*) from copy_ext").fetchone() == (1000,)
