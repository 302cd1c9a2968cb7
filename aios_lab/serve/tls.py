"""Transport security of an endpoint: HTTPS from a PEM certificate and key, and no plain HTTP off this machine.

``aios serve --tls-cert C --tls-key K`` serves HTTPS (the V2 port and the TF Serving port alike). Before the
server starts, :func:`check_transport` refuses, in one line each: only one of the two files, a file that is
missing or not PEM, a key that does not match its certificate, and an address other than loopback without
TLS unless ``--insecure`` is given (an endpoint started that way keeps a warning in ``aios endpoints``).

>>> check_transport(ServeSettings(host="0.0.0.0", tls_cert="cert.pem", tls_key="key.pem"))
>>> uvicorn_ssl(settings)        # {"ssl_certfile": ..., "ssl_keyfile": ...} for uvicorn.Config
>>> pinned_context("cert.pem")   # a client context that trusts exactly that certificate (local admin calls)
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from typing import Any

from ..errors import InvalidInput
from .settings import ServeSettings

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; any other name or address counts as reachable from outside."""
    host = host.strip("[]")
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(s: ServeSettings) -> None:
    """Refuse settings that would serve insecurely or cannot serve HTTPS at all (one line; nothing starts)."""
    if bool(s.tls_cert) != bool(s.tls_key):
        raise InvalidInput("HTTPS needs both --tls-cert CERT.pem and --tls-key KEY.pem; give both or neither")
    if s.tls_cert:
        check_pair(s.tls_cert, s.tls_key)
    elif not is_loopback(s.host) and not s.insecure:
        raise InvalidInput(
            f"serving on {s.host} without TLS would send tokens and data unencrypted: give --tls-cert and "
            "--tls-key, or --insecure to allow plain HTTP"
        )


def check_pair(cert: str, key: str) -> None:
    """The certificate and key load and belong together, or a one-line InvalidInput says which is wrong."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise InvalidInput(f"{flag} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=lambda: b"")  # an encrypted key fails here rather than prompting
    except ssl.SSLError as exc:
        why = f"{exc.reason or ''} {exc}".upper()
        if "KEY_VALUES_MISMATCH" in why:
            raise InvalidInput(
                f"the TLS key {key} does not match the certificate {cert}: give the key the certificate was made for"
            ) from None
        if "BAD_DECRYPT" in why or "BAD PASSWORD" in why or "PROCESSING_ERROR" in why:
            raise InvalidInput(f"the TLS key {key} is encrypted: give an unencrypted PEM key (mode 0600)") from None
        raise InvalidInput(
            f"cannot use {cert} and {key} for HTTPS ({exc.reason or exc}): give a PEM certificate and its PEM key"
        ) from None


def uvicorn_ssl(s: ServeSettings) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that make it serve HTTPS (none without TLS)."""
    return {"ssl_certfile": s.tls_cert, "ssl_keyfile": s.tls_key} if s.tls_cert else {}


def pinned_context(cert: str) -> ssl.SSLContext:
    """A client context that trusts exactly the certificate(s) in ``cert`` (no host name check): how this
    machine's own tools (``serve()``'s readiness probe, ``serve canary``) talk to an endpoint it started."""
    ctx = ssl.create_default_context(cafile=cert)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the server's own (non-CA) certificate as trust anchor
    ctx.check_hostname = False
    return ctx


def plain_http_warning(url: str, host: str) -> str | None:
    """The line ``aios endpoints`` keeps for an endpoint serving plain HTTP off loopback (``--insecure``)."""
    if url.startswith("http://") and not is_loopback(host):
        return f"plain HTTP on {host} (started with --insecure): tokens and data travel unencrypted; use --tls-cert"
    return None


__all__ = ["check_transport", "check_pair", "uvicorn_ssl", "pinned_context", "is_loopback", "plain_http_warning"]
