"""What a server login does with the server's one-byte answer to SSLRequest (proxy/tls.py)."""

from __future__ import annotations

import pytest

from pgmux.proxy import tls


@pytest.mark.parametrize(("data", "mode", "want"), [
    (b"N", "disable", tls.SSL_PLAIN),
    (b"N", "allow", tls.SSL_PLAIN),
    (b"N", "prefer", tls.SSL_PLAIN),
    (b"N", "require", "server refused SSL"),
    (b"N", "verify-ca", "server refused SSL"),
    (b"N", "verify-full", "server refused SSL"),
    (b"S", "prefer", tls.SSL_UPGRADE),
    (b"S", "verify-full", tls.SSL_UPGRADE),
    (b"SX", "require", "bad SSL response from server"),   # NOTE: bytes behind the 'S'
    (b"E", "prefer", "bad SSL response from server"),
    (b"", "prefer", "bad SSL response from server"),
])
def test_ssl_answer(data: bytes, mode: str, want: str) -> None:
    assert tls.ssl_answer(data, mode) == want
