"""Builds and reads the few PostgreSQL v3 messages that authentication needs."""

from __future__ import annotations

import struct

# Authentication request codes (the int32 after 'R').
AUTH_OK = 0
AUTH_KERBEROS_V5 = 2
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SCM_CREDENTIALS = 6
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

AUTH_CODE_NAMES = {
    AUTH_OK: "ok",
    AUTH_KERBEROS_V5: "KerberosV5",
    AUTH_CLEARTEXT: "cleartext password",
    AUTH_MD5: "MD5 password",
    AUTH_SCM_CREDENTIALS: "SCM credentials",
    AUTH_GSS: "GSSAPI",
    AUTH_GSS_CONTINUE: "GSSAPI continue",
    AUTH_SSPI: "SSPI",
    AUTH_SASL: "SASL",
    AUTH_SASL_CONTINUE: "SASL continue",
    AUTH_SASL_FINAL: "SASL final",
}

SCRAM_SHA_256 = "SCRAM-SHA-256"


def message(type_byte: bytes, body: bytes) -> bytes:
    """A v3 message: one type byte, an int32 length counting itself, then the body."""
    return type_byte + struct.pack("!I", len(body) + 4) + body


def auth_request(code: int, data: bytes = b"") -> bytes:
    """An Authentication* ('R') message."""
    return message(b"R", struct.pack("!I", code) + data)


def password_message(data: bytes) -> bytes:
    """A 'p' message (PasswordMessage, SASLInitialResponse or SASLResponse)."""
    return message(b"p", data)


def cstring(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    """SASLInitialResponse: mechanism name, int32 length of the data, the data."""
    return password_message(cstring(mechanism) + struct.pack("!i", len(data)) + data)


def error_response(sqlstate: str, text: str, severity: str = "FATAL") -> bytes:
    """An ErrorResponse ('E') with severity, SQLSTATE and message fields."""
    fields = (
        b"S" + cstring(severity)
        + b"V" + cstring(severity)
        + b"C" + cstring(sqlstate)
        + b"M" + cstring(text)
        + b"\x00"
    )
    return message(b"E", fields)


def read_cstring(body: bytes, pos: int = 0) -> tuple[str, int]:
    """The NUL-terminated UTF-8 string at ``pos`` and the index after its NUL.

    Raises ValueError when there is no terminator or the bytes are not UTF-8.
    """
    end = body.find(b"\x00", pos)
    if end < 0:
        raise ValueError("string is not NUL-terminated")
    return body[pos:end].decode("utf-8"), end + 1


def read_sasl_initial_response(body: bytes) -> tuple[str, bytes]:
    """Split a SASLInitialResponse body into (mechanism, data). Raises ValueError."""
    mechanism, pos = read_cstring(body)
    if len(body) < pos + 4:
        raise ValueError("SASLInitialResponse is truncated")
    (length,) = struct.unpack_from("!i", body, pos)
    data = body[pos + 4 :]
    if length == -1:
        data = b""
    elif length != len(data):
        raise ValueError("SASLInitialResponse length does not match its data")
    return mechanism, data


def read_sasl_mechanisms(data: bytes) -> list[str]:
    """The mechanism list of AuthenticationSASL: cstrings ended by an empty one."""
    names: list[str] = []
    pos = 0
    while pos < len(data):
        name, pos = read_cstring(data, pos)
        if not name:
            break
        names.append(name)
    return names
