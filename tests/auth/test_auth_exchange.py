"""ClientAuthenticator against ServerLogin in memory: every method x secret kind x password."""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
from dataclasses import dataclass

import pytest

from pgmux.auth import (
    SASL_FAILED,
    AuthError,
    AuthStep,
    ClientAuthenticator,
    ScramKeys,
    ServerLogin,
    make_scram_secret,
    md5_hash,
    password_failed,
    wire,
)

USER = "alice"
PASSWORD = "correct horse"
SALT16 = bytes(range(16))

SECRETS = {
    "plain": PASSWORD,
    "md5": md5_hash(USER, PASSWORD),
    "scram": str(make_scram_secret(PASSWORD, SALT16)),
}


def split_messages(data: bytes) -> list[tuple[bytes, bytes]]:
    """Cut a byte string into (type, body) messages, checking the framing."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("!I", data, pos + 1)
        out.append((data[pos : pos + 1], data[pos + 5 : pos + 1 + length]))
        pos += 1 + length
    assert pos == len(data)
    return out


@dataclass
class Result:
    ok: bool
    step: AuthStep | None
    server_messages: list[bytes]  # R codes seen by the client, in order
    login: ServerLogin


def run(auth: ClientAuthenticator, login: ServerLogin) -> Result:
    """Drive both peers until the client is in or the server refused."""
    codes: list[bytes] = []
    outbound = auth.start()
    step: AuthStep | None = None
    while True:
        reply: bytes | None = None
        for mtype, body in split_messages(outbound):
            if mtype == b"E":
                return Result(False, step, codes, login)
            assert mtype == b"R"
            codes.append(body[:4])
            answer = login.receive(body)
            if answer is not None:
                assert reply is None, "two replies to one batch"
                reply = answer
        if login.done:
            assert auth.done
            return Result(True, step, codes, login)
        assert reply is not None
        (mtype, body), = split_messages(reply)
        step = auth.receive(mtype, body)
        outbound = step.send


EXPECTED = {
    # (method, secret kind) -> what succeeds with the right password
    ("trust", "plain"): True,
    ("trust", "md5"): True,
    ("trust", "scram"): True,
    ("plain", "plain"): True,
    ("plain", "md5"): True,
    ("plain", "scram"): True,
    ("md5", "plain"): True,
    ("md5", "md5"): True,
    ("md5", "scram"): True,  # PgBouncer switches to SCRAM for a SCRAM secret
    ("scram-sha-256", "plain"): True,
    ("scram-sha-256", "md5"): False,  # an md5 hash cannot do SCRAM
    ("scram-sha-256", "scram"): True,
}


@pytest.mark.parametrize(("method", "kind"), sorted(EXPECTED))
def test_right_password(method: str, kind: str) -> None:
    auth = ClientAuthenticator(method, USER, SECRETS[kind])
    result = run(auth, ServerLogin(USER, PASSWORD))
    assert result.ok is EXPECTED[(method, kind)]
    if not result.ok:
        assert result.step is not None and result.step.error == SASL_FAILED
        assert result.step.detail == "SCRAM authentication failed: user has MD5 secret"


@pytest.mark.parametrize(("method", "kind"), sorted(EXPECTED))
def test_wrong_password(method: str, kind: str) -> None:
    auth = ClientAuthenticator(method, USER, SECRETS[kind])
    result = run(auth, ServerLogin(USER, "wrong"))
    if method == "trust":
        assert result.ok
        return
    assert not result.ok
    step = result.step
    assert step is not None and step.failed and step.sqlstate == "28P01"
    if auth.method == "scram-sha-256":
        assert step.error == SASL_FAILED
    else:
        assert step.error == password_failed(USER)
        assert step.error == 'password authentication failed for user "alice"'
    # the failure carries a ready FATAL ErrorResponse
    (mtype, body), = split_messages(step.send)
    assert mtype == b"E" and b"SFATAL\x00" in body and b"C28P01\x00" in body


@pytest.mark.parametrize("method", ["plain", "md5", "scram-sha-256"])
def test_unknown_user_fails_after_full_exchange(method: str) -> None:
    auth = ClientAuthenticator(method, USER, None)
    result = run(auth, ServerLogin(USER, PASSWORD))
    assert not result.ok
    assert result.step is not None and result.step.detail == "no such user"
    assert len(result.server_messages) >= 1  # the client saw a normal challenge first


def test_effective_method_and_requests() -> None:
    assert ClientAuthenticator("md5", USER, SECRETS["scram"]).method == "scram-sha-256"
    assert ClientAuthenticator("md5", USER, SECRETS["md5"]).method == "md5"
    md5 = ClientAuthenticator("md5", USER, SECRETS["plain"], salt_source=lambda n: b"\x01" * n)
    assert md5.start() == wire.auth_request(5, b"\x01\x01\x01\x01")
    assert ClientAuthenticator("plain", USER, "x").start() == b"R\x00\x00\x00\x08\x00\x00\x00\x03"
    assert ClientAuthenticator("trust", USER, "").start() == b"R\x00\x00\x00\x08\x00\x00\x00\x00"
    sasl = ClientAuthenticator("scram-sha-256", USER, "x").start()
    assert sasl == wire.auth_request(10, b"SCRAM-SHA-256\x00\x00")


def test_md5_exchange_bytes_known_salt() -> None:
    salt = b"\xde\xad\xbe\xef"
    auth = ClientAuthenticator("md5", "admin", "1234", salt_source=lambda n: salt)
    login = ServerLogin("admin", "1234")
    (_, body), = split_messages(auth.start())
    reply = login.receive(body)
    assert reply is not None
    expected = "md5" + hashlib.md5(b"45f2603610af569b6155c45067268c6b" + salt).hexdigest()
    assert reply == wire.password_message(expected.encode() + b"\x00")
    step = auth.receive(b"p", reply[5:])
    assert step.ok and step.send == wire.auth_request(0)


def test_scram_success_sends_final_then_ok() -> None:
    auth = ClientAuthenticator("scram-sha-256", USER, SECRETS["scram"])
    result = run(auth, ServerLogin(USER, PASSWORD))
    assert result.ok
    codes = [struct.unpack("!I", c)[0] for c in result.server_messages]
    assert codes == [10, 11, 12, 0]


def test_rfc7677_vector_client_and_server() -> None:
    """RFC 7677's SCRAM-SHA-256 example, on both our client and our server side."""
    c_nonce = "rOprNGfwEbeRWgbNEkqO"
    s_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    server_sig = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    secret = str(make_scram_secret("pencil", salt, 4096))
    auth = ClientAuthenticator("scram-sha-256", "user", secret, nonce_source=lambda: s_nonce)
    login = ServerLogin("user", "pencil", nonce=c_nonce)
    (_, body), = split_messages(auth.start())
    first = login.receive(body)
    assert first is not None
    assert first.endswith(b"n,,n=user,r=" + c_nonce.encode())
    step = auth.receive(b"p", first[5:])
    (_, cont), = split_messages(step.send)
    assert cont[4:] == f"r={c_nonce}{s_nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".encode()
    final = login.receive(cont)
    assert final is not None
    assert final[5:] == f"c=biws,r={c_nonce}{s_nonce},p={proof}".encode()
    step = auth.receive(b"p", final[5:])
    assert step.ok
    (_, fin), (_, ok) = split_messages(step.send)
    assert fin[4:] == f"v={server_sig}".encode()
    assert login.receive(fin) is None
    assert login.receive(ok) is None and login.done


