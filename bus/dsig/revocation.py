"""Certificate revocation: CRLs of trusted CAs, checked in memory while a chain is validated (issue 10).

A :class:`CrlRegistry` holds, for each CA that has a CRL configured, the last CRL that passed every check
of :func:`load_crl`. :meth:`CrlRegistry.check` is a dictionary look-up, called by
:meth:`bus.dsig.trust.TrustStore.validate` for each link of a chain; it never does I/O. Fetching and
refreshing is :class:`bus.dsig.crl_refresh.CrlRefresher`'s job (in the background, on ``nextUpdate``).

A CRL is used only once :func:`bus.dsig.crl.load_crl` found it sound (issuer, signature, scope,
dates), and only if it is not older than the one already held: a replayed old CRL would hide newer
revocations. A CRL applies to the CA it is configured for, matched on name *and* key.

Once a registry exists every link of a chain must be checkable: a certificate whose issuer (a trust
anchor or an intermediate from ``KeyInfo``) has no CRL configured has an unknown status, as much as one
whose CA's CRL is stale, never loaded, or does not cover that kind of certificate. The deployment's
:class:`RevocationPolicy` then decides: ``refuse`` (default) raises
:class:`~bus.errors.RevocationUnknownError`; ``accept-and-flag`` accepts, counts it in
``CrlRegistry.unchecked`` and reports an :class:`UncheckedRevocation` (a warning log line by default).
A certificate listed on a CRL is refused whatever the policy, even when that CRL is stale. Without a
registry (no ``[revocation]`` CRL at all) nothing is checked.
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bus.dsig.crl import Crl, RevokedEntry, is_ca, load_crl, parse_crl
from bus.errors import CertificateRevokedError, ConfigError, CrlUnusableError, RevocationUnknownError

__all__ = [
    "Crl",
    "CrlRegistry",
    "CrlSource",
    "CrlStatus",
    "RevocationPolicy",
    "RevokedEntry",
    "UncheckedRevocation",
    "load_crl",
    "parse_crl",
    "registry_from_files",
]

log = structlog.get_logger("bus.dsig.revocation")


class RevocationPolicy(enum.StrEnum):
    """What to do with a certificate whose CA's CRL is stale, unreachable or unusable."""

    REFUSE = "refuse"
    ACCEPT_AND_FLAG = "accept-and-flag"


