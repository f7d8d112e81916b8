"""Hypothesis against the authentication exchanges: whatever a client sends to pgmux, the
authenticator answers with an AuthStep (a failure at worst); whatever a server sends while pgmux
logs in, ServerLogin raises nothing but AuthError."""

from __future__ import annotations

import base64
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pgmux.auth import (
    AuthError,
    AuthStep,
    ClientAuthenticator,
    ScramKeys,
    ServerLogin,
    make_scram_secret,
    md5_hash,
    wire,
)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

USER = "alice"
PASSWORD = "pw"
SECRETS = [None, PASSWORD, md5_hash(USER, PASSWORD),
           str(make_scram_secret(PASSWORD, bytes(16), iterations=16))]
METHODS = ["plain", "md5", "scram-sha-256"]

# Pieces a SCRAM message is made of, so the generator gets near the real grammar.
scram_words = st.sampled_from(["n", "y", "p", "a=x", "n=", "n=alice", "r=", "r=abc", "c=biws",
                               "c=", "p=", "p=AAAA", "s=AAAA", "i=4096", "v=", "e=bad", "=",
                               ",", ",,", "\u00e9", "\x00", "SCRAM-SHA-256", "r=\x7f"])
scram_text = st.lists(scram_words, max_size=8).map(",".join)
bodies = st.one_of(
    st.binary(max_size=60),
    scram_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.tuples(st.sampled_from([b"SCRAM-SHA-256\0", b"PLAIN\0", b"\0", b""]),
              st.sampled_from([-1, 0, 3, 10, 1 << 30]), scram_text).map(
        lambda t: t[0] + struct.pack("!i", t[1]) + t[2].encode()),
)


def salt(n: int) -> bytes:
    return bytes(n)


@FUZZ
@given(st.sampled_from(METHODS), st.sampled_from(SECRETS),
       st.lists(st.tuples(st.sampled_from([b"p", b"Q", b"X"]), bodies), min_size=1,
                max_size=4))
@example("scram-sha-256", PASSWORD, [(b"p", b"SCRAM-SHA-256\0\xff\xff\xff\xff")])
@example("md5", PASSWORD, [(b"p", b"\xff\xfe\0")])
def test_client_authenticator_answers_anything(method: str, secret: str | None,
                                               msgs: list[tuple[bytes, bytes]]) -> None:
    auth = ClientAuthenticator(method, USER, secret, salt_source=salt,
                               nonce_source=lambda: "srvnonce", scram_iterations=16)
    auth.start()
    for t, body in msgs:
        step = auth.receive(t, body)
        assert isinstance(step, AuthStep)
        if step.failed:
            # NOTE: a failure says so to the client in an ErrorResponse with a SQLSTATE.
            assert step.send.startswith(b"E") and step.sqlstate in ("28P01", "08P01")
            assert auth.done
        if not step.outcome.value == "continue":
            break


@FUZZ
@given(scram_text, scram_text)
def test_scram_exchange_with_garbled_messages(first: str, final: str) -> None:
    """A client-first and client-final made of SCRAM's own words: never a crash, and never a
    success (no proof in them can be right)."""
    auth = ClientAuthenticator("scram-sha-256", USER, PASSWORD, salt_source=salt,
                               nonce_source=lambda: "srvnonce", scram_iterations=16)
    auth.start()
    step = auth.receive(b"p", wire.cstring("SCRAM-SHA-256") + struct.pack("!i", len(first)) +
                        first.encode())
    if step.outcome.value == "continue":
        step = auth.receive(b"p", final.encode())
    assert not step.ok


def r(code: int, data: bytes = b"") -> bytes:
    return struct.pack("!I", code) + data


server_bodies = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from([0, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 99, 0xFFFFFFFF]),
              st.one_of(st.binary(max_size=30), scram_text.map(str.encode),
                        st.sampled_from([b"SCRAM-SHA-256\0\0", b"SCRAM-SHA-256-PLUS\0\0",
                                         b"SCRAM-SHA-256", b"\0"]))).map(lambda t: r(*t)),
)
passwords = st.sampled_from([None, PASSWORD, md5_hash(USER, PASSWORD),
                             str(make_scram_secret(PASSWORD, bytes(16), iterations=16))])


@FUZZ
@given(passwords, st.booleans(), st.lists(server_bodies, min_size=1, max_size=5))
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"r=x,s=\xff,i=1")])
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"r=,s=,i=")])
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"")])
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"r=x,s=AAAA,i=x")])
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"r=x,s=AAAA,i=0")])
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"r=x,s=AAAA,i=-1")])
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"r=x,s=!!,i=1")])
@example(PASSWORD, False, [r(10, b"SCRAM-SHA-256\0\0"), r(12, b"v=AAAA")])
@example(SECRETS[3], True, [r(10, b"SCRAM-SHA-256\0\0"), r(11, b"r=x"), r(12, b"v=!")])
def test_server_login_raises_only_auth_errors(password: str | None, keys: bool,
                                              bodies_: list[bytes]) -> None:
    scram_keys = ScramKeys(bytes(32), bytes(32)) if keys else None
    login = ServerLogin(USER, password, scram_keys=scram_keys, nonce="clientnonce")
    try:
        for body in bodies_:
            reply = login.receive(body)
            assert reply is None or reply.startswith(b"p")
    except AuthError:
        pass


@FUZZ
@given(st.binary(max_size=30))
def test_server_first_from_a_real_start(tail: bytes) -> None:
    """A server-first that begins with our own nonce, as a real one must, then anything."""
    login = ServerLogin(USER, PASSWORD, nonce="clientnonce")
    login.receive(r(10, b"SCRAM-SHA-256\0\0"))
    body = b"r=clientnonce" + tail
    try:
        login.receive(r(11, body))
        login.receive(r(12, b"v=" + base64.b64encode(tail)))
    except AuthError:
        pass