def test_scram_keys_pass_through() -> None:
    """A client's SCRAM login yields keys that log in to a server with the same verifier."""
    front = ClientAuthenticator("scram-sha-256", USER, SECRETS["scram"])
    assert run(front, ServerLogin(USER, PASSWORD)).ok
    keys = front.scram_keys
    assert isinstance(keys, ScramKeys)
    backend = ClientAuthenticator("scram-sha-256", USER, SECRETS["scram"])
    assert run(backend, ServerLogin(USER, SECRETS["scram"], scram_keys=keys)).ok
    # a server holding a verifier with another salt refuses the same keys
    other = str(make_scram_secret(PASSWORD, b"another-salt-16b"))
    assert not run(ClientAuthenticator("scram-sha-256", USER, other),
                   ServerLogin(USER, SECRETS["scram"], scram_keys=keys)).ok


def test_scram_keys_absent_for_plain_and_md5() -> None:
    auth = ClientAuthenticator("md5", USER, SECRETS["plain"])
    assert run(auth, ServerLogin(USER, PASSWORD)).ok and auth.scram_keys is None


def test_protocol_violations() -> None:
    auth = ClientAuthenticator("md5", USER, PASSWORD)
    auth.start()
    step = auth.receive(b"Q", b"select 1\x00")
    assert step.failed and step.sqlstate == "08P01"
    assert auth.receive(b"p", b"x\x00").failed  # nothing more after a failure


