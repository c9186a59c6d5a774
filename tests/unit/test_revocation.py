"""Certificate revocation (issue 10): CRLs of our own test CA, served over loopback HTTP (or read from a
file), checked while a signature's chain is validated."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from prometheus_client import CollectorRegistry, generate_latest

from bus.dsig import TrustStore, sign_tree, verify_tree
from bus.dsig.crl_metrics import RevocationCollector
from bus.dsig.crl_refresh import CrlRefresher
from bus.dsig.revocation import CrlRegistry, CrlSource, RevocationPolicy, load_crl
from bus.errors import CertificateRevokedError, CrlUnusableError, RevocationUnknownError
from bus.pki import Issued, issue_certificate, make_ca
from bus.xmlparse import parse_untrusted
from tests.conftest import Pki
from tests.crlkit import CrlServer, closed_port_url, der, make_crl, serve_crls

KEY_COMPROMISE = x509.ReasonFlags.key_compromise
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
REVOKED_AT = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def server() -> Iterator[CrlServer]:
    with serve_crls() as running:
        yield running


def _signed(data: bytes, signer: Issued, *chain: x509.Certificate) -> etree._ElementTree:
    tree = parse_untrusted(data)
    sign_tree(tree, signer.key, signer.certificate, list(chain))
    return parse_untrusted(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))


@asynccontextmanager
async def _refreshed(registry: CrlRegistry, **options: float) -> AsyncIterator[CrlRefresher]:
    refresher = CrlRefresher(registry, **options)  # type: ignore[arg-type]
    await refresher.refresh_due()
    try:
        yield refresher
    finally:
        await refresher.stop()


def _registry(pki: Pki, location: str, policy: RevocationPolicy = RevocationPolicy.REFUSE) -> CrlRegistry:
    return CrlRegistry([CrlSource(pki.ca.certificate, location)], policy)


@pytest.mark.asyncio
async def test_revoked_signer_is_refused_with_date_reason_and_ca(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    server.content["/ca.crl"] = der(make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)]))
    registry = _registry(pki, server.url("/ca.crl"))
    async with _refreshed(registry):
        with pytest.raises(CertificateRevokedError) as refused:
            verify_tree(_signed(document_bytes, pki.rsa), TrustStore([pki.ca.certificate], registry))
    signer, ca = pki.rsa.certificate.subject.rfc4514_string(), pki.ca.certificate.subject.rfc4514_string()
    assert str(refused.value) == (
        f"certificate {signer} (serial {pki.rsa.certificate.serial_number:#x}) was revoked on "
        f"2026-11-20 08:00 UTC (keyCompromise) by {ca}"
    )
    assert (refused.value.revoked_at, refused.value.reason) == (REVOKED_AT, "keyCompromise")
    assert registry.refused_revoked[ca] == 1


@pytest.mark.asyncio
async def test_a_certificate_not_listed_is_accepted_and_the_crl_is_fetched_once(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    server.content["/ca.crl"] = der(make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)]))
    registry = _registry(pki, server.url("/ca.crl"))
    trust = TrustStore([pki.ca.certificate], registry)
    envelope = _signed(document_bytes, pki.ec)
    async with _refreshed(registry):
        for _ in range(20):
            [result] = verify_tree(envelope, trust)
            assert result.signer == pki.ec.certificate
    assert server.hits["/ca.crl"] == 1  # cached: verification never fetches


@pytest.mark.asyncio
async def test_a_listed_certificate_is_refused_even_from_a_stale_crl_under_accept_and_flag(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    crl = make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, None)], next_update=NOW + dt.timedelta(hours=1))
    server.content["/ca.crl"] = der(crl)
    registry = _registry(pki, server.url("/ca.crl"), RevocationPolicy.ACCEPT_AND_FLAG)
    async with _refreshed(registry):
        with pytest.raises(CertificateRevokedError, match=r"\(unspecified\)"):
            verify_tree(
                _signed(document_bytes, pki.rsa),
                TrustStore([pki.ca.certificate], registry),
                now=NOW + dt.timedelta(days=2),
            )


@pytest.mark.asyncio
async def test_stale_crl_is_refused_by_default_with_the_reason(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    server.content["/ca.crl"] = der(make_crl(pki.ca, next_update=NOW + dt.timedelta(hours=1)))
    registry = _registry(pki, server.url("/ca.crl"))
    later = NOW + dt.timedelta(hours=2)  # past nextUpdate, and nothing newer was loaded
    async with _refreshed(registry):
        verify_tree(
            _signed(document_bytes, pki.ec), TrustStore([pki.ca.certificate], registry)
        )  # fresh: fine
        with pytest.raises(
            RevocationUnknownError, match=r"is stale: its nextUpdate was .* refused by policy"
        ):
            verify_tree(
                _signed(document_bytes, pki.ec), TrustStore([pki.ca.certificate], registry), now=later
            )


@pytest.mark.asyncio
async def test_stale_crl_under_accept_and_flag_is_accepted_logged_and_counted(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    server.content["/ca.crl"] = der(make_crl(pki.ca, next_update=NOW + dt.timedelta(hours=1)))
    registry = _registry(pki, server.url("/ca.crl"), RevocationPolicy.ACCEPT_AND_FLAG)
    ca = pki.ca.certificate.subject.rfc4514_string()
    async with _refreshed(registry):
        with structlog.testing.capture_logs() as lines:
            [result] = verify_tree(
                _signed(document_bytes, pki.ec),
                TrustStore([pki.ca.certificate], registry),
                now=NOW + dt.timedelta(hours=2),
            )
    assert result.signer == pki.ec.certificate
    [line] = [line for line in lines if line["event"] == "signature.revocation_unchecked"]
    assert line["log_level"] == "warning"
    assert line["signer"] == pki.ec.certificate.subject.rfc4514_string()
    assert line["kind"] == "stale"
    assert "nextUpdate" in line["reason"]
    assert registry.unchecked[ca, "stale"] == 1
    metrics = CollectorRegistry()
    metrics.register(RevocationCollector(registry, clock=lambda: NOW + dt.timedelta(hours=2)))
    exposed = generate_latest(metrics).decode()
    assert f'bus_revocation_unchecked_total{{ca="{ca}",kind="stale"}} 1.0' in exposed
    assert f'bus_crl_fresh{{ca="{ca}"}} 0.0' in exposed


@pytest.mark.asyncio
@pytest.mark.parametrize("policy", list(RevocationPolicy))
async def test_unreachable_crl_follows_the_policy(
    pki: Pki, document_bytes: bytes, policy: RevocationPolicy
) -> None:
    url = closed_port_url()
    registry = _registry(pki, url, policy)
    trust = TrustStore([pki.ca.certificate], registry)
    async with _refreshed(registry, timeout_s=5):
        if policy is RevocationPolicy.REFUSE:
            with pytest.raises(
                RevocationUnknownError, match=f"no usable CRL of .* from {url}: .*cannot be fetched"
            ):
                verify_tree(_signed(document_bytes, pki.ec), trust)
        else:
            with structlog.testing.capture_logs() as lines:
                verify_tree(_signed(document_bytes, pki.ec), trust)
            assert [line["kind"] for line in lines if line["event"] == "signature.revocation_unchecked"] == [
                "unavailable"
            ]
    assert registry.status(registry.sources[0]).failures == 1  # the failed fetch is counted


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"key": "other"}, "is not signed by"),
        ({"issuer": "other"}, "is issued by .*, not by"),
        ({"delta_of": 1}, "delta CRL"),
        ({"this_update": "future"}, "in the future"),
        (
            {
                "scope": x509.IssuingDistributionPoint(
                    None, None, False, False, frozenset({x509.ReasonFlags.key_compromise}), False, False
                )
            },
            "covers only one partition .*onlySomeReasons keyCompromise",
        ),
        (
            {"scope": x509.IssuingDistributionPoint(None, None, False, False, None, True, False)},
            "is indirect",
        ),
    ],
)
def test_unusable_crls_are_refused_with_the_reason(pki: Pki, broken: dict[str, object], reason: str) -> None:
    options: dict[str, object] = {}
    if "key" in broken:
        options["key"] = pki.other_ca.key  # the same issuer name, another key: a forgery
    if "issuer" in broken:
        options["issuer"], options["key"] = pki.other_ca.certificate.subject, pki.other_ca.key
    if "delta_of" in broken:
        options["delta_of"] = broken["delta_of"]
    if "this_update" in broken:
        options["this_update"] = NOW + dt.timedelta(hours=1)
        options["next_update"] = NOW + dt.timedelta(days=1)
    if "scope" in broken:
        options["scope"] = broken["scope"]
    crl = make_crl(pki.ca, **options)  # type: ignore[arg-type]
    with pytest.raises(CrlUnusableError, match=reason):
        load_crl(der(crl), pki.ca.certificate, now=NOW, origin="test")


@pytest.mark.asyncio
async def test_a_crl_signed_by_another_key_is_unusable_and_the_signature_refused(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    # A forger names the CA as issuer and lists nobody; the genuine CA revoked the signer.
    server.content["/ca.crl"] = der(make_crl(pki.ca, key=pki.other_ca.key))
    registry = _registry(pki, server.url("/ca.crl"))
    async with _refreshed(registry):
        with pytest.raises(RevocationUnknownError, match=r"no usable CRL .* is not signed by"):
            verify_tree(_signed(document_bytes, pki.ec), TrustStore([pki.ca.certificate], registry))


@pytest.mark.asyncio
async def test_refresh_on_next_update_picks_up_a_new_revocation(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    clock = [NOW]
    server.content["/ca.crl"] = der(make_crl(pki.ca, next_update=NOW + dt.timedelta(hours=1)))
    registry = _registry(pki, server.url("/ca.crl"))
    trust = TrustStore([pki.ca.certificate], registry)
    envelope = _signed(document_bytes, pki.rsa)
    refresher = CrlRefresher(registry, refresh_s=86400, clock=lambda: clock[0])
    try:
        assert await refresher.refresh_due() == 1
        verify_tree(envelope, trust)
        revoked = make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)], number=2)
        server.content["/ca.crl"] = der(revoked)  # the CA revokes the signer and publishes
        clock[0] = NOW + dt.timedelta(minutes=30)
        assert await refresher.refresh_due() == 0  # not due: the cached CRL is current
        verify_tree(envelope, trust)
        clock[0] = NOW + dt.timedelta(hours=1, seconds=1)
        assert await refresher.refresh_due() == 1  # nextUpdate reached: fetched again
        with pytest.raises(CertificateRevokedError, match="keyCompromise"):
            verify_tree(envelope, trust, now=clock[0])
    finally:
        await refresher.stop()
    assert server.hits["/ca.crl"] == 2


@pytest.mark.asyncio
async def test_the_background_task_refreshes_without_anyone_asking(
    pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    server.content["/ca.crl"] = der(make_crl(pki.ca, next_update=start + dt.timedelta(seconds=2)))
    registry = _registry(pki, server.url("/ca.crl"))
    trust = TrustStore([pki.ca.certificate], registry)
    envelope = _signed(document_bytes, pki.rsa)
    refresher = CrlRefresher(registry)
    await refresher.start()
    try:
        verify_tree(envelope, trust)
        server.content["/ca.crl"] = der(
            make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)], number=2)
        )
        for _ in range(150):  # nextUpdate is 2 s away; the refresher wakes up then, unasked
            held = registry.status(registry.sources[0]).crl
            if held is not None and held.number == 2:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(CertificateRevokedError):
            verify_tree(envelope, trust)
    finally:
        await refresher.stop()


def test_an_older_crl_is_refused_as_a_replay(pki: Pki) -> None:
    source = CrlSource(pki.ca.certificate, "test")
    registry = CrlRegistry([source])
    newer = make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)], number=7)
    older = make_crl(pki.ca, number=6)  # validly signed, but it predates the revocation
    registry.install(source, load_crl(der(newer), pki.ca.certificate, now=NOW, origin="test"), NOW)
    with pytest.raises(CrlUnusableError, match="older than the one held"):
        registry.install(source, load_crl(der(older), pki.ca.certificate, now=NOW, origin="test"), NOW)
    with pytest.raises(CertificateRevokedError):
        registry.check(pki.rsa.certificate, pki.ca.certificate, NOW)


def _loaded(ca: Issued, *revoked: x509.Certificate) -> tuple[CrlSource, bytes]:
    entries = [(c, REVOKED_AT, x509.ReasonFlags.ca_compromise) for c in revoked]
    return CrlSource(ca.certificate, f"{ca.certificate.subject.rfc4514_string()}.crl"), der(
        make_crl(ca, entries)
    )


def _registry_of(*loaded: tuple[CrlSource, bytes]) -> CrlRegistry:
    registry = CrlRegistry([source for source, _ in loaded])
    for source, data in loaded:
        registry.install(source, load_crl(data, source.ca, now=NOW, origin=source.location), NOW)
    return registry


def test_intermediates_are_checked_against_their_issuers_crl(pki: Pki, document_bytes: bytes) -> None:
    envelope = _signed(document_bytes, pki.via_intermediate, pki.intermediate.certificate)
    # The root's CRL revokes the intermediate: everything it issued falls with it, and the error says which.
    trust = TrustStore([pki.ca.certificate], _registry_of(_loaded(pki.ca, pki.intermediate.certificate)))
    with pytest.raises(
        CertificateRevokedError, match=r"certificate .*CN=Test Intermediate.* \(cACompromise\)"
    ):
        verify_tree(envelope, trust)
    # The intermediate's own CRL (configured with its certificate) revokes the signer.
    trust = TrustStore(
        [pki.ca.certificate],
        _registry_of(_loaded(pki.ca), _loaded(pki.intermediate, pki.via_intermediate.certificate)),
    )
    with pytest.raises(CertificateRevokedError, match="CN=Sở Tài chính"):
        verify_tree(envelope, trust)


def test_an_intermediate_without_a_crl_is_refused_naming_the_ca(pki: Pki, document_bytes: bytes) -> None:
    """root -> sub-CA -> signer with only the root's CRL: the signer's status is unknown, not fine."""
    envelope = _signed(document_bytes, pki.via_intermediate, pki.intermediate.certificate)
    registry = _registry_of(_loaded(pki.ca))  # lists nobody: the intermediate itself is in good standing
    intermediate = pki.intermediate.certificate.subject.rfc4514_string()
    with pytest.raises(RevocationUnknownError) as refused:
        verify_tree(envelope, TrustStore([pki.ca.certificate], registry))
    message = str(refused.value)
    assert message.startswith(
        f"revocation of certificate {pki.via_intermediate.certificate.subject.rfc4514_string()} (serial "
    )
    assert f"no CRL is configured for {intermediate}, which issued it" in message
    assert "add a [[revocation.crls]] entry for it" in message
    assert registry.refused_unknown[intermediate] == 1
    assert not registry.unchecked


def test_an_intermediate_without_a_crl_under_accept_and_flag_is_accepted_logged_and_counted(
    pki: Pki, document_bytes: bytes
) -> None:
    envelope = _signed(document_bytes, pki.via_intermediate, pki.intermediate.certificate)
    source, data = _loaded(pki.ca)
    registry = CrlRegistry([source], RevocationPolicy.ACCEPT_AND_FLAG)
    registry.install(source, load_crl(data, source.ca, now=NOW, origin=source.location), NOW)
    intermediate = pki.intermediate.certificate.subject.rfc4514_string()
    signer = pki.via_intermediate.certificate.subject.rfc4514_string()
    with structlog.testing.capture_logs() as lines:
        [result] = verify_tree(envelope, TrustStore([pki.ca.certificate], registry))
    assert result.signer == pki.via_intermediate.certificate
    [line] = [line for line in lines if line["event"] == "signature.revocation_unchecked"]
    assert line["log_level"] == "warning"
    assert (line["signer"], line["certificate"], line["ca"], line["kind"]) == (
        signer,
        signer,
        intermediate,
        "no-crl",
    )
    assert line["reason"] == f"no CRL is configured for {intermediate}, which issued it"
    assert registry.unchecked == {(intermediate, "no-crl"): 1}
    metrics = CollectorRegistry()
    metrics.register(RevocationCollector(registry, clock=lambda: NOW))
    exposed = generate_latest(metrics).decode()
    assert f'bus_revocation_unchecked_total{{ca="{intermediate}",kind="no-crl"}} 1.0' in exposed


def test_with_the_intermediates_crl_added_the_same_signer_is_accepted(
    pki: Pki, document_bytes: bytes
) -> None:
    """The remedy the refusal names works: root and intermediate both with a CRL, the chain is checked."""
    envelope = _signed(document_bytes, pki.via_intermediate, pki.intermediate.certificate)
    only_root = _registry_of(_loaded(pki.ca))
    with pytest.raises(RevocationUnknownError, match="CN=Test Intermediate"):
        verify_tree(envelope, TrustStore([pki.ca.certificate], only_root))
    both = _registry_of(_loaded(pki.ca), _loaded(pki.intermediate))
    with structlog.testing.capture_logs() as lines:
        [result] = verify_tree(envelope, TrustStore([pki.ca.certificate], both))
    assert result.signer == pki.via_intermediate.certificate
    assert [line for line in lines if line["event"] == "signature.revocation_unchecked"] == []
    assert not both.unchecked
    assert not both.refused_unknown


def test_a_trusted_ca_without_a_crl_leaves_its_certificates_unknown_once_crls_are_configured(
    pki: Pki, document_bytes: bytes
) -> None:
    """A registry exists (another trusted CA has a CRL): a root without one is no silent pass either."""
    registry = _registry_of(_loaded(pki.other_ca))
    trust = TrustStore([pki.ca.certificate, pki.other_ca.certificate], registry)
    with pytest.raises(
        RevocationUnknownError,
        match=r"no CRL is configured for O=Development PKI,CN=Test CA, which issued it",
    ):
        verify_tree(_signed(document_bytes, pki.ec), trust)
    # Without any registry nothing is checked, as before.
    [result] = verify_tree(_signed(document_bytes, pki.ec), TrustStore([pki.ca.certificate]))
    assert result.signer == pki.ec.certificate


def test_a_crl_that_leaves_ca_certificates_out_cannot_vouch_for_an_intermediate(pki: Pki) -> None:
    users_only = x509.IssuingDistributionPoint(None, None, True, False, None, False, False)
    source = CrlSource(pki.ca.certificate, "users.crl")
    registry = CrlRegistry([source])
    crl = make_crl(pki.ca, scope=users_only)
    registry.install(source, load_crl(der(crl), pki.ca.certificate, now=NOW, origin="users.crl"), NOW)
    registry.check(pki.ec.certificate, pki.ca.certificate, NOW)  # an end-entity: covered, not listed
    with pytest.raises(RevocationUnknownError, match="leaves CA certificates out"):
        registry.check(pki.intermediate.certificate, pki.ca.certificate, NOW)


def test_a_crl_for_a_namesake_ca_does_not_apply(pki: Pki) -> None:
    namesake = make_ca("Test CA")  # same name as pki.ca, another key
    registry = _registry_of(_loaded(namesake, pki.rsa.certificate))
    assert not registry.covers(pki.ca.certificate)
    # Not pki.ca's CRL: it neither revokes pki.ca's certificate nor vouches for it.
    with pytest.raises(RevocationUnknownError, match="no CRL is configured for"):
        registry.check(pki.rsa.certificate, pki.ca.certificate, NOW)


@pytest.mark.parametrize(
    "scope",
    [
        x509.IssuingDistributionPoint(
            [x509.UniformResourceIdentifier("http://crl.ca.example/part-7.crl")],
            None,
            False,
            False,
            None,
            False,
            False,
        ),
        x509.IssuingDistributionPoint(
            None,
            x509.RelativeDistinguishedName([x509.NameAttribute(x509.NameOID.COMMON_NAME, "CRL7")]),
            False,
            False,
            None,
            False,
            False,
        ),
    ],
    ids=["full-name", "relative-name"],
)
def test_a_crl_for_one_distribution_point_is_refused_as_a_partition(
    pki: Pki, scope: x509.IssuingDistributionPoint
) -> None:
    """A partitioned CRL lists only the revocations of its partition: taken for the whole, it would vouch
    for a revoked certificate of another partition."""
    crl = make_crl(pki.ca, scope=scope)
    with pytest.raises(CrlUnusableError, match=r"covers only one partition .*distributionPoint") as refused:
        load_crl(der(crl), pki.ca.certificate, now=NOW, origin="part-7.crl")
    assert "configure the CA's complete CRL" in str(refused.value)


@pytest.mark.asyncio
async def test_a_pem_crl_from_a_file_and_a_certificate_on_hold(
    pki: Pki, tmp_path: Path, document_bytes: bytes
) -> None:
    holder = issue_certificate(pki.ca, "Tạm đình chỉ", "000.00.00.H99")
    crl = make_crl(pki.ca, [(holder.certificate, REVOKED_AT, x509.ReasonFlags.certificate_hold)])
    (tmp_path / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    registry = _registry(pki, str(tmp_path / "ca.crl"))
    async with _refreshed(registry):
        with pytest.raises(CertificateRevokedError, match=r"\(certificateHold\)"):
            verify_tree(_signed(document_bytes, holder), TrustStore([pki.ca.certificate], registry))
