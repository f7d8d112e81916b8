"""TLS on both sides with PgBouncer's setting names; tests make their own certificates."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import trustme

from tests.integration.conftest import PgmuxFactory


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    cert.private_key_pem.write_to_path(str(key))
    os.chmod(key, 0o600)
    return crt, key


def test_client_tls_required(ca: trustme.CA, tmp_path: Path,
                             pgmux_factory: PgmuxFactory) -> None:
    crt, key = write_pair(ca, tmp_path, "pgmux")
    px = pgmux_factory({"client_tls_sslmode": "require", "client_tls_cert_file": crt,
                        "client_tls_key_file": key})
    with psycopg.connect(px.dsn(sslmode="require"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with psycopg.connect(px.dsn(sslmode="verify-full", sslrootcert=str(ca_file)),
                         autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(px.dsn(sslmode="disable"))


def test_client_tls_prefer_allows_both(ca: trustme.CA, tmp_path: Path,
                                       pgmux_factory: PgmuxFactory) -> None:
    crt, key = write_pair(ca, tmp_path, "pgmux")
    px = pgmux_factory({"client_tls_sslmode": "prefer", "client_tls_cert_file": crt,
                        "client_tls_key_file": key})
    with psycopg.connect(px.dsn(sslmode="prefer"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
    with psycopg.connect(px.dsn(sslmode="disable"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 2").fetchone() == (2,)


def test_server_tls(ca: trustme.CA, tmp_path: Path, pgmux_factory: PgmuxFactory) -> None:
    # NOTE: the embedded PostgreSQL is built without SSL, so the TLS peer is a second pgmux
    # that requires client TLS: it refuses any login that is not encrypted.
    crt, key = write_pair(ca, tmp_path, "back")
    back = pgmux_factory({"client_tls_sslmode": "require", "client_tls_cert_file": crt,
                          "client_tls_key_file": key, "log_connections": 1})
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    db = {"postgres": f"host=127.0.0.1 port={back.port} dbname=postgres"}
    for mode in ("require", "verify-ca", "verify-full"):
        front = pgmux_factory({"server_tls_sslmode": mode, "server_tls_ca_file": ca_file},
                              databases=db)
        with psycopg.connect(front.dsn(), autocommit=True) as conn:
            assert conn.execute("select 7").fetchone() == (7,)
    assert "tls=yes" in back.logs()
    # Without TLS towards it, the back pooler refuses the login.
    plain = pgmux_factory({"server_tls_sslmode": "disable"}, databases=db)
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(plain.dsn())
    # verify-ca against a CA that did not sign the certificate fails the login.
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    wrong = pgmux_factory({"server_tls_sslmode": "verify-ca", "server_tls_ca_file": other},
                          databases=db)
    with pytest.raises(psycopg.OperationalError, match="TLS handshake failed"):
        psycopg.connect(wrong.dsn())


def test_server_tls_required_but_refused(pgmux_factory: PgmuxFactory) -> None:
    # The shared server has ssl off: require must fail the login with a clear error.
    px = pgmux_factory({"server_tls_sslmode": "require"})
    with pytest.raises(psycopg.OperationalError, match="server refused SSL"):
        psycopg.connect(px.dsn())