def test_unterminated_password_is_a_protocol_violation() -> None:
    auth = ClientAuthenticator("plain", USER, PASSWORD)
    auth.start()
    step = auth.receive(b"p", b"no-terminator")
    assert step.failed and step.sqlstate == "08P01"


def test_wrong_sasl_mechanism() -> None:
    auth = ClientAuthenticator("scram-sha-256", USER, PASSWORD)
    auth.start()
    step = auth.receive(b"p", wire.cstring("SCRAM-SHA-256-PLUS") + struct.pack("!i", 0))
    assert step.failed and step.error == SASL_FAILED


def test_garbage_sasl_initial() -> None:
    auth = ClientAuthenticator("scram-sha-256", USER, PASSWORD)
    auth.start()
    data = b"garbage"
    step = auth.receive(b"p", wire.cstring("SCRAM-SHA-256") + struct.pack("!i", len(data)) + data)
    assert step.failed and step.error == SASL_FAILED


def test_receive_before_start_and_bad_method() -> None:
    assert ClientAuthenticator("md5", USER, PASSWORD).receive(b"p", b"x\x00").failed
    with pytest.raises(ValueError):
        ClientAuthenticator("gss", USER, PASSWORD)


# --- ServerLogin errors ----------------------------------------------------------------


def _r(code: int, data: bytes = b"") -> bytes:
    return struct.pack("!I", code) + data


@pytest.mark.parametrize(
    ("password", "auth_request", "log", "client"),
    [
        # PgBouncer's log lines, and what it sends the clients waiting for the pool
        (SECRETS["scram"], _r(5, b"salt"), "cannot do MD5 authentication: wrong password type",
         "server login failed: wrong password type"),
        (md5_hash(USER, "x"), _r(10, b"SCRAM-SHA-256\x00\x00"),
         "cannot do SCRAM authentication: wrong password type",
         "server login failed: wrong password type"),
        (SECRETS["scram"], _r(10, b"SCRAM-SHA-256\x00\x00"),
         "cannot do SCRAM authentication: password is SCRAM secret but client authentication "
         "did not provide SCRAM keys", "server login failed: wrong password type"),
        ("pw", _r(10, b"SCRAM-SHA-256-PLUS\x00\x00"),
         "none of the server's SASL authentication mechanisms are supported",
         "server login failed: none of the server's SASL authentication mechanisms are "
         "supported"),
        ("pw", _r(7), "unknown/unsupported auth method: 7", None),
        ("pw", _r(9), "unknown/unsupported auth method: 9", None),
        ("pw", _r(2), "unknown/unsupported auth method: 2", None),
        ("pw", _r(99), "unknown/unsupported auth method: 99", None),
        ("pw", _r(11, b"r=x"),
         "protocol error: AuthenticationSASLContinue without prior AuthenticationSASL", None),
        ("pw", _r(12, b"v=x"),
         "protocol error: AuthenticationSASLFinal without prior AuthenticationSASLContinue",
         None),
        ("pw", b"\x00", "authentication request is truncated", None),
        ("pw", _r(5, b"sal"), "MD5 authentication request has a bad salt", None),
    ],
)
def test_server_login_errors(password: str | None, auth_request: bytes, log: str,
                             client: str | None) -> None:
    with pytest.raises(AuthError) as err:
        ServerLogin(USER, password).receive(auth_request)
    assert str(err.value) == log
    assert err.value.client_message == client


def test_server_login_sends_any_secret_as_cleartext() -> None:
    """PgBouncer sends whatever auth_file holds when asked for cleartext; the server judges."""
    for secret in (md5_hash(USER, "x"), SECRETS["scram"], "plain pw"):
        assert ServerLogin(USER, secret).receive(_r(3)) == wire.password_message(
            secret.encode() + b"\x00")


def test_server_login_without_password_tries_an_empty_one() -> None:
    login = ServerLogin(USER, None)
    assert login.missing_password
    assert login.receive(_r(3)) == wire.password_message(b"\x00")
    salt = b"salt"
    inner = hashlib.md5(USER.encode()).hexdigest()  # md5("" + user)
    expected = "md5" + hashlib.md5(inner.encode() + salt).hexdigest()
    assert ServerLogin(USER, None).receive(_r(5, salt)) == wire.password_message(
        expected.encode() + b"\x00")
    first = ServerLogin(USER, None, nonce="abc").receive(_r(10, b"SCRAM-SHA-256\x00\x00"))
    assert first is not None and first.endswith(b"n,,n=alice,r=abc")
    assert not ServerLogin(USER, "").missing_password


