"""Decides ``cert`` logins: the client certificate's names against the database user name."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pgmux.auth.ident import IdentFile, LocalDecision

# What PgBouncer answers a refused certificate login (the client sees a FATAL, 08P01).
CERT_FAILED = "certificate authentication failed"

PeerCert = Mapping[str, Any]  # the dict ssl.SSLSocket.getpeercert() returns


def cert_common_names(cert: PeerCert | None) -> list[str]:
    """The subject's commonName values, in order."""
    names: list[str] = []
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    return names


def cert_alt_names(cert: PeerCert | None) -> list[tuple[str, str]]:
    """subjectAltName entries of type DNS and IP Address, as (type, value)."""
    out: list[tuple[str, str]] = []
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind in ("DNS", "IP Address"):
            out.append((kind, str(value).strip()))
    return out


def cert_names(cert: PeerCert | None) -> list[str]:
    """Every name the certificate carries (DNS and IP alternative names, then common
    names): the candidates a ``/regex`` ident map line is searched in."""
    return [value for _, value in cert_alt_names(cert)] + cert_common_names(cert)


def cert_matches_name(cert: PeerCert | None, name: str) -> bool:
    """True when the certificate is issued to ``name``, as PgBouncer's TLS library checks
    it: an alternative name of the same kind (an IP literal against IP addresses, anything
    else against DNS names, case-insensitively, ``*.example.com`` wildcards allowed), else
    the subject's common name."""
    if not name:
        return False
    literal = _ip(name)
    for kind, value in cert_alt_names(cert):
        if literal is not None:
            if kind == "IP Address" and _ip(value) == literal:
                return True
        elif kind == "DNS" and _match_dns(value, name):
            return True
    for common in cert_common_names(cert):
        if "\x00" in common:
            return False  # NOTE: a NUL in the CN is a forged certificate, never a match
        if literal is not None:
            if common == name:
                return True
        elif _match_dns(common, name):
            return True
    return False


def check_cert(*, tls: bool, cert: PeerCert | None, db_user: str,
               map_name: str | None = None, ident: IdentFile | None = None,
               known_user: bool = True) -> LocalDecision:
    """PgBouncer's ``cert`` method. Without a map the certificate must be issued to the
    database user name; with ``map_name`` a line of that map must name the certificate
    (its system-username field checked as above) and the database user (or ``all``).
    An unknown database user (not in auth_file) is refused the same way."""
    if not tls:
        return LocalDecision(False, "TLS connection required", CERT_FAILED)
    if not cert:
        return LocalDecision(False, "TLS client certificate required", CERT_FAILED)
    if not known_user:
        return LocalDecision(False, None, CERT_FAILED)
    if map_name is None:
        if cert_matches_name(cert, db_user):
            return LocalDecision(True)
        return LocalDecision(False, "TLS certificate name mismatch", CERT_FAILED)
    names = cert_names(cert)
    for mapping in (ident.maps.get(map_name, ()) if ident is not None else ()):
        if mapping.regex is None:
            if not cert_matches_name(cert, mapping.system_user):
                continue
            if mapping.db_user is not None and mapping.db_user != db_user:
                continue
        elif not any(mapping.grants(n, db_user) for n in names):
            continue
        return LocalDecision(True, f"ident map: {map_name} {mapping.system_user} "
                                   f"{mapping.db_user or 'all'}")
    return LocalDecision(False, f"ident map: {map_name} does not have a match", CERT_FAILED)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _match_dns(cert_name: str, name: str) -> bool:
    """Case-insensitive equality, or a ``*.domain.tld`` wildcard standing for exactly one
    leading label (``*``, ``*foo``, ``*.tld`` and empty labels are refused)."""
    if cert_name.lower() == name.lower():
        return True
    if not cert_name.startswith("*."):
        return False
    domain = cert_name[1:]
    if domain.startswith("..") or "." not in domain[1:]:
        return False
    if ".." in domain[1:]:
        return False
    dot = name.find(".")
    if dot <= 0 or len(name) - dot == 1:
        return False
    return name[dot:].lower() == domain.lower()
