"""Password secrets as PostgreSQL stores them: md5 hashes and SCRAM-SHA-256 verifiers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from scramp.utils import saslprep

_MD5_RE = re.compile(r"^md5[0-9a-f]{32}$")
_SCRAM_RE = re.compile(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$")


def is_md5_secret(secret: str) -> bool:
    """True for ``md5`` followed by 32 lower-case hex digits."""
    return _MD5_RE.match(secret) is not None


def is_scram_secret(secret: str) -> bool:
    return parse_scram_secret(secret) is not None


def md5_hash(user: str, password: str) -> str:
    """PostgreSQL's stored md5 form: "md5" + md5(password + user) in hex."""
    digest = hashlib.md5((password + user).encode("utf-8")).hexdigest()
    return "md5" + digest


def md5_response(user: str, secret: str, salt: bytes) -> str:
    """The client's answer to an MD5 challenge: "md5" + md5(md5hex(password+user) + salt).

    ``secret`` may be the plain password or its stored md5 hash.
    """
    inner = secret[3:] if is_md5_secret(secret) else md5_hash(user, secret)[3:]
    return "md5" + hashlib.md5(inner.encode("ascii") + salt).hexdigest()


def md5_verify(user: str, secret: str, salt: bytes, client_response: str) -> bool:
    """Check a client's MD5 response against a plain or md5 secret (never a SCRAM one)."""
    if is_scram_secret(secret):
        return False
    expected = md5_response(user, secret, salt)
    return hmac.compare_digest(expected.encode("ascii"), client_response.encode("utf-8"))


@dataclass(frozen=True)
class ScramSecret:
    """A SCRAM-SHA-256 verifier: ``SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>``."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def __str__(self) -> str:
        b64 = _b64
        return (f"SCRAM-SHA-256${self.iterations}:{b64(self.salt)}"
                f"${b64(self.stored_key)}:{b64(self.server_key)}")


@dataclass(frozen=True)
class ScramKeys:
    """The keys a successful client SCRAM exchange reveals, enough to log in to a server that
    stores the very same verifier (PgBouncer's SCRAM pass-through)."""

    client_key: bytes
    server_key: bytes


def parse_scram_secret(secret: str) -> ScramSecret | None:
    """The parts of a SCRAM-SHA-256 verifier, or None when ``secret`` is not one."""
    match = _SCRAM_RE.match(secret)
    if match is None:
        return None
    try:
        salt, stored, server = (base64.b64decode(p, validate=True) for p in match.groups()[1:])
    except (binascii.Error, ValueError):
        return None
    if len(stored) != 32 or len(server) != 32:
        return None
    return ScramSecret(int(match.group(1)), salt, stored, server)


def normalize_password(password: str) -> bytes:
    """SASLprep as PostgreSQL applies it: a password that fails SASLprep is used as is."""
    try:
        return str(saslprep(password)).encode("utf-8")
    except Exception:  # scramp raises its own exception type for prohibited input
        return password.encode("utf-8")


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", normalize_password(password), salt, iterations)


def client_key_of(salted: bytes) -> bytes:
    return hmac.digest(salted, b"Client Key", "sha256")


def server_key_of(salted: bytes) -> bytes:
    return hmac.digest(salted, b"Server Key", "sha256")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def make_scram_secret(password: str, salt: bytes, iterations: int = 4096) -> ScramSecret:
    """Derive the verifier PostgreSQL would store for ``password`` with this salt."""
    salted = salted_password(password, salt, iterations)
    return ScramSecret(iterations, salt, sha256(client_key_of(salted)), server_key_of(salted))


def scram_verify_password(secret: ScramSecret, password: str) -> bool:
    """True when ``password`` is the one the verifier was made from."""
    derived = make_scram_secret(password, secret.salt, secret.iterations)
    return hmac.compare_digest(derived.stored_key, secret.stored_key) and hmac.compare_digest(
        derived.server_key, secret.server_key)


def verify_cleartext(user: str, secret: str, password: str) -> bool:
    """Check a cleartext password against any kind of stored secret."""
    scram = parse_scram_secret(secret)
    if scram is not None:
        return scram_verify_password(scram, password)
    if is_md5_secret(secret):
        return hmac.compare_digest(md5_hash(user, password), secret)
    return hmac.compare_digest(secret.encode("utf-8"), password.encode("utf-8"))


def xor_bytes(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