def test_server_login_protocol_errors_in_sasl_order() -> None:
    login = ServerLogin(USER, PASSWORD, nonce="abc")
    assert login.receive(_r(10, b"SCRAM-SHA-256\x00\x00")) is not None
    with pytest.raises(AuthError, match="duplicate AuthenticationSASL message from server"):
        login.receive(_r(10, b"SCRAM-SHA-256\x00\x00"))
    with pytest.raises(AuthError, match="without prior AuthenticationSASLContinue"):
        login.receive(_r(12, b"v=AAAA"))
    salt = base64.b64encode(SALT16).decode()
    assert login.receive(_r(11, f"r=abcSRV,s={salt},i=4096".encode())) is not None
    with pytest.raises(AuthError, match="received second AuthenticationSASLContinue"):
        login.receive(_r(11, f"r=abcSRV,s={salt},i=4096".encode()))


def test_server_login_cleartext_and_ok() -> None:
    login = ServerLogin(USER, "pw")
    assert login.receive(_r(3)) == wire.password_message(b"pw\x00")
    assert login.receive(_r(0)) is None and login.done
    with pytest.raises(AuthError):
        login.receive(_r(3))


def test_server_login_rejects_bad_server_signature() -> None:
    auth = ClientAuthenticator("scram-sha-256", USER, PASSWORD)
    login = ServerLogin(USER, PASSWORD)
    (_, body), = split_messages(auth.start())
    first = login.receive(body)
    assert first is not None
    (_, cont), = split_messages(auth.receive(b"p", first[5:]).send)
    assert login.receive(cont) is not None
    forged = _r(12, b"v=" + base64.b64encode(b"\x00" * 32))
    with pytest.raises(AuthError) as err:
        login.receive(forged)
    assert str(err.value) == "invalid server signature"
    assert err.value.client_message == "server login failed: invalid server signature"


def test_every_combination_counted() -> None:
    combos = list(itertools.product(["trust", "plain", "md5", "scram-sha-256"], SECRETS))
    assert sorted(combos) == sorted(EXPECTED)


def _sasl_initial(first: str) -> bytes:
    data = first.encode()
    return wire.cstring("SCRAM-SHA-256") + struct.pack("!i", len(data)) + data


def test_libpq_style_empty_scram_user_name_is_accepted() -> None:
    """libpq sends ``n,,n=,r=...``; PostgreSQL ignores the SCRAM user name, so do we."""
    auth = ClientAuthenticator("scram-sha-256", USER, PASSWORD, nonce_source=lambda: "SRV")
    auth.start()
    step = auth.receive(b"p", _sasl_initial("n,,n=,r=CLIENTNONCE"))
    assert step.outcome.value == "continue"
    (_, body), = split_messages(step.send)
    assert body[4:].startswith(b"r=CLIENTNONCESRV,s=")


@pytest.mark.parametrize("first", ["p=tls-server-end-point,,n=,r=abc", "x,,n=,r=abc",
                                   "n,,r=abc", "n,,n=,r=", "n,n=,r=abc"])
def test_bad_client_first_messages(first: str) -> None:
    auth = ClientAuthenticator("scram-sha-256", USER, PASSWORD)
    auth.start()
    step = auth.receive(b"p", _sasl_initial(first))
    assert step.failed and step.error == SASL_FAILED


@pytest.mark.parametrize("final", ["c=biws,r=CLIENTNONCESRV", "c=eSws,r=CLIENTNONCESRV,p=AAAA",
                                   "c=biws,r=OTHER,p=" + "A" * 44, "c=biws,r=CLIENTNONCESRV,p=!!"])
def test_bad_client_final_messages(final: str) -> None:
    auth = ClientAuthenticator("scram-sha-256", USER, PASSWORD, nonce_source=lambda: "SRV")
    auth.start()
    assert not auth.receive(b"p", _sasl_initial("n,,n=,r=CLIENTNONCE")).failed
    step = auth.receive(b"p", final.encode())
    assert step.failed and step.error == SASL_FAILED
