"""CRLs made to order and a real HTTP server on loopback that serves them (issue 10's tests)."""

from __future__ import annotations

import collections
import datetime as dt
import http.server
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from bus.dsig.keys import SigningKey
from bus.pki import Issued

__all__ = ["CrlServer", "closed_port_url", "der", "make_crl", "serve_crls"]

Revocation = tuple[x509.Certificate, dt.datetime, x509.ReasonFlags | None]


def make_crl(
    ca: Issued,
    revoked: Sequence[Revocation] = (),
    *,
    this_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    number: int = 1,
    key: SigningKey | None = None,
    issuer: x509.Name | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
    delta_of: int | None = None,
    scope: x509.IssuingDistributionPoint | None = None,
) -> x509.CertificateRevocationList:
    """A CRL of *ca* listing *revoked*; by default current for a day. *key*, *issuer*, *algorithm* and
    *delta_of* make broken ones (another key, another name, SHA-1, a delta CRL); *scope* limits it."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = this_update or now - dt.timedelta(hours=1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer or ca.certificate.subject)
        .last_update(start)
        .next_update(next_update or now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    if delta_of is not None:
        builder = builder.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
    if scope is not None:
        builder = builder.add_extension(scope, critical=True)
    for certificate, when, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder().serial_number(certificate.serial_number).revocation_date(when)
        )
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(key or ca.key, algorithm or hashes.SHA256())  # type: ignore[arg-type]  # SHA-1 on purpose


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


class CrlServer:
    """``content[path]`` is served at ``url(path)``; ``hits[path]`` counts the GETs."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                body = server.content.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def serve_crls() -> Iterator[CrlServer]:
    server = CrlServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ca.crl"
