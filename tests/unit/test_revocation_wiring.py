"""Revocation where it is used (issue 10): the settings, the node's trust stores (agencies' CAs and the
national axis's), the intake refusing a revoked signer, and ``bus verify --crl`` offline."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from bus.dsig import TrustStore, sign_tree
from bus.dsig.crl_refresh import CrlRefresher
from bus.dsig.revocation import CrlRegistry, CrlSource, RevocationPolicy, load_crl
from bus.errors import CertificateRevokedError, ConfigError, RevocationUnknownError
from bus.intake import Intake, NodeIdentity
from bus.organ_id import OrganId
from bus.pki import Issued, issue_certificate, make_ca
from bus.settings import Settings, load_settings, load_topology
from bus.topology import Topology
from bus.xmlparse import parse_untrusted
from entrypoints.bootstrap import _cas_without_crl, intake_policy, revocation_registry
from entrypoints.cli import main
from tests.conftest import ROOT, Pki
from tests.crlkit import CrlServer, der, make_crl, serve_crls
from tests.factory import make_document
from tests.unit.test_intake import FakePublisher, FakeStore, _intake

PROVINCE = OrganId.parse("000.00.00.H99")
MINISTRY = "000.00.00.G12"
REVOKED_AT = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
KEY_COMPROMISE = x509.ReasonFlags.key_compromise
Capture = pytest.CaptureFixture[str]


@pytest.fixture
def server() -> Iterator[CrlServer]:
    with serve_crls() as running:
        yield running


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")


@pytest.fixture(scope="module")
def axis_ca() -> Issued:
    """Another province's or a ministry's CA, trusted through national_axis.trust."""
    return make_ca("CA của Bộ", kind="ec")


def _pem(path: Path, certificate: x509.Certificate) -> str:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _signed(body: bytes, signer: Issued, *chain: x509.Certificate) -> bytes:
    tree = parse_untrusted(body)
    sign_tree(tree, signer.key, signer.certificate, list(chain))
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


# -- the intake ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_intake_refuses_an_envelope_from_a_revoked_signer(
    topology: Topology, pki: Pki, server: CrlServer, document_bytes: bytes
) -> None:
    server.content["/ca.crl"] = der(make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)]))
    registry = CrlRegistry([CrlSource(pki.ca.certificate, server.url("/ca.crl"))])
    refresher = CrlRefresher(registry)
    await refresher.start()
    publisher, store = FakePublisher(), FakeStore()
    intake = _intake(
        topology,
        pki,
        publisher,
        store,
        trust=TrustStore([pki.ca.certificate], registry),
        signed_senders=frozenset({str(PROVINCE)}),
    )
    try:
        with pytest.raises(
            CertificateRevokedError, match=r"was revoked on 2026-11-20 08:00 UTC \(keyCompromise\)"
        ):
            await intake.accept(_signed(document_bytes, pki.rsa), sender=PROVINCE)
        assert publisher.sent == []
        assert store.pending == {}
        assert store.accepted == {}
        # The same envelope signed by a certificate the CRL does not list goes through.
        await intake.accept(_signed(document_bytes, pki.ec), sender=PROVINCE)
        assert publisher.sent != []
    finally:
        await refresher.stop()


@pytest.mark.asyncio
async def test_the_intake_does_not_take_a_signer_whose_intermediate_ca_has_no_crl(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    """root -> sub-CA -> signer, with a CRL for the root only: not accepted (temporarily), nothing moves."""
    finance = OrganId.parse("000.00.02.H99")  # pki.via_intermediate's UID
    source = CrlSource(pki.ca.certificate, "ca.crl")
    registry = CrlRegistry([source])
    now = dt.datetime.now(dt.UTC)
    registry.install(
        source, load_crl(der(make_crl(pki.ca)), pki.ca.certificate, now=now, origin="ca.crl"), now
    )
    publisher, store = FakePublisher(), FakeStore()
    intake = _intake(topology, pki, publisher, store, trust=TrustStore([pki.ca.certificate], registry))
    body = _signed(
        make_document(str(finance), ["000.00.21.H99"], 73), pki.via_intermediate, pki.intermediate.certificate
    )
    with pytest.raises(RevocationUnknownError, match=r"no CRL is configured for .*CN=Test Intermediate"):
        await intake.accept(body, sender=finance)
    assert publisher.sent == []
    assert store.pending == {}
    assert store.accepted == {}


# -- settings and the node's wiring ---------------------------------------------------------------------


def _config(tmp_path: Path, pki: Pki, axis_ca: Issued, revocation: str) -> Path:
    _pem(tmp_path / "ca.pem", pki.ca.certificate)
    _pem(tmp_path / "axis-ca.pem", axis_ca.certificate)
    path = tmp_path / "province.toml"
    path.write_text(
        'province = "Tỉnh Mẫu"\n'
        '[node]\norgan_id = "000.00.90.H99"\nname = "Trục"\ntrust = ["ca.pem"]\n'
        '[national_axis]\ntrust = ["axis-ca.pem"]\n'
        '[[agencies]]\norgan_id = "000.00.00.H99"\nname = "UBND tỉnh"\nlevel = "province"\n'
        "require_signature = true\n"
        '[[agencies]]\norgan_id = "000.00.21.H99"\nname = "UBND huyện"\nlevel = "district"\n'
        'parent = "000.00.00.H99"\n' + revocation,
        encoding="utf-8",
    )
    return path


def _both_crls(url: str) -> str:
    return (
        '[revocation]\non_unavailable = "refuse"\n'
        f'[[revocation.crls]]\nca = "ca.pem"\ncrl = "{url}"\n'
        '[[revocation.crls]]\nca = "axis-ca.pem"\ncrl = "crl/axis.crl"\n'
    )


def test_settings_read_the_revocation_section(tmp_path: Path, pki: Pki, axis_ca: Issued) -> None:
    settings = load_settings(_config(tmp_path, pki, axis_ca, _both_crls("http://crl.ca.example/ca.crl")))
    section = settings.revocation
    assert [(str(c.ca), c.crl) for c in section.crls] == [
        ("ca.pem", "http://crl.ca.example/ca.crl"),
        ("axis-ca.pem", "crl/axis.crl"),
    ]
    assert (section.on_unavailable, section.refresh_s, section.require_for_every_ca) == (
        "refuse",
        3600.0,
        False,
    )
    assert Settings.model_fields["revocation"].default.on_unavailable == "refuse"  # the safe default


def test_environment_sets_the_policy(
    tmp_path: Path, pki: Pki, axis_ca: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUS_REVOCATION__ON_UNAVAILABLE", "accept-and-flag")
    settings = load_settings(_config(tmp_path, pki, axis_ca, _both_crls("http://crl.ca.example/ca.crl")))
    assert settings.revocation.on_unavailable == "accept-and-flag"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        (
            '[[revocation.crls]]\nca = "ca.pem"\ncrl = "ldap://ldap.ca.example/cn=CA"\n',
            "revocation.crls.0.crl",
        ),
        ('[revocation]\non_unavailable = "ignore"\n', "revocation.on_unavailable"),
        ("[revocation]\nretry_s = 0\n", "revocation.retry_s"),
    ],
)
def test_bad_revocation_settings_stop_start_up(
    tmp_path: Path, pki: Pki, axis_ca: Issued, section: str, field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(_config(tmp_path, pki, axis_ca, section))


def test_every_ca_can_be_required_to_have_a_crl(tmp_path: Path, pki: Pki, axis_ca: Issued) -> None:
    only_ours = (
        '[revocation]\nrequire_for_every_ca = true\n[[revocation.crls]]\nca = "ca.pem"\ncrl = "x.crl"\n'
    )
    settings = load_settings(_config(tmp_path, pki, axis_ca, only_ours))
    with pytest.raises(ConfigError, match=r"no CRL is listed for .*CN=CA của Bộ"):
        revocation_registry(settings)


@pytest.mark.parametrize(
    ("policy", "outcome"), [("refuse", "refused"), ("accept-and-flag", "accepted and flagged")]
)
def test_a_trusted_ca_without_a_crl_is_announced_at_start_up_with_what_becomes_of_its_signatures(
    tmp_path: Path, pki: Pki, axis_ca: Issued, policy: str, outcome: str
) -> None:
    only_ours = (
        f'[revocation]\non_unavailable = "{policy}"\n[[revocation.crls]]\nca = "ca.pem"\ncrl = "x.crl"\n'
    )
    settings = load_settings(_config(tmp_path, pki, axis_ca, only_ours))
    with structlog.testing.capture_logs() as lines:
        registry = revocation_registry(settings)
    assert registry is not None
    [line] = [line for line in lines if line["event"] == "revocation.no_crl"]
    assert line["log_level"] == "warning"
    assert line["ca"] == axis_ca.certificate.subject.rfc4514_string()
    assert line["consequence"] == f"signatures whose chain passes this CA are {outcome}"
    # Node.start logs revocation.not_checked for these: none is left unchecked once a registry exists.
    assert _cas_without_crl(settings, registry) == []


def test_without_a_revocation_section_nothing_is_checked_and_every_ca_is_announced(
    tmp_path: Path, pki: Pki, axis_ca: Issued
) -> None:
    settings = load_settings(_config(tmp_path, pki, axis_ca, ""))
    with structlog.testing.capture_logs() as lines:
        assert revocation_registry(settings) is None
    assert [line for line in lines if line["event"] == "revocation.no_crl"] == []
    assert _cas_without_crl(settings, None) == sorted(
        [pki.ca.certificate.subject.rfc4514_string(), axis_ca.certificate.subject.rfc4514_string()]
    )


@pytest.mark.asyncio
async def test_the_node_checks_both_trust_stores_against_the_configured_crls(
    tmp_path: Path, pki: Pki, axis_ca: Issued, server: CrlServer
) -> None:
    ministry = issue_certificate(axis_ca, "Bộ Tài chính", MINISTRY)
    server.content["/ca.crl"] = der(make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)]))
    (tmp_path / "crl").mkdir()
    (tmp_path / "crl" / "axis.crl").write_bytes(
        der(make_crl(axis_ca, [(ministry.certificate, REVOKED_AT, None)]))
    )
    settings = load_settings(_config(tmp_path, pki, axis_ca, _both_crls(server.url("/ca.crl"))))
    registry = revocation_registry(settings)
    assert registry is not None
    assert [s.location for s in registry.sources] == [
        server.url("/ca.crl"),
        str(tmp_path / "crl" / "axis.crl"),
    ]
    policy = intake_policy(settings, registry)
    assert policy.trust is not None
    assert policy.axis_trust is not None
    assert policy.trust.revocation is registry
    assert policy.axis_trust.revocation is registry
    refresher = CrlRefresher(registry)
    await refresher.start()
    try:
        node = NodeIdentity(settings.node.organ_id, pki.ec.key, pki.ec.certificate)
        intake = Intake(settings.topology, node, FakePublisher(), FakeStore(), policy)
        local = make_document(str(PROVINCE), ["000.00.21.H99"], 71)
        with pytest.raises(CertificateRevokedError, match="keyCompromise"):
            await intake.accept(_signed(local, pki.rsa), sender=PROVINCE)
        arrival = make_document(MINISTRY, ["000.00.21.H99"], 72)
        with pytest.raises(
            CertificateRevokedError, match=r"CN=Bộ Tài chính.*\(unspecified\) by .*CN=CA của Bộ"
        ):
            await intake.accept_from_axis(_signed(arrival, ministry))
    finally:
        await refresher.stop()


def test_a_policy_built_without_a_registry_still_checks(tmp_path: Path, pki: Pki, axis_ca: Issued) -> None:
    """Callers of intake_policy(settings) alone get a registry nobody loaded: refused, never unchecked."""
    settings = load_settings(_config(tmp_path, pki, axis_ca, _both_crls("http://127.0.0.1:9/ca.crl")))
    policy = intake_policy(settings)
    assert policy.trust is not None
    assert policy.trust.revocation is not None
    assert policy.trust.revocation.policy is RevocationPolicy.REFUSE


# -- bus verify --crl -----------------------------------------------------------------------------------


def _verify_files(
    tmp_path: Path, pki: Pki, document_bytes: bytes, crl: x509.CertificateRevocationList
) -> list[str]:
    envelope = tmp_path / "signed.edxml"
    envelope.write_bytes(_signed(document_bytes, pki.rsa))
    (tmp_path / "ca.crl").write_bytes(der(crl))
    return [
        "--ca",
        _pem(tmp_path / "ca.pem", pki.ca.certificate),
        "--crl",
        str(tmp_path / "ca.crl"),
        str(envelope),
    ]


def test_verify_with_a_crl_refuses_a_revoked_signer(
    tmp_path: Path, pki: Pki, document_bytes: bytes, capsys: Capture
) -> None:
    revoking = make_crl(pki.ca, [(pki.rsa.certificate, REVOKED_AT, KEY_COMPROMISE)])
    with_crl = _verify_files(tmp_path, pki, document_bytes, revoking)
    envelope = with_crl[-1]
    assert main(["verify", "--ca", str(tmp_path / "ca.pem"), envelope]) == 0  # without the CRL nothing tells
    capsys.readouterr()
    assert main(["verify", *with_crl]) == 1
    out, err = capsys.readouterr()
    assert out == f"{envelope}: INVALID\n"
    assert "was revoked on 2026-11-20 08:00 UTC (keyCompromise) by O=Development PKI,CN=Test CA" in err


def test_verify_with_a_stale_crl_refuses_unless_told_to_flag(
    tmp_path: Path, pki: Pki, document_bytes: bytes, capsys: Capture
) -> None:
    now = dt.datetime.now(dt.UTC)
    stale = make_crl(pki.ca, this_update=now - dt.timedelta(days=8), next_update=now - dt.timedelta(days=1))
    args = _verify_files(tmp_path, pki, document_bytes, stale)
    assert main(["verify", *args]) == 1
    assert "is stale" in capsys.readouterr().err
    assert main(["verify", "--crl-policy", "accept-and-flag", *args]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{args[-1]}: OK")
    assert f"{args[-1]}: warning: accepted signature of " in err
    assert "is stale" in err


def test_verify_with_a_crl_refuses_a_signer_whose_intermediate_has_none(
    tmp_path: Path, pki: Pki, document_bytes: bytes, capsys: Capture
) -> None:
    args = _verify_files(tmp_path, pki, document_bytes, make_crl(pki.ca))
    envelope = Path(args[-1])
    envelope.write_bytes(_signed(document_bytes, pki.via_intermediate, pki.intermediate.certificate))
    assert main(["verify", *args]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{envelope}: INVALID")
    intermediate = pki.intermediate.certificate.subject.rfc4514_string()
    assert f"no CRL is configured for {intermediate}, which issued it" in err
    assert "give its CRL with --crl" in err
    assert main(["verify", "--crl-policy", "accept-and-flag", *args]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{envelope}: OK")
    assert "without a revocation check" in err


def test_verify_refuses_a_crl_of_a_ca_not_trusted(
    tmp_path: Path, pki: Pki, document_bytes: bytes, capsys: Capture
) -> None:
    args = _verify_files(tmp_path, pki, document_bytes, make_crl(pki.other_ca))
    assert main(["verify", *args]) == 2
    assert "none of the trusted CAs (--ca)" in capsys.readouterr().err
