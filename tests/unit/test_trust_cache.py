"""A chain that validated is remembered for its validity window; revocation is checked every time
(issue 12: the same agency certificates sign every envelope)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

import bus.dsig.trust as trust_module
from bus.dsig import TrustStore
from bus.dsig.crl import load_crl
from bus.dsig.revocation import CrlRegistry, CrlSource, RevocationPolicy
from bus.errors import CertificateError, CertificateRevokedError
from bus.pki import issue_certificate, make_ca
from tests.crlkit import der, make_crl


def _now() -> dt.datetime:
    """The time of the check: a test's own certificates start five minutes before they are made, so
    a time taken when the module was collected could precede them on a slow run."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every link signature the trust store checks, as (child, issuer)."""
    calls: list[tuple[str, str]] = []
    original = trust_module._issued_by

    def issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
        calls.append((child.subject.rfc4514_string(), issuer.subject.rfc4514_string()))
        return original(child, issuer)

    monkeypatch.setattr(trust_module, "_issued_by", issued_by)
    return calls


def test_a_chain_found_again_is_not_checked_again(counted: list[tuple[str, str]]) -> None:
    ca = make_ca("CA thử")
    sub = issue_certificate(ca, "CA cấp dưới", "000.00.90.H99", is_ca=True)
    signer = issue_certificate(sub, "Sở Nội vụ", "000.00.01.H99")
    store = TrustStore([ca.certificate])
    first = store.validate(signer.certificate, [sub.certificate], _now())
    assert first == (signer.certificate, sub.certificate, ca.certificate)
    checked = len(counted)
    assert checked >= 2  # both links' signatures were checked the first time
    for _ in range(50):
        assert store.validate(signer.certificate, [sub.certificate], _now()) == first
    assert len(counted) == checked  # ... and never again
    other = issue_certificate(sub, "Sở Tài chính", "000.00.02.H99")
    store.validate(other.certificate, [sub.certificate], _now())
    assert len(counted) > checked  # another certificate is another chain


def test_the_window_is_the_intersection_of_the_chains_validity(counted: list[tuple[str, str]]) -> None:
    ca = make_ca("CA thử")
    short = issue_certificate(ca, "Sở Nội vụ", "000.00.01.H99", days=2)
    store = TrustStore([ca.certificate])
    store.validate(short.certificate, [], _now())
    later = short.certificate.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateError, match="expired"):  # outside the window: checked again
        store.validate(short.certificate, [], later)
    with pytest.raises(CertificateError, match="not valid before"):
        store.validate(short.certificate, [], short.certificate.not_valid_before_utc - dt.timedelta(days=1))


def test_a_failed_chain_is_not_remembered() -> None:
    ca, rogue = make_ca("CA thử"), make_ca("CA giả")
    forged = issue_certificate(rogue, "Sở Nội vụ", "000.00.01.H99")
    store = TrustStore([ca.certificate])
    for _ in range(2):
        with pytest.raises(CertificateError, match="does not chain to a trusted CA"):
            store.validate(forged.certificate, [], _now())


def test_revocation_is_checked_on_every_use_of_a_remembered_chain() -> None:
    ca = make_ca("CA thử")
    signer = issue_certificate(ca, "Sở Nội vụ", "000.00.01.H99")
    source = CrlSource(ca.certificate, "memory")
    registry = CrlRegistry([source], RevocationPolicy.REFUSE)
    registry.install(
        source, load_crl(der(make_crl(ca, [])), ca.certificate, now=_now(), origin="memory"), _now()
    )
    store = TrustStore([ca.certificate], registry)
    store.validate(signer.certificate, [], _now())  # remembered, not revoked
    revoked_at = _now() - dt.timedelta(minutes=1)
    newer = make_crl(ca, [(signer.certificate, revoked_at, x509.ReasonFlags.key_compromise)], number=2)
    registry.install(source, load_crl(der(newer), ca.certificate, now=_now(), origin="memory"), _now())
    with pytest.raises(CertificateRevokedError, match="keyCompromise"):
        store.validate(signer.certificate, [], _now())
