"""Sans-IO authentication exchanges: clients logging in to pgmux, pgmux logging in to servers."""

from pgmux.auth.client import WRONG_PASSWORD_TYPE, ServerLogin
from pgmux.auth.errors import ANSWER_FAILED, AuthError
from pgmux.auth.passwords import (
    ScramKeys,
    ScramSecret,
    is_md5_secret,
    is_scram_secret,
    make_scram_secret,
    md5_hash,
    md5_response,
    md5_verify,
    parse_scram_secret,
    verify_cleartext,
)
from pgmux.auth.server import (
    METHODS,
    SASL_FAILED,
    TRUST_FAILED,
    AuthStep,
    ClientAuthenticator,
    Outcome,
    password_failed,
)

__all__ = [
    "ANSWER_FAILED",
    "METHODS",
    "SASL_FAILED",
    "TRUST_FAILED",
    "WRONG_PASSWORD_TYPE",
    "AuthError",
    "AuthStep",
    "ClientAuthenticator",
    "Outcome",
    "ScramKeys",
    "ScramSecret",
    "ServerLogin",
    "is_md5_secret",
    "is_scram_secret",
    "make_scram_secret",
    "md5_hash",
    "md5_response",
    "md5_verify",
    "parse_scram_secret",
    "password_failed",
    "verify_cleartext",
]
