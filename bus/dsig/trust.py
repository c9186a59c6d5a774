"""A store of trusted CA certificates and the chain check for a signer's certificate.

The chain is built from the signer's certificate through the intermediates in ``KeyInfo`` to a CA of
the store. Each link is checked with ``verify_directly_issued_by`` (issuer name and signature), each
issuer must be a CA (basicConstraints) allowed to sign certificates (keyUsage), every certificate
must be valid at the time of verification, and the signer's keyUsage, when present, must allow
digital signatures (or non-repudiation, as Vietnamese CAs issue for document signing).

With a :class:`~bus.dsig.revocation.CrlRegistry`, every link of the chain is checked once the chain is
built, from the trust anchor down (a revoked intermediate is reported before the certificates it issued):
against its issuer's CRL, or, when that issuer (anchor or intermediate) has none configured, as a
certificate whose status is unknown, which the registry's policy refuses or flags. The check is an
in-memory look-up: CRLs are fetched and refreshed elsewhere (:mod:`bus.dsig.crl_refresh`).

A chain that validated is remembered (issue 12: the same few agency certificates sign every
envelope, and checking their links' signatures again each time was most of verification's CPU): its
links are a function of the certificates alone, and its validity is the intersection of theirs, so a
chain found again is accepted without checking its signatures again while the time lies inside that
window. Revocation is checked on every use, never remembered: a CRL may list a certificate any time.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from bus.dsig.revocation import CrlRegistry
from bus.errors import CertificateError, ConfigError

__all__ = ["TrustStore", "describe"]

_MAX_DEPTH = 5
_REMEMBERED_CHAINS = 1024  # agencies' signing certificates, with room to spare: least recently used go


@dataclass(frozen=True, slots=True)
class _Validated:
    chain: tuple[x509.Certificate, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime


def describe(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def _check_time(certificate: x509.Certificate, at: dt.datetime) -> None:
    if at < certificate.not_valid_before_utc:
        raise CertificateError(
            f"certificate {describe(certificate)} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if at > certificate.not_valid_after_utc:
        raise CertificateError(
            f"certificate {describe(certificate)} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def _extension(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return certificate.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _check_issuer(issuer: x509.Certificate) -> None:
    constraints = _extension(issuer, ExtensionOID.BASIC_CONSTRAINTS)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        raise CertificateError(f"certificate {describe(issuer)} issued another but is not a CA")
    usage = _extension(issuer, ExtensionOID.KEY_USAGE)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        raise CertificateError(f"CA {describe(issuer)} may not sign certificates (keyUsage)")


def _check_signer(signer: x509.Certificate) -> None:
    usage = _extension(signer, ExtensionOID.KEY_USAGE)
    if isinstance(usage, x509.KeyUsage) and not (usage.digital_signature or usage.content_commitment):
        raise CertificateError(f"certificate {describe(signer)} may not make signatures (keyUsage)")


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class TrustStore:
    """Trusted CA certificates (trust anchors), and the CRLs to check chains against (optional)."""

    def __init__(self, anchors: Iterable[x509.Certificate], revocation: CrlRegistry | None = None) -> None:
        self.anchors: tuple[x509.Certificate, ...] = tuple(anchors)
        self.revocation = revocation
        self._validated: OrderedDict[tuple[bytes, ...], _Validated] = OrderedDict()
        if not self.anchors:
            raise ConfigError("the trust store holds no CA certificate")

    @classmethod
    def from_pem_files(cls, paths: Sequence[Path], revocation: CrlRegistry | None = None) -> TrustStore:
        anchors: list[x509.Certificate] = []
        for path in paths:
            try:
                anchors += x509.load_pem_x509_certificates(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read CA certificates from {path}: {exc}") from exc
        return cls(anchors, revocation)

    def _check_revocation(self, chain: Sequence[x509.Certificate], at: dt.datetime) -> None:
        if self.revocation is None:
            return
        for index in range(len(chain) - 2, -1, -1):
            self.revocation.check(chain[index], chain[index + 1], at, signer=chain[0])

    def validate(
        self, signer: x509.Certificate, intermediates: Sequence[x509.Certificate], at: dt.datetime
    ) -> tuple[x509.Certificate, ...]:
        """The chain ``(signer, ..., anchor)``, or :class:`CertificateError` saying which link fails
        (:class:`~bus.errors.CertificateRevokedError` for a revoked one)."""
        key = tuple(c.fingerprint(hashes.SHA256()) for c in (signer, *intermediates))
        known = self._validated.get(key)
        if known is None or not known.valid_from <= at <= known.valid_until:
            chain = self._build(signer, intermediates, at)
            known = _Validated(
                chain,
                max(c.not_valid_before_utc for c in chain),
                min(c.not_valid_after_utc for c in chain),
            )
            self._validated[key] = known
            if len(self._validated) > _REMEMBERED_CHAINS:
                self._validated.popitem(last=False)
        self._validated.move_to_end(key)
        self._check_revocation(known.chain, at)
        return known.chain

    def _build(
        self, signer: x509.Certificate, intermediates: Sequence[x509.Certificate], at: dt.datetime
    ) -> tuple[x509.Certificate, ...]:
        """The chain checked link by link (names, signatures, CA flags, key usage, validity at *at*)."""
        _check_signer(signer)
        chain = [signer]
        current = signer
        for _ in range(_MAX_DEPTH):
            _check_time(current, at)
            for anchor in self.anchors:
                if anchor.subject == current.issuer and _issued_by(current, anchor):
                    _check_issuer(anchor)
                    _check_time(anchor, at)
                    return (*chain, anchor)
            candidates = [c for c in intermediates if c.subject == current.issuer and c not in chain]
            issuer = next((c for c in candidates if _issued_by(current, c)), None)
            if issuer is None:
                raise CertificateError(
                    f"certificate {describe(current)} (issuer {current.issuer.rfc4514_string()}) "
                    "does not chain to a trusted CA"
                )
            _check_issuer(issuer)
            chain.append(issuer)
            current = issuer
        raise CertificateError(f"certificate chain of {describe(signer)} is longer than {_MAX_DEPTH}")
