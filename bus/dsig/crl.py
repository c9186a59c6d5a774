"""Reading and checking one CA's certificate revocation list (RFC 5280 §5, §6.3.3) (issue 10).

:func:`load_crl` turns the bytes of a CRL into a :class:`Crl` indexed by serial number, or raises
:class:`~bus.errors.CrlUnusableError` saying why it cannot be used: its issuer name is not the CA's
subject, its signature does not check with the CA's key (or uses MD5 or SHA-1), the CA may not sign
CRLs (keyUsage without ``cRLSign``), it has no ``nextUpdate``, its ``thisUpdate`` is in the future, it is
not a complete CRL (delta, indirect, or a partition: an issuingDistributionPoint naming a distribution
point or only some reasons), or it carries a critical extension we do not understand. Whether it is
newer than the CRL already held is :class:`~bus.dsig.revocation.CrlRegistry`'s question.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from bus.errors import CrlUnusableError

__all__ = ["Crl", "RevokedEntry", "is_ca", "load_crl", "parse_crl"]

# A CA's clock may run a little ahead of ours; a CRL dated further in the future is refused.
_CLOCK_SKEW = dt.timedelta(minutes=5)
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime
    reason: str  # an RFC 5280 CRLReason name (keyCompromise, superseded…); "unspecified" when absent


@dataclass(frozen=True, slots=True)
class Crl:
    """A CRL that passed every check of :func:`load_crl`, indexed by serial number."""

    issuer: str
    this_update: dt.datetime
    next_update: dt.datetime
    number: int | None
    revoked: Mapping[int, RevokedEntry]
    only_ca_certs: bool = False
    only_user_certs: bool = False

    def covers(self, certificate: x509.Certificate) -> bool:
        """False when the CRL's issuingDistributionPoint leaves this kind of certificate out."""
        authority = is_ca(certificate)
        return not (self.only_ca_certs and not authority) and not (self.only_user_certs and authority)

    def older_than(self, other: Crl) -> bool:
        if self.number is not None and other.number is not None and self.number != other.number:
            return self.number < other.number
        return self.this_update < other.this_update


def parse_crl(data: bytes, origin: str) -> x509.CertificateRevocationList:
    """A CRL in DER or PEM; :class:`CrlUnusableError` naming *origin* when it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlUnusableError(
            f"CRL from {origin} cannot be read (not a DER or PEM X.509 CRL): {exc}"
        ) from exc


def _checked_extensions(crl: x509.CertificateRevocationList, origin: str) -> tuple[int | None, bool, bool]:
    """(CRL number, only CA certificates, only end-entity certificates), or CrlUnusableError."""
    number, only_ca, only_user = None, False, False
    for extension in crl.extensions:
        value = extension.value
        if isinstance(value, x509.CRLNumber):
            number = value.crl_number
        elif isinstance(value, x509.DeltaCRLIndicator):
            raise CrlUnusableError(f"CRL from {origin} is a delta CRL: configure the CA's complete CRL")
        elif isinstance(value, x509.IssuingDistributionPoint):
            if value.indirect_crl or value.only_contains_attribute_certs:
                raise CrlUnusableError(
                    f"CRL from {origin} is indirect or for attribute certificates "
                    "(issuingDistributionPoint): configure the CA's complete CRL"
                )
            partition = _partition(value)
            if partition:
                # Sources are configured per CA, not read from certificates' cRLDistributionPoints: the bus
                # cannot tell which certificates such a CRL covers, and must not take it for the whole.
                raise CrlUnusableError(
                    f"CRL from {origin} covers only one partition of the CA's certificates "
                    f"(issuingDistributionPoint {partition}): configure the CA's complete CRL"
                )
            only_ca, only_user = value.only_contains_ca_certs, value.only_contains_user_certs
        elif extension.critical:
            raise CrlUnusableError(
                f"CRL from {origin} has an unknown critical extension {extension.oid.dotted_string}"
            )
    return number, only_ca, only_user


def _partition(scope: x509.IssuingDistributionPoint) -> str:
    """What of *scope* limits the CRL to a part of the CA's certificates ("" for none)."""
    parts = []
    if scope.full_name is not None:
        names = ", ".join(
            name.value.rfc4514_string() if isinstance(name, x509.DirectoryName) else str(name.value)
            for name in scope.full_name
        )
        parts.append(f"distributionPoint {names}")
    if scope.relative_name is not None:
        parts.append(f"distributionPoint {scope.relative_name.rfc4514_string()} (relative to the issuer)")
    if scope.only_some_reasons is not None:
        reasons = ", ".join(sorted(reason.value for reason in scope.only_some_reasons))
        parts.append(f"onlySomeReasons {reasons}")
    return "; ".join(parts)


def _entries(crl: x509.CertificateRevocationList, origin: str) -> dict[int, RevokedEntry]:
    revoked: dict[int, RevokedEntry] = {}
    for entry in crl:
        reason = "unspecified"
        for extension in entry.extensions:
            if isinstance(extension.value, x509.CRLReason):
                reason = extension.value.reason.value
            elif extension.critical and not isinstance(extension.value, x509.InvalidityDate):
                # certificateIssuer (indirect CRLs) or something we do not know: the entry's scope is unclear.
                raise CrlUnusableError(
                    f"CRL from {origin}: entry {entry.serial_number:#x} has a critical extension "
                    f"{extension.oid.dotted_string} this bus does not support"
                )
        if reason == x509.ReasonFlags.remove_from_crl.value:
            continue  # only meaningful in delta CRLs (RFC 5280 §5.3.1), which are refused above
        revoked[entry.serial_number] = RevokedEntry(entry.serial_number, entry.revocation_date_utc, reason)
    return revoked


def load_crl(data: bytes, ca: x509.Certificate, *, now: dt.datetime, origin: str) -> Crl:
    """Parse and check the CRL of *ca*; :class:`CrlUnusableError` says why it cannot be used.

    CPU-bound for a large CRL (signature, every entry): the refresher runs it in a worker thread.
    """
    crl = parse_crl(data, origin)
    name = ca.subject.rfc4514_string()
    if crl.issuer != ca.subject:
        raise CrlUnusableError(
            f"CRL from {origin} is issued by {crl.issuer.rfc4514_string()}, not by {name}: "
            "check which CA this CRL source belongs to"
        )
    try:
        usage = ca.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        usage = None
    if isinstance(usage, x509.KeyUsage) and not usage.crl_sign:
        raise CrlUnusableError(f"CA {name} may not sign CRLs (keyUsage without cRLSign)")
    if isinstance(crl.signature_hash_algorithm, _WEAK_HASHES):
        raise CrlUnusableError(
            f"CRL from {origin} is signed with {crl.signature_hash_algorithm.name}, which is broken: "
            "ask the CA for a SHA-256 CRL"
        )
    try:
        valid = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise CrlUnusableError(
            f"CRL from {origin} is not signed by {name}'s key: refused as forged or corrupt"
        )
    if crl.next_update_utc is None:
        raise CrlUnusableError(f"CRL from {origin} has no nextUpdate: its freshness cannot be judged")
    if crl.last_update_utc > now + _CLOCK_SKEW:
        raise CrlUnusableError(
            f"CRL from {origin} has thisUpdate {crl.last_update_utc:%Y-%m-%d %H:%M} UTC, in the future: "
            "check this machine's clock and the CA's"
        )
    number, only_ca, only_user = _checked_extensions(crl, origin)
    return Crl(
        issuer=name,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        number=number,
        revoked=_entries(crl, origin),
        only_ca_certs=only_ca,
        only_user_certs=only_user,
    )
