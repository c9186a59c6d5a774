"""A real node (RabbitMQ, SQLite) with ``[revocation]``: it loads the CA's CRL from a loopback HTTP server
at start-up, refuses the envelope of a revoked signer, shows the CRL in /metrics, stops its refresher
(issue 10)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from prometheus_client import generate_latest

from bus.dsig import load_certificates, load_private_key, sign_tree
from bus.errors import CertificateRevokedError
from bus.organ_id import OrganId
from bus.pki import Issued
from bus.settings import load_settings
from bus.xmlparse import parse_untrusted
from entrypoints.runtime import Node
from tests.conftest import EXAMPLES
from tests.crlkit import der, make_crl, serve_crls
from tests.integration.conftest import delete_broker_objects, write_config

pytestmark = pytest.mark.asyncio

PROVINCE = OrganId.parse("000.00.00.H99")


def _issued(directory: Path, stem: str) -> Issued:
    key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(), password=None)
    return Issued(key, load_certificates(directory / f"{stem}.pem")[0])  # type: ignore[arg-type]


async def test_a_node_refuses_a_revoked_signer_with_the_crl_it_loaded(tmp_path: Path, pki_dir: Path) -> None:
    ca = _issued(pki_dir, "ca")
    signer = load_certificates(pki_dir / "nodes" / f"{PROVINCE}.pem")[0]
    revoked_at = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    with serve_crls() as server:
        server.content["/ca.crl"] = der(make_crl(ca, [(signer, revoked_at, x509.ReasonFlags.superseded)]))
        crl = server.url("/ca.crl")
        section = f'\n[revocation]\n[[revocation.crls]]\nca = "{pki_dir / "ca.pem"}"\ncrl = "{crl}"\n'
        config = write_config(
            tmp_path / "province.toml",
            pki_dir,
            prefix=f"test-{uuid.uuid4().hex[:10]}",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}",
            extra=section,
        )
        settings = load_settings(config)
        node = await Node.start(settings, workers=False)
        try:
            assert server.hits["/ca.crl"] == 1  # loaded at start-up, before anything reached the intake
            assert node.crl_refresher is not None
            assert node.crl_refresher.running
            tree = parse_untrusted((EXAMPLES / "cong-van-tinh-gui-huyen-xa.edxml").read_bytes())
            sign_tree(tree, load_private_key(pki_dir / "nodes" / f"{PROVINCE}.key"), signer)
            body = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
            with pytest.raises(
                CertificateRevokedError, match=r"revoked on 2026-11-20 08:00 UTC \(superseded\)"
            ):
                await node.intake.accept(body, sender=PROVINCE)
            metrics = generate_latest(node.api.metrics.registry).decode()
            name = ca.certificate.subject.rfc4514_string()
            assert f'bus_crl_fresh{{ca="{name}"}} 1.0' in metrics
            assert f'bus_certificates_revoked_refused_total{{ca="{name}"}} 1.0' in metrics
        finally:
            await node.stop()
            await delete_broker_objects(settings)
        assert node.crl_refresher is not None
        assert not node.crl_refresher.running  # stopped with the node


async def test_an_unreachable_crl_is_a_temporary_503_never_a_refusal_of_the_envelope(
    tmp_path: Path, pki_dir: Path
) -> None:
    """Under the default policy an envelope whose signer cannot be checked now is not accepted, but it
    is not bad either: the sender hears 503 (send it again later), not a 400 that says it is invalid;
    and once the CRL is back the same envelope is accepted."""
    import httpx

    from adapters.http import create_app
    from adapters.http.client import AgencyClient, ApiFailure

    ca = _issued(pki_dir, "ca")
    with serve_crls() as server:  # answers 404 for /ca.crl until the CA publishes it
        section = (
            f'\n[revocation]\nretry_s = 0.2\n[[revocation.crls]]\nca = "{pki_dir / "ca.pem"}"\n'
            f'crl = "{server.url("/ca.crl")}"\n'
        )
        config = write_config(
            tmp_path / "province.toml",
            pki_dir,
            prefix=f"test-{uuid.uuid4().hex[:10]}",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}",
            extra=section,
        )
        settings = load_settings(config)
        node = await Node.start(settings)
        try:
            signer = load_certificates(pki_dir / "nodes" / f"{PROVINCE}.pem")[0]
            tree = parse_untrusted((EXAMPLES / "cong-van-tinh-gui-huyen-xa.edxml").read_bytes())
            sign_tree(tree, load_private_key(pki_dir / "nodes" / f"{PROVINCE}.key"), signer)
            body = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
            transport = httpx.ASGITransport(app=create_app(node.api))
            client = AgencyClient(
                "http://bus", str(PROVINCE), f"demo-only-{PROVINCE}".encode(), transport=transport
            )
            with pytest.raises(ApiFailure) as caught:
                await client.send(body)
            assert (caught.value.status, caught.value.code) == (503, "revocation-unavailable")
            assert "send it again later" in str(caught.value)
            assert await node.store.sent(str(PROVINCE)) == []
            server.content["/ca.crl"] = der(make_crl(ca, []))  # the CA publishes; the refresher retries
            accepted: dict[str, object] = {}
            for _ in range(50):
                try:
                    accepted = await client.send(body)
                    break
                except ApiFailure as exc:
                    refusals = exc.code
                    await asyncio.sleep(0.1)
            else:
                pytest.fail(f"still refused ({refusals}) 5 s after the CRL was published")
            assert accepted["bus_id"]
        finally:
            await node.stop()
            await delete_broker_objects(settings)
