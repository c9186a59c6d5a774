"""Issue 10's intake defects, through the agency API of a whole node (real RabbitMQ, SQLite and
PostgreSQL): each refusal is a clear 4xx, and nothing reaches any inbox or queue.

The core decisions are unit-tested on fakes in tests/unit/test_intake.py; this file proves the wiring
(settings → intake policy → HTTP status and error body) on the real parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from lxml import etree

from adapters.http import create_app
from adapters.http.client import AgencyClient, ApiFailure
from bus.dsig import load_certificates, load_private_key, sign_tree
from bus.pki import Issued, issue_certificate, make_ca
from bus.settings import IntakeSettings, Settings
from bus.xmlparse import parse_untrusted
from entrypoints.runtime import Node
from tests.factory import make_document
from tests.integration.test_api import signed_by

pytestmark = pytest.mark.asyncio

PROVINCE = "000.00.00.H99"  # must sign (example file)
HOME_AFFAIRS = "000.00.01.H99"  # need not sign
DISTRICT = "000.00.21.H99"
ClientFor = Callable[[str], AgencyClient]


@pytest_asyncio.fixture
async def node(node_settings: Settings) -> AsyncIterator[Node]:
    settings = node_settings.model_copy(update={"intake": IntakeSettings(max_recipients=5)})
    node = await Node.start(settings)
    yield node
    await node.stop()


@pytest.fixture
def client_for(node: Node) -> ClientFor:
    transport = httpx.ASGITransport(app=create_app(node.api))

    def make(agency: str) -> AgencyClient:
        return AgencyClient("http://bus", agency, f"demo-only-{agency}".encode(), transport=transport)

    return make


async def _refused(client: AgencyClient, envelope: bytes) -> ApiFailure:
    with pytest.raises(ApiFailure) as caught:
        await client.send(envelope)
    return caught.value


async def _nothing_delivered(node: Node, client_for: ClientFor) -> None:
    await asyncio.sleep(0.3)  # what a publish would have put in an inbox is written by now
    assert await client_for(DISTRICT).inbox(pending=False) == []
    assert await node.store.sent(PROVINCE) == []
    assert await node.store.sent(HOME_AFFAIRS) == []


def _with_certificate(pki_dir: Path, envelope: bytes, uid: str) -> bytes:
    """Signed with a fresh certificate of the province's own (trusted) CA, whose UID is *uid*."""
    ca = Issued(load_private_key(pki_dir / "ca.key"), load_certificates(pki_dir / "ca.pem")[0])
    issued = issue_certificate(ca, "Chứng thư không tên", uid)
    tree = parse_untrusted(envelope)
    sign_tree(tree, issued.key, issued.certificate)
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


async def test_hardened_intake_answers_each_attack_with_a_clear_refusal(
    node: Node, client_for: ClientFor, pki_dir: Path
) -> None:
    province, home = client_for(PROVINCE), client_for(HOME_AFFAIRS)

    # 1. "Must sign" with a trusted certificate that names nobody.
    nameless = _with_certificate(pki_dir, make_document(PROVINCE, [DISTRICT], 901), "")
    failure = await _refused(province, nameless)
    assert (failure.status, failure.code) == (403, "forged-sender")
    assert "names no UID" in str(failure)

    # 2. A comment inside a signed subject: the signature stays valid, the subject read changes.
    document = make_document(PROVINCE, [DISTRICT], 902, subject="V/v phê duyệt dự án")
    commented = signed_by(pki_dir, PROVINCE, document).replace(
        "phê duyệt dự án".encode(), "phê duyệt<!-- x --> dự án".encode()
    )
    failure = await _refused(province, commented)
    assert (failure.status, failure.code) == (400, "invalid-envelope")
    [problem] = failure.payload["problems"]
    assert problem["code"] == "unsigned-markup"
    assert problem["path"].endswith("/MessageHeader/Subject")

    # ... and a signature from an agency that need not sign is checked all the same.
    rogue = issue_certificate(make_ca("CA không được tin cậy"), "Sở Nội vụ", HOME_AFFAIRS)
    tree = parse_untrusted(make_document(HOME_AFFAIRS, [DISTRICT], 903))
    sign_tree(tree, rogue.key, rogue.certificate)
    failure = await _refused(home, etree.tostring(tree, encoding="UTF-8", xml_declaration=True))
    assert (failure.status, failure.code) == (400, "signature-invalid")

    # 5. Too many recipients (intake.max_recipients = 5 here), and an unknown code of this province.
    ministries = [f"000.00.00.G{n:02d}" for n in range(10, 16)]
    failure = await _refused(home, make_document(HOME_AFFAIRS, ministries, 904))
    assert (failure.status, failure.code) == (400, "invalid-envelope")
    assert failure.payload["problems"][0]["code"] == "too-many-recipients"
    assert "at most 5" in str(failure)
    failure = await _refused(home, make_document(HOME_AFFAIRS, [DISTRICT, "000.99.21.H99"], 905))
    assert failure.payload["problems"][0]["code"] == "unknown-recipient"

    await _nothing_delivered(node, client_for)
    # The bus keeps serving: the same agencies' good envelopes go through.
    assert (await home.send(make_document(HOME_AFFAIRS, ministries[:5], 906)))["bus_id"]
    assert (await province.send(signed_by(pki_dir, PROVINCE, document)))["bus_id"]
