"""The ``cert`` method: certificate names (from ssl's getpeercert()) against user names."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import trustme

from pgmux.auth import CERT_FAILED, cert_common_names, cert_matches_name, check_cert, parse_ident
from pgmux.auth.cert import cert_names


def peercert(cn: str | None = None, *alt: tuple[str, str]) -> dict[str, Any]:
    """A dict shaped like ssl.SSLSocket.getpeercert()'s."""
    cert: dict[str, Any] = {"subject": ((("countryName", "NL"),),)}
    if cn is not None:
        cert["subject"] += ((("commonName", cn),),)
    if alt:
        cert["subjectAltName"] = alt
    return cert


def real_peercert(*identities: str, common_name: str | None = None) -> dict[str, Any]:
    """getpeercert() of a real client certificate, from a TLS handshake in memory."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("pgmux.test")
    client_cert = ca.issue_cert(*identities, common_name=common_name)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_cert.configure_cert(client_ctx)
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="pgmux.test")
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
    got = server.getpeercert()
    assert isinstance(got, dict) and got
    return got


def test_real_certificate_names() -> None:
    cert = real_peercert("alice", "10.0.0.7", common_name="Alice CN")
    assert cert_common_names(cert) == ["Alice CN"]
    assert cert_names(cert) == ["alice", "10.0.0.7", "Alice CN"]
    assert cert_matches_name(cert, "alice")
    assert cert_matches_name(cert, "Alice CN")
    assert cert_matches_name(cert, "10.0.0.7")
    assert not cert_matches_name(cert, "bob")
    assert check_cert(tls=True, cert=cert, db_user="alice").ok


@pytest.mark.parametrize(("cert", "name", "ok"), [
    (peercert("alice"), "alice", True),
    (peercert("alice"), "ALICE", True),  # the TLS library compares names case-insensitively
    (peercert("alice"), "alic", False),
    (peercert("alice"), "", False),
    (peercert(None, ("DNS", "alice")), "alice", True),
    (peercert("bob", ("DNS", "alice")), "bob", True),  # the common name still counts
    (peercert(None, ("email", "alice")), "alice", False),  # only DNS and IP names count
    (peercert(None, ("DNS", "*.example.com")), "app.example.com", True),
    (peercert(None, ("DNS", "*.example.com")), "a.b.example.com", False),
    (peercert(None, ("DNS", "*.example.com")), "example.com", False),
    (peercert(None, ("DNS", "*.com")), "example.com", False),
    (peercert(None, ("DNS", "*example.com")), "aexample.com", False),
    (peercert(None, ("DNS", "*")), "x", False),
    (peercert(None, ("IP Address", "10.0.0.1")), "10.0.0.1", True),
    (peercert(None, ("IP Address", "2001:DB8:0:0:0:0:0:1\n")), "2001:db8::1", True),
    (peercert(None, ("DNS", "10.0.0.1")), "10.0.0.1", False),  # an IP is not a DNS name
    (peercert("10.0.0.1"), "10.0.0.1", True),
    (peercert("alice\x00.evil"), "alice\x00.evil", False),
    ({}, "alice", False),
])
def test_cert_matches_name(cert: dict[str, Any], name: str, ok: bool) -> None:
    assert cert_matches_name(cert, name) is ok


def test_check_cert_refusals_carry_pgbouncer_texts() -> None:
    cert = peercert("alice")
    assert check_cert(tls=True, cert=cert, db_user="alice").ok
    cases = [
        (check_cert(tls=False, cert=cert, db_user="alice"), "TLS connection required"),
        (check_cert(tls=True, cert={}, db_user="alice"), "TLS client certificate required"),
        (check_cert(tls=True, cert=None, db_user="alice"), "TLS client certificate required"),
        (check_cert(tls=True, cert=cert, db_user="bob"), "TLS certificate name mismatch"),
        (check_cert(tls=True, cert=cert, db_user="alice", known_user=False), None),
    ]
    for decision, log in cases:
        assert not decision.ok and decision.log == log
        assert decision.error == CERT_FAILED == "certificate authentication failed"


def test_check_cert_with_ident_map() -> None:
    ident = parse_ident(
        "certs  app.example.com   app_rw\n"
        "certs  ops.example.com   all\n"
        "certs  /^(.*)\\.people$   \\1\n")
    app = peercert("app.example.com")
    assert check_cert(tls=True, cert=app, db_user="app_rw", map_name="certs", ident=ident).ok
    refused = check_cert(tls=True, cert=app, db_user="alice", map_name="certs", ident=ident)
    assert not refused.ok and refused.log == "ident map: certs does not have a match"
    ops = peercert(None, ("DNS", "ops.example.com"))
    assert check_cert(tls=True, cert=ops, db_user="anyone", map_name="certs", ident=ident).ok
    person = peercert("ann.people")
    assert check_cert(tls=True, cert=person, db_user="ann", map_name="certs", ident=ident).ok
    assert not check_cert(tls=True, cert=person, db_user="bob", map_name="certs",
                          ident=ident).ok
    # with a map, the plain name rule no longer applies
    alice = peercert("alice")
    assert not check_cert(tls=True, cert=alice, db_user="alice", map_name="certs",
                          ident=ident).ok
    assert not check_cert(tls=True, cert=app, db_user="app_rw", map_name="other",
                          ident=ident).ok
