"""Malformed and out-of-place input from one client, a fixed corpus per frontend message type and
generated messages: the sender is told (08P01) and the other clients of its pool never notice."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.faults import wire as w
from tests.faults.conftest import SharedMux
from tests.faults.corpus import CORPUS, Case
from tests.faults.load import Traffic
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.timeout(120)

# NOTE: a normal query may wait for a server another client holds (pool size 2) or for a
# server that replaces one PostgreSQL closed; two shared CPUs make a few hundred ms normal.
LATENCY_BOUND = 2.0
FAILING = "server login has been failing"
ANSWER_WITHIN = 2.0


def judge(c: w.WireClient, case: Case, split: bool = False) -> str:
    """Send the case on a logged-in client (its Sync in a later write when split); "" when
    the answer is the expected one, else what went wrong."""
    try:
        if split:
            c.send(case.data)
            time.sleep(0.05)  # NOTE: so pgmux reads the bad message alone
            c.send(w.sync())
        else:
            c.send(case.data + (w.sync() if case.sync else b""))
    except OSError:
        pass  # NOTE: pgmux may already have answered and closed; what it said is read below
    got, how = c.outcome(ANSWER_WITHIN)
    errs = w.errors(got)
    if how == "timeout":
        return f"no answer within {ANSWER_WITHIN}s (got {got})"
    if case.expect == "protocol":
        if not errs:
            return f"no ErrorResponse before the connection {how} (got {got})"
        if errs[0].sqlstate != "08P01":
            return f"SQLSTATE {errs[0].sqlstate}, not 08P01 ({errs[0]})"
    elif case.expect:
        if how != "ready" or [e.sqlstate for e in errs] != [case.expect]:
            return f"expected one {case.expect} error then ReadyForQuery; got {got} ({how})"
    elif how != "ready" or errs:
        return f"expected ReadyForQuery and no error; got {got} ({how})"
    if how == "ready":
        # NOTE: left open, the connection must still work, as PostgreSQL's does.
        try:
            if c.scalar("select 7", timeout=ANSWER_WITHIN) != "7":
                return "the connection answered wrongly after the error"
        except (AssertionError, w.Closed, w.Timeout) as exc:
            return f"the connection stopped working after the error: {exc!r}"
    return ""


def check_bystanders(traffic: Traffic, mux: Pgmux) -> None:
    assert traffic.succeeded > 0, "the normal clients never got an answer"
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.max_latency < LATENCY_BOUND, traffic.max_latency
    assert FAILING not in mux.logs()


def corpus_params() -> list[object]:
    out = []
    for mp in (200, 0):
        for case in CORPUS:
            for split in ((False, True) if case.sync else (False,)):
                out.append(pytest.param(mp, case, split,
                                        id=f"{case.name}-{mp}{'-split' if split else ''}"))
    return out


@pytest.mark.parametrize(("max_prepared", "case", "split"), corpus_params())
def test_corpus_case(shared_mux: SharedMux, max_prepared: int, case: Case, split: bool) -> None:
    """Each case from a new client, with max_prepared_statements on and off, its Sync in the
    same write or in the next; then the pool still serves."""
    mux = shared_mux(default_pool_size=2, max_prepared_statements=max_prepared)
    with w.connect(mux.port) as c:
        assert judge(c, case, split) == ""
    with w.connect(mux.port) as c:
        assert c.scalar("select 1") == "1"


def run_on_a_busy_pool(mux: Pgmux, cases: list[Case]) -> dict[str, str]:
    """The cases, both ways, eight senders at a time, while four normal clients share the
    pool of two servers; returns what went wrong for the senders, and checks the bystanders:
    none sees an error or waits long, and the pool is never marked failing."""
    def send(case: Case, split: bool) -> tuple[str, str]:
        with w.connect(mux.port) as c:
            return f"{case.name}{'-split' if split else ''}", judge(c, case, split)

    with Traffic(mux.port, 4) as traffic:
        traffic.wait_for(1)
        with ThreadPoolExecutor(8) as senders:
            verdicts = [f.result() for f in [
                senders.submit(send, case, split) for case in cases
                for split in ((False, True) if case.sync else (False,))]]
        with w.connect(mux.port) as c:
            assert c.scalar("select 1") == "1"
    check_bystanders(traffic, mux)
    return {name: verdict for name, verdict in verdicts if verdict}


@pytest.mark.parametrize("max_prepared", [200, 0])
def test_corpus_on_a_busy_pool(shared_mux: SharedMux, max_prepared: int) -> None:
    """The whole corpus at once, eight senders at a time, on a busy pool of two."""
    mux = shared_mux(default_pool_size=2, max_prepared_statements=max_prepared,
                     server_login_retry=15)
    assert run_on_a_busy_pool(mux, list(CORPUS)) == {}


QUEUED = ["parse_name_no_terminator", "bind_truncated", "query_empty_body", "unknown_type"]


@pytest.mark.parametrize(("name", "max_prepared"), [
    pytest.param(n, mp, id=f"{n}-{mp}")
    for n, mp in [(n, 200) for n in QUEUED] + [("parse_name_no_terminator", 0),
                                               ("unknown_type", 0)]])
def test_malformed_queued_behind_the_first_login(pgmux_factory: PgmuxFactory, name: str,
                                                 max_prepared: int) -> None:
    """The malformed message arrives with the startup packet, so it waits for the pool's first
    server login; normal clients logging in at the same moment must all get in and query."""
    case = next(c for c in CORPUS if c.name == name)
    mux = pgmux_factory({"default_pool_size": 2, "server_login_retry": 15,
                         "max_prepared_statements": max_prepared})
    bad = w.WireClient(mux.port)
    results: list[str] = []

    def normal() -> None:
        try:
            with w.connect(mux.port) as c:
                results.append("ok" if c.scalar("select 1") == "1" else "wrong answer")
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            results.append(repr(exc))

    threads = [threading.Thread(target=normal) for _ in range(6)]
    bad.send(w.startup() + case.data + (w.sync() if case.sync else b""))
    for t in threads:
        t.start()
    try:
        got = bad.until_ready(ANSWER_WITHIN)  # the welcome, or an error instead of it
        how = "welcome"
        if got[-1].type == b"Z":
            more, how = bad.outcome(ANSWER_WITHIN)
            got += more
    except (w.Closed, w.Timeout) as exc:
        got, how = [], repr(exc)
    for t in threads:
        t.join(15)
    bad.close()
    assert results == ["ok"] * 6
    errs = w.errors(got)
    assert errs and errs[0].sqlstate == "08P01", (got, how)
    with w.connect(mux.port) as c:
        assert c.scalar("select 1") == "1"
    assert FAILING not in mux.logs()


# ---- generated messages ----------------------------------------------------------------------

FRONTEND_TYPES = b"QPBDECSHdcfp"  # NOTE: no 'F' (it calls any function) and no 'X' (it ends)


@st.composite
def frontend_message(draw: st.DrawFn) -> bytes:
    """One frontend message: a real or random type, a random or cstring-ish body, and a
    length that is right or impossible (never one that waits for bytes that are not coming)."""
    t = draw(st.one_of(st.sampled_from(FRONTEND_TYPES),
                       st.integers(0, 255).filter(lambda b: b not in b"XF")))
    body = draw(st.one_of(
        st.binary(max_size=40),
        st.lists(st.sampled_from([b"\0", b"S", b"P", b"s1", b"select 1", b"\0\0\0\1",
                                  b"\xff\xff\xff\xff", b"\0\1", b"\x7f\xff"]),
                 max_size=8).map(b"".join)))
    length = draw(st.sampled_from([None, None, None, 0, 3, 0x40000001, 0xFFFFFFFF]))
    return w.msg(t, body, length)


def _answered(c: w.WireClient, data: bytes) -> str:
    c.send(data + w.sync())
    got, how = c.outcome(ANSWER_WITHIN)
    if how == "timeout":
        return f"no answer within {ANSWER_WITHIN}s: {got}"
    if how == "closed" and not w.errors(got):
        return f"closed without an ErrorResponse: {got}"
    return ""


def test_generated_messages(pgmux_factory: PgmuxFactory) -> None:
    """Generated messages (framed right or wrong) from one client at a time, while normal
    clients use the pool: the sender gets an answer or an ErrorResponse and a close, never
    silence, and nobody else notices."""
    mux = pgmux_factory({"default_pool_size": 2, "server_login_retry": 15})
    failures: list[tuple[bytes, str]] = []

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(frontend_message(), min_size=1, max_size=3).map(b"".join))
    @example(w.msg(b"P", b"stmt"))
    @example(w.msg(b"B", b"\0s"))
    def one(data: bytes) -> None:
        try:
            c = w.connect(mux.port)
        except (AssertionError, OSError, w.Closed, w.Timeout) as exc:
            failures.append((data, f"login failed: {exc!r}"))
            return
        with c:
            try:
                verdict = _answered(c, data)
            except OSError as exc:
                verdict = ""  # NOTE: our write met a close that pgmux had announced
                if not w.errors(c.outcome(0.5)[0]):
                    verdict = f"reset without an ErrorResponse: {exc!r}"
        if verdict:
            failures.append((data, verdict))

    with Traffic(mux.port, 4) as traffic:
        traffic.wait_for(1)
        one()
    check_bystanders(traffic, mux)
    assert not failures, failures[:5]
