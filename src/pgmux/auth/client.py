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


class ServerLogin:
    """One server login exchange, fed the bodies of the server's 'R' messages; no I/O.

    ``password`` may be plain, an md5 hash (good for md5 only) or a SCRAM verifier (good for
    SCRAM only, and only with ``scram_keys`` taken from the client's own SCRAM login to
    pgmux, as PgBouncer does).
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
        self.done = False  # True once AuthenticationOk arrived
        self.method: str | None = None  # what the server asked for, for logs

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
            return wire.password_message(wire.cstring(self._plain("a cleartext password")))
        if code == wire.AUTH_MD5:
            self.method = "md5"
            if len(data) != 4:
                raise AuthError("MD5 authentication request has a bad salt")
            secret = self._required("an MD5 password")
            if parse_scram_secret(secret) is not None:
                raise AuthError(f"server asked for an MD5 password but only a SCRAM secret "
                                f"is known for user \"{self.user}\"")
            return wire.password_message(wire.cstring(md5_response(self.user, secret, data)))
        if code == wire.AUTH_SASL:
            self.method = "scram-sha-256"
            return self._sasl_start(data)
        if code == wire.AUTH_SASL_CONTINUE:
            return self._sasl_continue(data)
        if code == wire.AUTH_SASL_FINAL:
            self._sasl_final(data)
            return None
        name = wire.AUTH_CODE_NAMES.get(code, "unknown")
        raise AuthError(f"unsupported authentication method requested by server: "
                        f"{name} (code {code})")

    def _required(self, what: str) -> str:
        if self.password is None:
            raise AuthError(f"server asked for {what} but no password is configured "
                            f"for user \"{self.user}\"")
        return self.password

    def _plain(self, what: str) -> str:
        secret = self._required(what)
        if is_md5_secret(secret) or parse_scram_secret(secret) is not None:
            raise AuthError(f"server asked for {what} but only a hashed secret is known "
                            f"for user \"{self.user}\"")
        return secret

    def _sasl_start(self, data: bytes) -> bytes:
        try:
            mechanisms = wire.read_sasl_mechanisms(data)
        except ValueError as exc:
            raise AuthError(f"bad SASL mechanism list: {exc}") from None
        if wire.SCRAM_SHA_256 not in mechanisms:
            raise AuthError(f"server offers no supported SASL mechanism "
                            f"(offered: {', '.join(mechanisms) or 'none'})")
        secret = self._required("a SCRAM-SHA-256 password")
        if is_md5_secret(secret):
            raise AuthError(f"cannot do SCRAM authentication: only an md5 hash is known "
                            f"for user \"{self.user}\"")
        if parse_scram_secret(secret) is not None:
            if self.scram_keys is None:
                raise AuthError("cannot do SCRAM authentication: password is SCRAM secret but "
                                "client authentication did not provide SCRAM keys")
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
            raise AuthError("SASL continue without a SASL exchange")
        try:
            self._scram.set_server_first(data.decode("utf-8"))
            final = str(self._scram.get_client_final())
        except (ScramException, UnicodeDecodeError, ValueError) as exc:
            raise AuthError(f"SCRAM exchange failed: {exc}") from None
        return wire.password_message(final.encode("utf-8"))

    def _sasl_final(self, data: bytes) -> None:
        if self._scram is None:
            raise AuthError("SASL final without a SASL exchange")
        try:
            self._scram.set_server_final(data.decode("utf-8"))
        except (ScramException, UnicodeDecodeError, ValueError) as exc:
            raise AuthError(f"server's SCRAM signature is invalid: {exc}") from None


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
