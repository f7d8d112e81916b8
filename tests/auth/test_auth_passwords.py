"""Known vectors for md5 secrets and SCRAM verifiers."""

from __future__ import annotations

import hashlib

import pytest

from pgmux.auth import (
    is_md5_secret,
    is_scram_secret,
    make_scram_secret,
    md5_hash,
    md5_response,
    md5_verify,
    parse_scram_secret,
    verify_cleartext,
)


def test_md5_hash_known_vectors() -> None:
    # From PgBouncer's documentation: user admin, password 1234.
    assert md5_hash("admin", "1234") == "md545f2603610af569b6155c45067268c6b"
    assert md5_hash("postgres", "postgres") == (
        "md5" + hashlib.md5(b"postgrespostgres").hexdigest())


def test_md5_response_from_plain_or_hash_is_the_same() -> None:
    salt = b"\x01\x02\x03\x04"
    from_plain = md5_response("admin", "1234", salt)
    from_hash = md5_response("admin", "md545f2603610af569b6155c45067268c6b", salt)
    assert from_plain == from_hash
    assert from_plain == "md5" + hashlib.md5(b"45f2603610af569b6155c45067268c6b" + salt).hexdigest()


def test_md5_verify() -> None:
    salt = b"abcd"
    good = md5_response("u", "pw", salt)
    assert md5_verify("u", "pw", salt, good)
    assert md5_verify("u", md5_hash("u", "pw"), salt, good)
    assert not md5_verify("u", "other", salt, good)
    assert not md5_verify("v", "pw", salt, good)  # the user name is part of the hash
    assert not md5_verify("u", str(make_scram_secret("pw", b"s" * 16)), salt, good)


def test_secret_kinds() -> None:
    assert is_md5_secret("md5" + "0" * 32)
    assert not is_md5_secret("md5" + "0" * 31)
    assert not is_md5_secret("md5password-that-is-long-enough-to-be-32")
    secret = str(make_scram_secret("pw", b"0123456789abcdef"))
    assert is_scram_secret(secret) and not is_scram_secret("pw")
    assert not is_scram_secret("SCRAM-SHA-256$4096:!!!$a:b")


def test_scram_secret_round_trip() -> None:
    made = make_scram_secret("pencil", b"0123456789abcdef", 4096)
    text = str(made)
    assert text.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert parse_scram_secret(text) == made


@pytest.mark.parametrize("kind", ["plain", "md5", "scram"])
def test_verify_cleartext(kind: str) -> None:
    secret = {"plain": "pw", "md5": md5_hash("u", "pw"),
              "scram": str(make_scram_secret("pw", b"x" * 16))}[kind]
    assert verify_cleartext("u", secret, "pw")
    assert not verify_cleartext("u", secret, "nope")
