"""Authenticates a client to pgmux (pgmux as server): trust, plain, md5 and SCRAM-SHA-256."""

from __future__ import annotations

import base64
import enum
import functools
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from pgmux.auth import wire
from pgmux.auth.passwords import (
    ScramKeys,
    ScramSecret,
    is_md5_secret,
    make_scram_secret,
    md5_verify,
    parse_scram_secret,
    sha256,
    verify_cleartext,
    xor_bytes,
)

METHODS = ("trust", "plain", "md5", "scram-sha-256")

SQLSTATE_INVALID_PASSWORD = "28P01"
SQLSTATE_PROTOCOL_VIOLATION = "08P01"

SASL_FAILED = "SASL authentication failed"
TRUST_FAILED = '"trust" authentication failed'  # PgBouncer: trust for a user not in auth_file

# NOTE: one key per process makes the fake SCRAM salt of an unknown user, and the salt of a
# verifier derived from a plain-text secret, the same on every attempt (as PostgreSQL's
# mock authentication does with its cluster nonce): a changing salt would tell a client
# which user names exist.
_PROCESS_KEY = os.urandom(32)


def password_failed(user: str) -> str:
    """The text for a wrong password (PostgreSQL's; PgBouncer says only the part before
    "for user", with SQLSTATE 08P01)."""
    return f'password authentication failed for user "{user}"'


def stable_salt(key: bytes, user: str, length: int = 16) -> bytes:
    """A SCRAM salt that depends only on ``key`` and the user name."""
    return hmac.digest(key, b"pgmux scram salt\x00" + user.encode("utf-8"), "sha256")[:length]


@functools.lru_cache(maxsize=1024)
def _derived_verifier(password: str, salt: bytes, iterations: int) -> ScramSecret:
    """The verifier of a plain-text secret, computed once per (password, salt, iterations)
    as PgBouncer 1.25 caches its ad hoc SCRAM secrets."""
    return make_scram_secret(password, salt, iterations)


class Outcome(enum.Enum):
    CONTINUE = "continue"  # send ``send`` and wait for the client's next 'p' message
    OK = "ok"  # send ``send`` (ends with AuthenticationOk); the client is in
    FAILED = "failed"  # send ``send`` (an ErrorResponse) and close the connection


@dataclass(frozen=True)
class AuthStep:
    """What to do after a client message. ``detail`` is for our log, never for the client."""

    outcome: Outcome
    send: bytes = b""
    error: str | None = None
    sqlstate: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


class _State(enum.Enum):
    NEW = "new"
    WAIT_PASSWORD = "wait_password"
    WAIT_SASL_INITIAL = "wait_sasl_initial"
    WAIT_SASL_RESPONSE = "wait_sasl_response"
    DONE = "done"
    FAILED = "failed"


