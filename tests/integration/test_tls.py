"""TLS on both sides with PgBouncer's setting names; tests make their own certificates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trustme

from tests.integration.adminutil import admin, rows, wait_for
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


def _server_tls(px: Any) -> list[str]:
    return [r["tls"] for r in rows(px, "SHOW SERVERS")]


def test_reload_with_new_server_tls_settings_reconnects_servers(
        ca: trustme.CA, tmp_path: Path, pgmux_factory: PgmuxFactory) -> None:
    # NOTE: as PgBouncer: servers made under the old server_tls_* settings are closed (idle
    # ones at once, a linked one when released) and new ones use the new settings.
    crt, key = write_pair(ca, tmp_path, "back")
    back = pgmux_factory({"client_tls_sslmode": "prefer", "client_tls_cert_file": crt,
                          "client_tls_key_file": key})
    db = {"postgres": f"host=127.0.0.1 port={back.port} dbname=postgres"}
    front = pgmux_factory({"server_tls_sslmode": "disable", "pool_mode": "transaction"},
                          databases=db)
    busy = psycopg.connect(front.dsn(), autocommit=True)
    other = psycopg.connect(front.dsn(), autocommit=True)
    try:
        busy.execute("begin")
        busy.execute("select 1")
        other.execute("select 1")  # NOTE: a second server: the first is held by `busy`
        wait_for(lambda: len(_server_tls(front)) == 2)
        assert _server_tls(front) == ["", ""]
        front.ini.write_text(front.ini.read_text().replace(
            "server_tls_sslmode = disable", "server_tls_sslmode = require"))
        with admin(front) as console:
            console.execute("RELOAD")
        # The idle server is gone at once; the one inside a transaction stays until COMMIT.
        wait_for(lambda: len(_server_tls(front)) == 1)
        (held,) = rows(front, "SHOW SERVERS")
        assert held["close_needed"] == 1 and held["tls"] == ""
        assert busy.execute("select 2").fetchone() == (2,)
        busy.execute("commit")
        wait_for(lambda: all(r["close_needed"] == 0 for r in rows(front, "SHOW SERVERS")))
        assert other.execute("select 3").fetchone() == (3,)
        assert _server_tls(front) and all(t.startswith("TLSv1") for t in _server_tls(front))
    finally:
        busy.close()
        other.close()
    assert "server TLS settings changed" in front.logs()


def test_tls13_ciphers_are_warned_about_not_silently_dropped(
        ca: trustme.CA, tmp_path: Path, pgmux_factory: PgmuxFactory) -> None:
    crt, key = write_pair(ca, tmp_path, "pgmux")
    px = pgmux_factory({"client_tls_sslmode": "prefer", "client_tls_cert_file": crt,
                        "client_tls_key_file": key,
                        "client_tls13_ciphers": "TLS_AES_128_GCM_SHA256"})
    with psycopg.connect(px.dsn(sslmode="require"), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    logs = px.logs()
    assert "WARNING client_tls13_ciphers = TLS_AES_128_GCM_SHA256 is not applied" in logs


def _client_pair(ca: trustme.CA, directory: Path, common_name: str) -> tuple[str, str]:
    """A client certificate issued to common_name, as psycopg's sslcert/sslkey want it."""
    cert = ca.issue_cert(f"{common_name}.example", common_name=common_name)
    crt, key = directory / f"client-{common_name}.crt", directory / f"client-{common_name}.key"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    cert.private_key_pem.write_to_path(str(key))
    os.chmod(key, 0o600)
    return str(crt), str(key)


@pytest.mark.parametrize("how", ["auth_type", "hba"])
def test_client_certificate_common_name_is_the_user(
        how: str, ca: trustme.CA, tmp_path: Path, pgmux_factory: PgmuxFactory) -> None:
    crt, key = write_pair(ca, tmp_path, "pgmux")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings: dict[str, Any] = {"client_tls_sslmode": "require", "client_tls_cert_file": crt,
                                "client_tls_key_file": key, "client_tls_ca_file": ca_file}
    if how == "auth_type":
        settings["auth_type"] = "cert"
    else:
        hba = tmp_path / "hba.conf"
        hba.write_text("hostssl all all 127.0.0.1/32 cert\n")
        settings.update(auth_type="hba", auth_hba_file=hba)
    # NOTE: as with trust, the user must be in auth_file (its secret unused by the login).
    px = pgmux_factory(settings, userlist={"postgres": "", "stats": ""})
    good_crt, good_key = _client_pair(ca, tmp_path, "postgres")
    with psycopg.connect(px.dsn(sslmode="require", sslcert=good_crt, sslkey=good_key),
                         autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    # A certificate issued to someone else, or none at all, is refused with PgBouncer's text.
    other_crt, other_key = _client_pair(ca, tmp_path, "stats")
    with pytest.raises(psycopg.OperationalError, match="certificate authentication failed"):
        psycopg.connect(px.dsn(sslmode="require", sslcert=other_crt, sslkey=other_key))
    with pytest.raises(psycopg.OperationalError, match="certificate authentication failed"):
        psycopg.connect(px.dsn(sslmode="require", sslcert=str(tmp_path / "none.crt")))
    # A certificate from a CA pgmux does not trust fails the handshake.
    stranger_dir = tmp_path / "stranger"
    stranger_dir.mkdir()
    stranger_crt, stranger_key = _client_pair(trustme.CA(), stranger_dir, "postgres")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(px.dsn(sslmode="require", sslcert=stranger_crt, sslkey=stranger_key))
