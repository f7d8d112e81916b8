"""Logs pgmux in to a PostgreSQL server (pgmux as the client side): cleartext, md5, SCRAM."""

from __future__ import annotations

import base64
import hmac
import os
import struct
from typing import Any

from scramp import ScramClient, ScramException

from pgmux.auth import wire
from pgmux.auth.errors import AuthError
from pgmux.auth.passwords import (
    ScramKeys,
    is_md5_secret,
    md5_response,
    parse_scram_secret,
    sha256,
    xor_bytes,
)

WRONG_PASSWORD_TYPE = "server login failed: wrong password type"


class ServerLogin:
    """One server login exchange, fed the bodies of the server's 'R' messages; no I/O.

    ``password`` is the auth_file (or [databases]) secret, as PgBouncer uses it:

    ============  ============================  ======================  =====================
    secret        cleartext request             md5 request             SCRAM-SHA-256
    ============  ============================  ======================  =====================
    plain         sent                          hashed with the salt    computed from it
    md5 hash      sent as it is (the server     answers the challenge   "wrong password type"
                  then refuses it)              directly
    SCRAM secret  sent as it is (refused)       "wrong password type"   only with
                                                                        ``scram_keys`` from
                                                                        the client's own
                                                                        SCRAM login
    none (None)   as an empty password, as PgBouncer does; the server's refusal is what
                  the client sees (``missing_password`` tells the log why)
    ============  ============================  ======================  =====================
    """

    def __init__(
        self,
        user: str,
        password: str | None,
        *,
        scram_keys: ScramKeys | None = None,
        nonce: str | None = None,
    ) -> None:
        self.user = user
        self.password = password
        self.scram_keys = scram_keys
        self._nonce = nonce
        self._scram: Any = None  # scramp ScramClient, or _KeysScramClient
        self._server_first_seen = False
        self.done = False  # True once AuthenticationOk arrived
        self.method: str | None = None  # what the server asked for, for logs

    @property
    def missing_password(self) -> bool:
        """True when no password is configured and an empty one is being tried."""
        return self.password is None

    def receive(self, auth_message_body: bytes) -> bytes | None:
        """Handle one 'R' body; return the 'p' message to send, or None. Raises AuthError."""
        if len(auth_message_body) < 4:
            raise AuthError("authentication request is truncated")
        (code,) = struct.unpack_from("!I", auth_message_body)
        data = auth_message_body[4:]
        if self.done:
            raise AuthError("authentication request after AuthenticationOk")
        if code == wire.AUTH_OK:
            self.done = True
            return None
        if code == wire.AUTH_CLEARTEXT:
            self.method = "cleartext"
            return wire.password_message(wire.cstring(self._secret()))
        if code == wire.AUTH_MD5:
            self.method = "md5"
            return self._md5(data)
        if code == wire.AUTH_SASL:
            self.method = "scram-sha-256"
            return self._sasl_start(data)
        if code == wire.AUTH_SASL_CONTINUE:
            return self._sasl_continue(data)
        if code == wire.AUTH_SASL_FINAL:
            self._sasl_final(data)
            return None
        raise AuthError(f"unknown/unsupported auth method: {code}")

    def _secret(self) -> str:
        # NOTE: PgBouncer keeps an empty password for a user without one and sends it.
        return self.password if self.password is not None else ""

    def _md5(self, salt: bytes) -> bytes:
        if len(salt) != 4:
            raise AuthError("MD5 authentication request has a bad salt")
        secret = self._secret()
        if parse_scram_secret(secret) is not None:
            raise AuthError("cannot do MD5 authentication: wrong password type",
                            WRONG_PASSWORD_TYPE)
        return wire.password_message(wire.cstring(md5_response(self.user, secret, salt)))

    def _sasl_start(self, data: bytes) -> bytes:
        try:
            mechanisms = wire.read_sasl_mechanisms(data)
        except ValueError as exc:
            raise AuthError(f"bad SASL mechanism list: {exc}") from None
        if wire.SCRAM_SHA_256 not in mechanisms:
            text = "none of the server's SASL authentication mechanisms are supported"
            raise AuthError(text, f"server login failed: {text}")
        secret = self._secret()
        if is_md5_secret(secret):
            raise AuthError("cannot do SCRAM authentication: wrong password type",
                            WRONG_PASSWORD_TYPE)
        if self._scram is not None:
            raise AuthError("protocol error: duplicate AuthenticationSASL message from server")
        if parse_scram_secret(secret) is not None:
            if self.scram_keys is None:
                raise AuthError("cannot do SCRAM authentication: password is SCRAM secret but "
                                "client authentication did not provide SCRAM keys",
                                WRONG_PASSWORD_TYPE)
            self._scram = _KeysScramClient(self.scram_keys, self._nonce)
        else:
            try:
                # NOTE: PostgreSQL ignores the SCRAM user name (the startup packet's counts);
                # libpq sends it empty, but scramp insists on one, so we send ours.
                self._scram = ScramClient([wire.SCRAM_SHA_256], self.user or "*", secret,
                                          c_nonce=self._nonce)
            except ScramException as exc:
                raise AuthError(f"cannot start SCRAM: {exc}") from None
        first = str(self._scram.get_client_first()).encode("utf-8")
        return wire.sasl_initial_response(wire.SCRAM_SHA_256, first)

    def _sasl_continue(self, data: bytes) -> bytes:
        if self._scram is None:
            raise AuthError("protocol error: AuthenticationSASLContinue without prior "
                            "AuthenticationSASL")
        if self._server_first_seen:
            raise AuthError("SCRAM exchange protocol error: received second "
                            "AuthenticationSASLContinue")
        self._server_first_seen = True
        try:
            self._scram.set_server_first(data.decode("utf-8"))
            final = str(self._scram.get_client_final())
        except (ScramException, UnicodeDecodeError, ValueError) as exc:
            raise AuthError(f"SCRAM exchange failed: {exc}") from None
        return wire.password_message(final.encode("utf-8"))

    def _sasl_final(self, data: bytes) -> None:
        if self._scram is None or not self._server_first_seen:
            raise AuthError("protocol error: AuthenticationSASLFinal without prior "
                            "AuthenticationSASLContinue")
        try:
            self._scram.set_server_final(data.decode("utf-8"))
        except (ScramException, UnicodeDecodeError, ValueError):
            raise AuthError("invalid server signature",
                            "server login failed: invalid server signature") from None


