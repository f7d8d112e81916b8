"""TLS contexts from PgBouncer's client_tls_* and server_tls_* settings."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

log = logging.getLogger("pgmux")

# sslmode values that refuse a plain-text peer.
REQUIRED = frozenset(("require", "verify-ca", "verify-full"))

# What a server's one-byte answer to SSLRequest tells a server login to do (else: an error).
SSL_PLAIN = "plain"      # go on unencrypted: send the startup packet
SSL_UPGRADE = "upgrade"  # start the TLS handshake
HANDSHAKE_TIMEOUT = 15.0


def ssl_answer(data: bytes, sslmode: str) -> str:
    """SSL_PLAIN, SSL_UPGRADE, or the login's error text for a server's SSLRequest answer."""
    if data[:1] == b"N":
        return "server refused SSL" if sslmode in REQUIRED else SSL_PLAIN
    if data[:1] != b"S" or len(data) > 1:
        return "bad SSL response from server"
    return SSL_UPGRADE


async def upgrade_server(transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol,
                         context: ssl.SSLContext, hostname: str | None
                         ) -> tuple[asyncio.Transport | None, str]:
    """TLS over a server connection that answered 'S': (the new transport, "") or (None, the
    login's error text)."""
    loop = asyncio.get_running_loop()
    try:
        new = await loop.start_tls(transport, protocol, context,  # type: ignore[arg-type]
                                   server_hostname=hostname,
                                   ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
        return None, f"server TLS handshake failed: {exc}"
    return new, ""


def _protocols(ctx: ssl.SSLContext, spec: str) -> None:
    """PgBouncer's tls_protocols: 'secure' (TLS 1.2+), 'all', or a list like 'tlsv1.2,tlsv1.3'."""
    spec = (spec or "secure").lower().replace(" ", "")
    if spec in ("secure", "default"):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return
    if spec in ("all", "legacy"):
        return
    versions = {"tlsv1.0": ssl.TLSVersion.TLSv1, "tlsv1.1": ssl.TLSVersion.TLSv1_1,
                "tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}
    chosen = [versions[p] for p in spec.split(",") if p in versions]
    if chosen:
        ctx.minimum_version = min(chosen)
        ctx.maximum_version = max(chosen)


def _ciphers(ctx: ssl.SSLContext, spec: str) -> None:
    if spec and spec.lower() not in ("default", "normal", "secure", "fast"):
        ctx.set_ciphers(spec)


def _tls13_ciphers(name: str, spec: str) -> None:
    """client_tls13_ciphers / server_tls13_ciphers: Python's ssl module has no call for the
    TLS 1.3 cipher suites (OpenSSL's SSL_CTX_set_ciphersuites), so a value is said, not
    silently dropped (a named difference, docs/operations.md)."""
    if spec and spec.strip().lower() not in ("default", ""):
        log.warning("%s = %s is not applied: pgmux cannot choose TLS 1.3 cipher suites "
                    "(Python's ssl module); OpenSSL's defaults are used. Set Ciphersuites "
                    "in an OpenSSL configuration file (OPENSSL_CONF) to change them, or "
                    "exclude TLS 1.3 with %s_protocols", name, spec, name.split("_")[0]
                    + "_tls")


def client_context(settings: Any) -> ssl.SSLContext | None:
    """The context pgmux serves TLS to clients with, or None when client TLS is off."""
    mode = settings.client_tls_sslmode
    if mode == "disable" or not settings.client_tls_cert_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(settings.client_tls_cert_file, settings.client_tls_key_file or None)
    _protocols(ctx, settings.client_tls_protocols)
    _ciphers(ctx, settings.client_tls_ciphers)
    _tls13_ciphers("client_tls13_ciphers", settings.client_tls13_ciphers)
    if mode in ("verify-ca", "verify-full"):
        # NOTE: for clients, verify-* means a client certificate signed by client_tls_ca_file.
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(settings.client_tls_ca_file)
    elif settings.client_tls_ca_file:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(settings.client_tls_ca_file)
    return ctx


# The settings a server connection's TLS is made from: a RELOAD that changes one of them
# reconnects every server (proxy/control.py).
SERVER_SETTINGS = ("server_tls_sslmode", "server_tls_ca_file", "server_tls_cert_file",
                   "server_tls_key_file", "server_tls_protocols", "server_tls_ciphers",
                   "server_tls13_ciphers")


def server_settings(settings: Any) -> tuple[Any, ...]:
    return tuple(getattr(settings, name) for name in SERVER_SETTINGS)


def server_context(settings: Any) -> ssl.SSLContext | None:
    """The context pgmux uses towards PostgreSQL, or None when server TLS is off."""
    mode = settings.server_tls_sslmode
    if mode == "disable":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _protocols(ctx, settings.server_tls_protocols)
    _ciphers(ctx, settings.server_tls_ciphers)
    _tls13_ciphers("server_tls13_ciphers", settings.server_tls13_ciphers)
    if mode in ("verify-ca", "verify-full"):
        ctx.check_hostname = mode == "verify-full"
        ctx.verify_mode = ssl.CERT_REQUIRED
        if settings.server_tls_ca_file:
            ctx.load_verify_locations(settings.server_tls_ca_file)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.server_tls_cert_file:
        ctx.load_cert_chain(settings.server_tls_cert_file, settings.server_tls_key_file or None)
    return ctx