def _describe(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def _ca_key(certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """A CA is its name *and* its key: a CRL configured for one CA never applies to a namesake."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return certificate.subject.public_bytes(), spki


@dataclass(frozen=True, slots=True)
class CrlSource:
    """Where the CRL of one CA comes from: a file path or an ``http(s)://`` URL."""

    ca: x509.Certificate
    location: str

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    @property
    def ca_name(self) -> str:
        return _describe(self.ca)


@dataclass(frozen=True, slots=True)
class UncheckedRevocation:
    """A certificate accepted under ``accept-and-flag`` without a revocation check, and why."""

    signer: str  # the envelope's signer (subject of the chain's first certificate)
    certificate: str  # the certificate whose status is unknown: the signer or an intermediate
    serial: int
    ca: str
    kind: str  # "stale", "unavailable", "not-covered" or "no-crl" (the issuer has no CRL configured)
    reason: str

    def __str__(self) -> str:
        return (
            f"accepted signature of {self.signer} without a revocation check of {self.certificate} "
            f"(serial {self.serial:#x}): {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class CrlStatus:
    """What the registry knows of one CA's CRL (a snapshot)."""

    crl: Crl | None  # the CRL held, possibly stale
    loaded_at: dt.datetime | None  # last successful download (the CRL may have been unchanged)
    attempted_at: dt.datetime | None
    error: str | None  # why the last attempt failed, or why what it got is not fresh
    failures: int  # failed attempts since start-up


@dataclass(slots=True)
class _Slot:
    source: CrlSource
    crl: Crl | None = None
    loaded_at: dt.datetime | None = None
    attempted_at: dt.datetime | None = None
    error: str | None = None
    failures: int = 0


def _log_unchecked(notice: UncheckedRevocation) -> None:
    log.warning(
        "signature.revocation_unchecked",
        signer=notice.signer,
        certificate=notice.certificate,
        serial=f"{notice.serial:#x}",
        ca=notice.ca,
        kind=notice.kind,
        reason=notice.reason,
        policy=RevocationPolicy.ACCEPT_AND_FLAG.value,
    )


class CrlRegistry:
    """The CRLs of the CAs that have one configured, and the check made on each link of a chain."""

    def __init__(
        self,
        sources: Iterable[CrlSource],
        policy: RevocationPolicy = RevocationPolicy.REFUSE,
        *,
        on_unchecked: Callable[[UncheckedRevocation], None] = _log_unchecked,
        how_to_add: str = "add a [[revocation.crls]] entry for it (its certificate as ca, its CRL as crl)",
    ) -> None:
        self.policy = policy
        self._on_unchecked = on_unchecked
        self._how_to_add = how_to_add  # the remedy named when a chain passes a CA without a CRL
        self._slots: dict[tuple[bytes, bytes], _Slot] = {}
        for source in sources:
            key = _ca_key(source.ca)
            if key in self._slots:
                raise ConfigError(
                    f"two CRL sources for CA {source.ca_name} ({self._slots[key].source.location} and "
                    f"{source.location}): list each CA once"
                )
            self._slots[key] = _Slot(source)
        # Prometheus-friendly counts since start-up, keyed by CA (and kind for the unchecked ones).
        self.unchecked: collections.Counter[tuple[str, str]] = collections.Counter()
        self.refused_revoked: collections.Counter[str] = collections.Counter()
        self.refused_unknown: collections.Counter[str] = collections.Counter()

    @property
    def sources(self) -> tuple[CrlSource, ...]:
        return tuple(slot.source for slot in self._slots.values())

    def covers(self, ca: x509.Certificate) -> bool:
        return _ca_key(ca) in self._slots

    def status(self, source: CrlSource) -> CrlStatus:
        slot = self._slot(source)
        return CrlStatus(slot.crl, slot.loaded_at, slot.attempted_at, slot.error, slot.failures)

    def _slot(self, source: CrlSource) -> _Slot:
        slot = self._slots.get(_ca_key(source.ca))
        if slot is None or slot.source != source:
            raise KeyError(f"no CRL source {source.location} for CA {source.ca_name} in this registry")
        return slot

    def install(self, source: CrlSource, crl: Crl, at: dt.datetime) -> bool:
        """Hold *crl* (checked by :func:`load_crl`) for *source*'s CA; True when it replaced another.

        A CRL older than the one held is refused (:class:`CrlUnusableError`): replaying an old CRL is how
        a man in the middle of a plain-HTTP CRL download would hide a revocation.
        """
        slot = self._slot(source)
        if slot.crl is not None and crl.older_than(slot.crl):
            raise CrlUnusableError(
                f"CRL from {source.location} (thisUpdate {crl.this_update:%Y-%m-%d %H:%M} UTC, number "
                f"{crl.number}) is older than the one held (thisUpdate {slot.crl.this_update:%Y-%m-%d %H:%M} "
                f"UTC, number {slot.crl.number}): refused as a replay"
            )
        held = slot.crl
        changed = held is None or (held.this_update, held.number) != (crl.this_update, crl.number)
        slot.crl, slot.loaded_at, slot.attempted_at = crl, at, at
        slot.error = None
        if at > crl.next_update:
            slot.error = (
                f"the CA still publishes a CRL whose nextUpdate ({crl.next_update:%Y-%m-%d %H:%M} UTC) "
                "has passed"
            )
        return changed

    def failed(self, source: CrlSource, reason: str, at: dt.datetime) -> None:
        """Record a failed download or an unusable CRL; the CRL held so far (if any) stays."""
        slot = self._slot(source)
        slot.attempted_at, slot.error = at, reason
        slot.failures += 1

    def check(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        at: dt.datetime,
        *,
        signer: x509.Certificate | None = None,
    ) -> None:
        """Raise if *certificate* (issued by *issuer*) is revoked, or if its status is unknown and the
        policy is ``refuse``. An *issuer* with no CRL configured leaves the status unknown (``no-crl``):
        the policy decides, as for a stale CRL. Pure, in memory."""
        slot = self._slots.get(_ca_key(issuer))
        if slot is None:
            ca = _describe(issuer)
            reason = f"no CRL is configured for {ca}, which issued it"
            self._unknown(certificate, signer or certificate, ca, "no-crl", reason, remedy=self._how_to_add)
            return
        source, crl = slot.source, slot.crl
        if crl is not None and crl.covers(certificate):
            entry = crl.revoked.get(certificate.serial_number)
            if entry is not None:  # listed: refused whatever the policy, even from a stale CRL
                self.refused_revoked[source.ca_name] += 1
                raise CertificateRevokedError(
                    f"certificate {_describe(certificate)} (serial {entry.serial:#x}) was revoked on "
                    f"{entry.revoked_at:%Y-%m-%d %H:%M} UTC ({entry.reason}) by {source.ca_name}",
                    serial=entry.serial,
                    revoked_at=entry.revoked_at,
                    reason=entry.reason,
                    issuer=source.ca_name,
                )
            if at <= crl.next_update:
                return
            kind = "stale"
            reason = (
                f"the CRL of {source.ca_name} is stale: its nextUpdate was {crl.next_update:%Y-%m-%d %H:%M} "
                f"UTC and no newer one could be loaded from {source.location}"
                + (f" (last attempt: {slot.error})" if slot.error else "")
            )
        elif crl is not None:
            kind = "not-covered"
            reason = (
                f"the CRL of {source.ca_name} from {source.location} leaves "
                f"{'CA' if is_ca(certificate) else 'end-entity'} certificates out (issuingDistributionPoint)"
            )
        else:
            kind = "unavailable"
            reason = (
                f"no usable CRL of {source.ca_name} from {source.location}: {slot.error or 'not loaded yet'}"
            )
        self._unknown(certificate, signer or certificate, source.ca_name, kind, reason)

    def _unknown(
        self,
        certificate: x509.Certificate,
        signer: x509.Certificate,
        ca: str,
        kind: str,
        reason: str,
        *,
        remedy: str = "make the CRL reachable",
    ) -> None:
        if self.policy is RevocationPolicy.REFUSE:
            self.refused_unknown[ca] += 1
            raise RevocationUnknownError(
                f"revocation of certificate {_describe(certificate)} (serial {certificate.serial_number:#x}) "
                f"cannot be checked: {reason}; refused by policy (revocation.on_unavailable = 'refuse'): "
                f"{remedy}, or set 'accept-and-flag' to accept such signatures with a warning"
            )
        self.unchecked[ca, kind] += 1
        self._on_unchecked(
            UncheckedRevocation(
                _describe(signer),
                _describe(certificate),
                certificate.serial_number,
                ca,
                kind,
                reason,
            )
        )


def registry_from_files(
    paths: Sequence[Path],
    anchors: Sequence[x509.Certificate],
    policy: RevocationPolicy,
    *,
    now: dt.datetime,
    on_unchecked: Callable[[UncheckedRevocation], None] = _log_unchecked,
) -> CrlRegistry:
    """CRL files (``bus verify --crl``), each matched to the CA of *anchors* that issued it, loaded now."""
    loaded: list[tuple[CrlSource, bytes]] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the CRL: {exc.strerror}") from exc
        issuer = parse_crl(data, str(path)).issuer
        named = [ca for ca in anchors if ca.subject == issuer]
        if not named:
            raise ConfigError(
                f"CRL {path} is issued by {issuer.rfc4514_string()}, which is none of the trusted CAs (--ca)"
            )
        # Namesakes: the CA whose key signed the CRL; load_crl below refuses it if none did.
        signed = [ca for ca in named if _signs(ca, data)]
        loaded.append((CrlSource((signed or named)[0], str(path)), data))
    registry = CrlRegistry(
        [source for source, _ in loaded],
        policy,
        on_unchecked=on_unchecked,
        how_to_add="give its CRL with --crl (its certificate must be one of the --ca)",
    )
    for source, data in loaded:
        registry.install(source, load_crl(data, source.ca, now=now, origin=source.location), now)
    return registry


def _signs(ca: x509.Certificate, data: bytes) -> bool:
    try:
        return parse_crl(data, "").is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, CrlUnusableError):
        return False