class _KeysScramClient:
    """The client half of SCRAM-SHA-256 from ClientKey/ServerKey instead of a password.

    Works only when the server stores exactly the verifier the keys came from.
    """

    def __init__(self, keys: ScramKeys, nonce: str | None) -> None:
        self._keys = keys
        self._nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self._first_bare = f"n=,r={self._nonce}"
        self._server_first = ""
        self._combined = ""
        self._server_signature = b""

    def get_client_first(self) -> str:
        return "n,," + self._first_bare

    def set_server_first(self, message: str) -> None:
        attrs = _attributes(message)
        combined = attrs.get("r", "")
        if not combined.startswith(self._nonce) or len(combined) <= len(self._nonce):
            raise ValueError("server nonce does not extend ours")
        if "s" not in attrs or "i" not in attrs:
            raise ValueError("server-first-message lacks salt or iteration count")
        self._server_first = message
        self._combined = combined

    def get_client_final(self) -> str:
        without_proof = f"c=biws,r={self._combined}"
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        stored_key = sha256(self._keys.client_key)
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = xor_bytes(self._keys.client_key, signature)
        self._server_signature = hmac.digest(self._keys.server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}"

    def set_server_final(self, message: str) -> None:
        attrs = _attributes(message)
        if "e" in attrs:
            raise ValueError(f"server reported error {attrs['e']}")
        given = base64.b64decode(attrs.get("v", ""))
        if not hmac.compare_digest(given, self._server_signature):
            raise ValueError("server signature does not match")


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out