class ClientAuthenticator:
    """One client's login exchange, fed the client's 'p' messages; no I/O.

    Follows PgBouncer: with method ``md5`` and a SCRAM secret stored, SCRAM is used instead;
    with ``scram-sha-256`` a plain secret works (a verifier is derived from it) but an md5
    secret cannot. An empty secret never matches. An unknown user (``secret`` None) goes
    through the same exchange and fails at the end with the wrong-password answer: the md5
    salt is random as always, and SCRAM shows a fake salt that stays the same for that
    user name (``mock_key``), so the answer does not reveal which user names exist.
    With ``trust`` an unknown user is refused at once (``TRUST_FAILED``), as in PgBouncer.
    """

    def __init__(
        self,
        method: str,
        user: str,
        secret: str | None,
        *,
        salt_source: Callable[[int], bytes] = os.urandom,
        nonce_source: Callable[[], str] | None = None,
        scram_iterations: int = 4096,
        mock_key: bytes = _PROCESS_KEY,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unsupported auth method {method!r} (expected one of {METHODS})")
        self.user = user
        self.secret = secret
        self._salt_source = salt_source
        self._nonce_source = nonce_source
        self._scram_iterations = scram_iterations
        self._mock_key = mock_key
        self.method = self._effective_method(method, secret)
        self._state = _State.NEW
        self._md5_salt = b""
        self._scram_secret: ScramSecret | None = None
        self._combined_nonce = ""
        self._gs2_header = ""
        self._doomed: str | None = None  # why a SCRAM exchange must fail even if it matches
        self._client_first_bare = ""
        self._server_first = ""
        self.scram_keys: ScramKeys | None = None  # set after a successful SCRAM exchange

    @staticmethod
    def _effective_method(method: str, secret: str | None) -> str:
        if method == "md5" and secret is not None and parse_scram_secret(secret) is not None:
            return "scram-sha-256"
        return method

    @property
    def done(self) -> bool:
        return self._state in (_State.DONE, _State.FAILED)

    def start(self) -> bytes:
        """The first Authentication request to send (AuthenticationOk for trust)."""
        return self.start_step().send

    def start_step(self) -> AuthStep:
        """Like ``start`` but says what happens: CONTINUE (wait for the client's answer),
        OK (trust) or FAILED (trust for an unknown user: send the error and close)."""
        if self._state is not _State.NEW:
            raise RuntimeError("start() called twice")
        if self.method == "trust":
            if self.secret is None:
                return self._fail(TRUST_FAILED, SQLSTATE_PROTOCOL_VIOLATION, "no such user")
            return self._succeed(b"")
        return AuthStep(Outcome.CONTINUE, self._request())

    def _request(self) -> bytes:
        if self.method == "plain":
            self._state = _State.WAIT_PASSWORD
            return wire.auth_request(wire.AUTH_CLEARTEXT)
        if self.method == "md5":
            self._md5_salt = self._salt_source(4)
            self._state = _State.WAIT_PASSWORD
            return wire.auth_request(wire.AUTH_MD5, self._md5_salt)
        self._state = _State.WAIT_SASL_INITIAL
        return wire.auth_request(wire.AUTH_SASL, wire.cstring(wire.SCRAM_SHA_256) + b"\x00")

    def receive(self, message_type: bytes, body: bytes) -> AuthStep:
        """Feed one client message (type byte and body without the length)."""
        if self._state in (_State.NEW, _State.DONE, _State.FAILED):
            return self._fail("unexpected message during authentication",
                              SQLSTATE_PROTOCOL_VIOLATION, f"state {self._state.value}")
        if message_type != b"p":
            return self._fail("expected a password response message",
                              SQLSTATE_PROTOCOL_VIOLATION,
                              f"got message type {message_type!r}")
        try:
            if self._state is _State.WAIT_PASSWORD:
                return self._password(body)
            if self._state is _State.WAIT_SASL_INITIAL:
                return self._sasl_initial(body)
            return self._sasl_response(body)
        except ValueError as exc:
            return self._fail("invalid authentication message", SQLSTATE_PROTOCOL_VIOLATION,
                              str(exc))

    # --- cleartext and md5 -------------------------------------------------------------

    def _password(self, body: bytes) -> AuthStep:
        answer, _ = wire.read_cstring(body)
        if self.secret is None:
            return self._fail(password_failed(self.user), detail="no such user")
        if not self.secret:
            return self._fail(password_failed(self.user), detail="empty password in auth_file")
        if self.method == "plain":
            good = verify_cleartext(self.user, self.secret, answer)
        else:
            good = md5_verify(self.user, self.secret, self._md5_salt, answer)
        if not good:
            return self._fail(password_failed(self.user), detail="wrong password")
        return self._succeed(b"")

    # --- SCRAM-SHA-256 -----------------------------------------------------------------

    def _verifier(self) -> tuple[ScramSecret, str | None]:
        """The verifier to check against, and why the exchange must fail anyway (or None)."""
        secret = self.secret
        salt = stable_salt(self._mock_key, self.user)
        if secret:
            stored = parse_scram_secret(secret)
            if stored is not None:
                return stored, None
            if not is_md5_secret(secret):
                return _derived_verifier(secret, salt, self._scram_iterations), None
        if secret is None:
            reason = "no such user"
        elif not secret:
            reason = "empty password in auth_file"
        else:
            reason = "SCRAM authentication failed: user has MD5 secret"
        # NOTE: a mock verifier keeps the exchange looking normal; its keys match nothing
        # (all zero, as PostgreSQL's), and _sasl_response refuses a doomed login anyway.
        return ScramSecret(self._scram_iterations, salt, bytes(32), bytes(32)), reason

    def _sasl_initial(self, body: bytes) -> AuthStep:
        mechanism, data = wire.read_sasl_initial_response(body)
        if mechanism != wire.SCRAM_SHA_256:
            return self._fail(SASL_FAILED, detail=f"client chose mechanism {mechanism!r}")
        verifier, self._doomed = self._verifier()
        self._scram_secret = verifier
        try:
            gs2_header, bare, client_nonce = _parse_client_first(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            return self._fail(SASL_FAILED, detail=f"bad client-first-message: {exc}")
        server_nonce = (self._nonce_source() if self._nonce_source is not None
                        else base64.b64encode(self._salt_source(18)).decode("ascii"))
        self._combined_nonce = client_nonce + server_nonce
        self._gs2_header = gs2_header
        self._client_first_bare = bare
        self._server_first = (f"r={self._combined_nonce},"
                              f"s={base64.b64encode(verifier.salt).decode('ascii')},"
                              f"i={verifier.iterations}")
        self._state = _State.WAIT_SASL_RESPONSE
        return AuthStep(
            Outcome.CONTINUE,
            wire.auth_request(wire.AUTH_SASL_CONTINUE, self._server_first.encode("utf-8")),
        )

    def _sasl_response(self, body: bytes) -> AuthStep:
        verifier = self._scram_secret
        assert verifier is not None
        try:
            without_proof, proof = _parse_client_final(
                body.decode("utf-8"), self._gs2_header, self._combined_nonce)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._fail(SASL_FAILED, detail=self._doomed or f"bad client-final: {exc}")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.digest(verifier.stored_key, auth_message, "sha256")
        client_key = xor_bytes(proof, client_signature)
        if not hmac.compare_digest(sha256(client_key), verifier.stored_key):
            return self._fail(SASL_FAILED, detail=self._doomed or "wrong password")
        if self._doomed is not None:
            return self._fail(SASL_FAILED, detail=self._doomed)
        self.scram_keys = ScramKeys(client_key=client_key, server_key=verifier.server_key)
        server_signature = hmac.digest(verifier.server_key, auth_message, "sha256")
        server_final = "v=" + base64.b64encode(server_signature).decode("ascii")
        return self._succeed(
            wire.auth_request(wire.AUTH_SASL_FINAL, server_final.encode("utf-8")))

    # --- endings -----------------------------------------------------------------------

    def _succeed(self, before_ok: bytes) -> AuthStep:
        self._state = _State.DONE
        return AuthStep(Outcome.OK, before_ok + wire.auth_request(wire.AUTH_OK))

    def _fail(self, text: str, sqlstate: str = SQLSTATE_INVALID_PASSWORD,
              detail: str | None = None) -> AuthStep:
        self._state = _State.FAILED
        return AuthStep(Outcome.FAILED, wire.error_response(sqlstate, text), text, sqlstate,
                        detail)


def _parse_client_first(message: str) -> tuple[str, str, str]:
    """Split client-first-message into (GS2 header, bare message, client nonce).

    NOTE: the user name in it may be empty (libpq sends ``n=``); PostgreSQL, and so we,
    ignore it: the startup packet's user is the one authenticated.
    """
    flag, sep1, rest = message.partition(",")
    authzid, sep2, bare = rest.partition(",")
    if not (sep1 and sep2):
        raise ValueError("missing GS2 header")
    if flag == "p" or flag.startswith("p="):
        raise ValueError("channel binding is not supported")
    if flag not in ("n", "y"):
        raise ValueError(f"invalid GS2 flag {flag!r}")
    if authzid and not authzid.startswith("a="):
        raise ValueError("invalid authzid")
    attrs = bare.split(",")
    if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
        raise ValueError("expected 'n=...,r=...'")
    nonce = attrs[1][2:]
    if not nonce or any(not 0x21 <= ord(ch) <= 0x7E for ch in nonce):
        raise ValueError("invalid client nonce")
    return f"{flag},{authzid},", bare, nonce


def _parse_client_final(message: str, gs2_header: str, nonce: str) -> tuple[str, bytes]:
    """Check client-final-message; return (message without proof, proof bytes)."""
    without_proof, sep, proof_b64 = message.rpartition(",p=")
    if not sep:
        raise ValueError("missing proof")
    attrs = without_proof.split(",")
    if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
        raise ValueError("expected 'c=...,r=...,p=...'")
    if base64.b64decode(attrs[0][2:], validate=True) != gs2_header.encode("utf-8"):
        raise ValueError("channel binding data does not match")
    if attrs[1][2:] != nonce:
        raise ValueError("nonce does not match")
    proof = base64.b64decode(proof_b64, validate=True)
    if len(proof) != 32:
        raise ValueError("proof has the wrong length")
    return without_proof, proof
