"""An unknown user gets the whole md5 / SCRAM exchange and the wrong-password answer."""

from __future__ import annotations

import base64
import struct

import pytest

from pgmux.auth import (
    SASL_FAILED,
    TRUST_FAILED,
    ClientAuthenticator,
    ServerLogin,
    make_scram_secret,
    md5_hash,
    password_failed,
    wire,
)
from pgmux.auth.server import stable_salt
from tests.auth.test_auth_exchange import run, split_messages

KEY = b"k" * 32
PASSWORD = "correct horse"


def attempt(user: str, secret: str | None, method: str, password: str,
            key: bytes = KEY) -> tuple[bytes, str | None, str | None]:
    """One login: (the bytes of the refusal, error text, SQLSTATE)."""
    auth = ClientAuthenticator(method, user, secret, mock_key=key)
    result = run(auth, ServerLogin(user, password))
    assert not result.ok
    step = result.step
    assert step is not None and step.failed
    return step.send, step.error, step.sqlstate


def server_first(user: str, secret: str | None, key: bytes = KEY,
                 iterations: int = 4096) -> dict[str, str]:
    """The salt and iteration count the server half shows a SCRAM client."""
    auth = ClientAuthenticator("scram-sha-256", user, secret, mock_key=key,
                               scram_iterations=iterations, nonce_source=lambda: "SRV")
    auth.start()
    first = b"n,,n=,r=CLIENT"
    step = auth.receive(b"p", wire.cstring("SCRAM-SHA-256") + struct.pack("!i", len(first))
                        + first)
    (_, body), = split_messages(step.send)
    assert body[:4] == struct.pack("!I", wire.AUTH_SASL_CONTINUE)
    return dict(part.split("=", 1) for part in body[4:].decode().split(","))


SECRETS = {"plain": PASSWORD, "md5": md5_hash("alice", PASSWORD),
           "scram": str(make_scram_secret(PASSWORD, bytes(16)))}
# (method, kind of the known user's secret) pairs where the method stays what it says
# (md5 with a SCRAM secret turns into SCRAM; an md5 secret cannot do SCRAM at all)
CASES = [("plain", "plain"), ("plain", "md5"), ("plain", "scram"), ("md5", "plain"),
         ("md5", "md5"), ("scram-sha-256", "plain"), ("scram-sha-256", "scram")]


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_unknown_user_answer_is_the_wrong_password_answer(method: str, kind: str) -> None:
    secret = SECRETS[kind]
    assert ClientAuthenticator(method, "alice", secret).method == method
    wrong = attempt("alice", secret, method, "wrong")
    unknown = attempt("alice", None, method, "wrong")
    assert unknown == wrong
    expected = SASL_FAILED if method == "scram-sha-256" else password_failed("alice")
    assert unknown[1] == expected and unknown[2] == "28P01"


@pytest.mark.parametrize("method", ["plain", "md5", "scram-sha-256"])
def test_unknown_user_fails_even_with_any_password(method: str) -> None:
    for password in ("p", "x", PASSWORD, "ghost"):
        _, error, sqlstate = attempt("ghost", None, method, password)
        assert sqlstate == "28P01"
        assert error in (SASL_FAILED, password_failed("ghost"))


def test_mock_scram_salt_is_stable_per_user_and_looks_real() -> None:
    first = server_first("ghost", None)
    assert first == server_first("ghost", None)  # same on every attempt
    assert first["i"] == "4096"
    assert len(base64.b64decode(first["s"])) == 16  # the size PostgreSQL's salts have
    assert first["s"] != server_first("ghost2", None)["s"]
    assert first["s"] != server_first("ghost", None, key=b"other key")["s"]
    assert server_first("ghost", None, iterations=10000)["i"] == "10000"
    assert base64.b64decode(first["s"]) == stable_salt(KEY, "ghost")


def test_plain_secret_salt_equals_the_unknown_user_salt() -> None:
    """Removing a user from auth_file (or adding one) does not change what SCRAM shows."""
    assert server_first("alice", PASSWORD) == server_first("alice", None)
    # and a stored verifier shows its own salt and iteration count, as PostgreSQL does
    stored = make_scram_secret(PASSWORD, b"0123456789abcdef", 5000)
    shown = server_first("alice", str(stored))
    assert base64.b64decode(shown["s"]) == b"0123456789abcdef" and shown["i"] == "5000"


def test_plain_secret_with_stable_salt_still_logs_in() -> None:
    for _ in range(2):
        auth = ClientAuthenticator("scram-sha-256", "alice", PASSWORD, mock_key=KEY)
        assert run(auth, ServerLogin("alice", PASSWORD)).ok
        assert auth.scram_keys is not None


def test_unknown_user_detail_is_for_the_log_only() -> None:
    auth = ClientAuthenticator("md5", "ghost", None)
    result = run(auth, ServerLogin("ghost", "x"))
    assert result.step is not None and result.step.detail == "no such user"
    assert b"no such user" not in result.step.send


@pytest.mark.parametrize("method", ["plain", "md5", "scram-sha-256"])
def test_empty_secret_never_matches(method: str) -> None:
    """PgBouncer refuses an empty auth_file password whatever the client sends."""
    auth = ClientAuthenticator(method, "alice", "", mock_key=KEY)
    result = run(auth, ServerLogin("alice", "p"))
    assert not result.ok and result.step is not None
    assert result.step.detail == "empty password in auth_file"
    assert result.step.sqlstate == "28P01"


def test_trust_refuses_a_user_missing_from_auth_file() -> None:
    step = ClientAuthenticator("trust", "ghost", None).start_step()
    assert step.failed and step.error == TRUST_FAILED == '"trust" authentication failed'
    assert step.sqlstate == "08P01"
    (mtype, body), = split_messages(step.send)
    assert mtype == b"E" and b'M"trust" authentication failed\x00' in body
    ok = ClientAuthenticator("trust", "alice", "any secret").start_step()
    assert ok.ok and ok.send == wire.auth_request(wire.AUTH_OK)
