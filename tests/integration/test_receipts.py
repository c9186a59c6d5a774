"""Receipts the bus signs for senders (issue 15 item 4), and the audit records of refusals and operator
actions, on a whole node: real RabbitMQ, a real database (SQLite and PostgreSQL), the inbox worker
consuming; the agency API and the dashboard (``Node.http_app``) driven in-process through ASGI."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adapters.http.client import AgencyClient, ApiFailure
from bus.audit import parse_iso
from bus.checks import VN_TZ
from bus.dsig import TrustStore, load_certificates
from bus.jws import EvidenceError, b64url, unb64url
from bus.pki import make_ca
from bus.receipts import ACCEPTED, DELIVERED, verify_receipt
from bus.settings import Settings
from entrypoints.cli import main
from entrypoints.runtime import Node
from tests.factory import make_document
from tests.integration.dashboard_client import csrf_of, dashboard_env
from tests.integration.dashboard_seed import OPERATOR, PASSWORD, dashboard_settings

pytestmark = pytest.mark.asyncio

NODE = "000.00.90.H99"
SENDER = "000.00.01.H99"  # Sở Nội vụ: its envelopes need no signature (example-province.toml)
PROVINCE = "000.00.00.H99"
DISTRICT = "000.00.21.H99"
COMMUNE = "000.01.21.H99"
FINANCE = "000.00.02.H99"  # neither sender nor recipient of the documents here
REASON = "Văn bản không thuộc thẩm quyền xử lý của đơn vị"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bus:
    node: Node
    pki: Path
    clients: list[AgencyClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = self.node.http_app()
        self.trust = TrustStore(load_certificates(self.pki / "ca.pem"))

    def agency(self, code: str) -> AgencyClient:
        transport = httpx.ASGITransport(app=self.app)
        client = AgencyClient("http://bus", code, f"demo-only-{code}".encode(), transport=transport)
        self.clients.append(client)
        return client

    def browser(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://bus.test")


@pytest_asyncio.fixture
async def bus(node_settings: Settings, pki_dir: Path) -> AsyncIterator[Bus]:
    node = await Node.start(dashboard_settings(node_settings))
    made = Bus(node, pki_dir)
    try:
        yield made
    finally:
        for client in made.clients:
            await client.aclose()
        await node.stop()


async def wait_for_inbox(client: AgencyClient, within_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while not (items := await client.inbox()):
        assert time.monotonic() < deadline, f"nothing reached {client.agency}'s inbox in {within_s} s"
        await asyncio.sleep(0.05)
    [item] = items
    return item


@dataclass(frozen=True)
class Delivered:
    posted: bytes  # the exact bytes the sender POSTed
    answer: dict[str, Any]  # the 202 answer
    fetched: dict[str, bytes]  # what each recipient fetched
    acked: tuple[dt.datetime, dt.datetime]  # the acknowledgements happened between these two moments

    @property
    def bus_id(self) -> str:
        return str(self.answer["bus_id"])


async def deliver(bus: Bus, number: int) -> Delivered:
    """A document to the district and the commune; the commune acknowledges done, the district fail."""
    posted = make_document(SENDER, [DISTRICT, COMMUNE], number)
    answer = await bus.agency(SENDER).send(posted)
    fetched = {}
    start = dt.datetime.now(dt.UTC)
    for recipient, state, reason in ((COMMUNE, "done", None), (DISTRICT, "fail", REASON)):
        client = bus.agency(recipient)
        item = await wait_for_inbox(client)
        assert item["bus_id"] == answer["bus_id"]
        fetched[recipient] = await client.fetch(int(item["id"]))
        await client.acknowledge(int(item["id"]), state, reason)
    return Delivered(posted, answer, fetched, (start, dt.datetime.now(dt.UTC)))


async def receipts_of(bus: Bus, bus_id: str) -> dict[str, Any]:
    response = await bus.agency(SENDER).request("GET", f"/v1/documents/{bus_id}/receipts")
    return dict(response.json())


def tampered(receipt: dict[str, str]) -> dict[str, str]:
    """*receipt* with one byte of its payload changed (a digit of the SHA-256), re-encoded."""
    payload = bytearray(unb64url(receipt["payload"], "the payload"))
    digest = json.loads(payload)["sha256"].encode("ascii")
    at = payload.index(digest)
    payload[at] = ord("1") if payload[at] != ord("1") else ord("2")
    return {**receipt, "payload": b64url(bytes(payload))}


async def test_the_answer_to_an_accepted_envelope_carries_a_signed_receipt(bus: Bus) -> None:
    posted = make_document(SENDER, [DISTRICT, COMMUNE], 301)
    before = dt.datetime.now(dt.UTC)
    answer = await bus.agency(SENDER).send(posted)
    after = dt.datetime.now(dt.UTC)

    signed = verify_receipt(answer["receipt"], bus.trust)
    value = signed.value
    assert value["type"] == ACCEPTED
    assert value["node"] == NODE
    assert (value["bus_id"], value["document_id"]) == (answer["bus_id"], answer["document_id"])
    assert value["sender"] == SENDER
    assert value["sha256"] == sha256(posted)  # the exact bytes POSTed
    assert value["recipients"] == sorted([DISTRICT, COMMUNE])
    assert before - dt.timedelta(seconds=1) <= parse_iso(value["at"]) <= after
    [node_cert] = load_certificates(bus.pki / "nodes" / f"{NODE}.pem")
    assert signed.signer == node_cert
    # The 202 answer saved whole is a receipt too.
    assert verify_receipt(json.dumps(answer), bus.trust).value == value

    with pytest.raises(EvidenceError, match="does not match the payload"):
        verify_receipt(tampered(answer["receipt"]), bus.trust)
    other = TrustStore([make_ca("Một CA khác").certificate])
    with pytest.raises(EvidenceError, match="not trusted"):
        verify_receipt(answer["receipt"], other)


async def test_the_sender_fetches_a_delivery_receipt_per_acknowledging_recipient(bus: Bus) -> None:
    sent = await deliver(bus, 302)
    answer = await receipts_of(bus, sent.bus_id)
    assert answer["bus_id"] == sent.bus_id
    values = [verify_receipt(r, bus.trust).value for r in answer["receipts"]]
    assert [v["type"] for v in values] == [ACCEPTED, DELIVERED, DELIVERED]
    accepted, *delivered = values
    assert accepted["sha256"] == sha256(sent.posted)
    assert accepted["at"] == verify_receipt(sent.answer["receipt"], bus.trust).value["at"]
    by_recipient = {v["recipient"]: v for v in delivered}
    assert sorted(by_recipient) == sorted([COMMUNE, DISTRICT])
    assert by_recipient[COMMUNE]["state"] == "done"
    assert "reason" not in by_recipient[COMMUNE]
    assert (by_recipient[DISTRICT]["state"], by_recipient[DISTRICT]["reason"]) == ("fail", REASON)
    start, end = sent.acked
    for recipient, value in by_recipient.items():
        assert (value["bus_id"], value["document_id"]) == (sent.bus_id, sent.answer["document_id"])
        assert value["sender"] == SENDER
        assert value["sha256"] == sha256(sent.fetched[recipient])  # the bytes the recipient was given
        assert start - dt.timedelta(seconds=1) <= parse_iso(value["at"]) <= end

    records = {(r.chain, r.seq): r for r in await bus.node.store.audit_of(sent.bus_id)}
    kinds = []
    for value in values:
        audit = value["audit"]
        record = records[(audit["chain"], audit["seq"])]
        assert record.sha256 == audit["record"] == sha256(record.data)
        kinds.append(json.loads(record.data)["kind"])
    assert kinds == ["envelope.accepted", "delivery.done", "delivery.fail"]

    for stranger in (COMMUNE, FINANCE):  # a recipient, another agency: no such document for them
        with pytest.raises(ApiFailure) as refused:
            await bus.agency(stranger).request("GET", f"/v1/documents/{sent.bus_id}/receipts")
        assert refused.value.status == 404


async def test_bus_receipt_verify_checks_saved_receipts(
    bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = await deliver(bus, 303)
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(sent.answer), encoding="utf-8")
    receipts = await receipts_of(bus, sent.bus_id)
    every = tmp_path / "receipts.json"
    every.write_text(json.dumps(receipts), encoding="utf-8")
    ca = str(bus.pki / "ca.pem")
    capsys.readouterr()

    assert main(["receipt", "verify", str(answer), str(every), "--ca", ca]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK: ") == 4, out
    assert f"{answer}: OK: {sent.bus_id}" in out
    assert f"{every} [2]: OK: {sent.bus_id}" in out
    assert "INVALID" not in out

    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(tampered(receipts["receipts"][1])), encoding="utf-8")
    assert main(["receipt", "verify", str(answer), str(forged), "--ca", ca]) == 1
    out = capsys.readouterr().out
    assert f"{answer}: OK:" in out
    assert f"{forged}: INVALID:" in out


async def log_in(browser: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    form = await browser.get("/dashboard/login")
    data = {"username": OPERATOR, "password": password, "csrf_token": csrf_of(form), "next": ""}
    return await browser.post("/dashboard/login", data=data)


async def test_the_dashboard_lists_a_documents_receipts_to_download(bus: Bus) -> None:
    sent = await deliver(bus, 304)
    values = [verify_receipt(r, bus.trust).value for r in (await receipts_of(bus, sent.bus_id))["receipts"]]
    async with bus.browser() as browser:
        page_path = f"/dashboard/documents/{sent.bus_id}"
        assert (await browser.get(page_path)).status_code == 303  # operators only
        assert (await browser.get(f"{page_path}/receipts/0.json")).status_code == 303
        assert (await log_in(browser)).status_code == 303
        page = await browser.get(page_path)
        assert page.status_code == 200
        assert "Biên nhận" in page.text
        assert "bus receipt verify" in page.text
        section = page.text.split('id="receipts"', 1)[1].split("</table>", 1)[0]
        rows = re.findall(r"<tr>(.*?)</tr>", section, re.S)[1:]  # the head's row first
        assert len(rows) == 3, section
        for row, value, label in zip(rows, values, ("Tiếp nhận", "Đã nhận", "Từ chối xử lý"), strict=True):
            assert label in row
            assert value["sha256"] in row
            assert f"{parse_iso(value['at']).astimezone(VN_TZ):%d/%m/%Y %H:%M:%S}" in row
        assert DISTRICT in rows[0]
        assert COMMUNE in rows[0]
        assert COMMUNE in rows[1]
        assert DISTRICT in rows[2]
        assert REASON in rows[2]
        assert sha256(sent.fetched[COMMUNE]) in rows[1]

        links = re.findall(r'href="(/dashboard/documents/[^"]+\.json)"', section)
        assert links == [f"{page_path}/receipts/{i}.json" for i in range(3)]
        for link, value in zip(links, values, strict=True):
            download = await browser.get(link)
            assert download.status_code == 200
            assert download.headers["content-type"].startswith("application/json")
            assert download.headers["content-disposition"].startswith("attachment; filename=")
            assert _unsigned(verify_receipt(download.content, bus.trust).value) == _unsigned(value)
        every = await browser.get(f"{page_path}/receipts.json")
        assert every.headers["content-disposition"].startswith("attachment; filename=")
        assert f'href="{page_path}/receipts.json"' in page.text
        assert [_unsigned(verify_receipt(r, bus.trust).value) for r in every.json()["receipts"]] == [
            _unsigned(v) for v in values
        ]
        assert (await browser.get(f"{page_path}/receipts/3.json")).status_code == 404
        unknown = "00000000-0000-4000-8000-000000000000"
        assert (await browser.get(f"/dashboard/documents/{unknown}/receipts.json")).status_code == 404


async def test_a_node_without_a_notary_shows_no_receipts(tmp_path: Path) -> None:
    async with dashboard_env(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}") as env:
        form = await env.client.get("/dashboard/login")
        data = {"username": OPERATOR, "password": PASSWORD, "csrf_token": csrf_of(form), "next": ""}
        assert (await env.client.post("/dashboard/login", data=data)).status_code == 303
        path = f"/dashboard/documents/{env.sample.sent.bus_id}"
        page = await env.client.get(path)
        assert page.status_code == 200
        assert "không ký biên nhận" in page.text
        assert "receipts/0.json" not in page.text
        assert (await env.client.get(f"{path}/receipts.json")).status_code == 404


async def audit_values(bus: Bus, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(r.data) async for r in bus.node.store.audit_records() if r.kind.startswith(prefix)]


async def test_a_refused_envelope_leaves_an_audit_record(bus: Bus) -> None:
    sender = bus.agency(SENDER)
    malformed = b"<?xml version='1.0' encoding='UTF-8'?><edXMLEnvelope><unclosed></edXMLEnvelope>"
    forged = make_document(PROVINCE, [DISTRICT], 305)  # claims the province as sender
    for body in (malformed, forged):
        with pytest.raises(ApiFailure) as refused:
            await sender.send(body)
        assert 400 <= refused.value.status < 500
    records = {r["received_sha256"]: r for r in await audit_values(bus, "envelope.refused")}
    assert set(records) == {sha256(malformed), sha256(forged)}
    for body in (malformed, forged):
        record = records[sha256(body)]
        assert (record["sender"], record["size"]) == (SENDER, len(body))
        assert record["reason"]
    assert PROVINCE in records[sha256(forged)]["reason"]
    assert await audit_values(bus, "envelope.accepted") == []


async def test_operator_logins_and_logouts_leave_audit_records(bus: Bus) -> None:
    async with bus.browser() as browser:
        assert (await log_in(browser, "sai mật khẩu")).status_code == 401
        assert (await log_in(browser)).status_code == 303
        page = await browser.get("/dashboard/")
        out = await browser.post("/dashboard/logout", data={"csrf_token": csrf_of(page)})
        assert out.status_code == 303
    records = await audit_values(bus, "operator.")
    assert [r["kind"] for r in records] == ["operator.login-failed", "operator.login", "operator.logout"]
    assert {(r["operator"], r["client"]) for r in records} == {(OPERATOR, "127.0.0.1")}


def _unsigned(value: dict[str, Any]) -> dict[str, Any]:
    """A receipt's statement without ``signed_at``: each download is signed anew, at its own time."""
    return {k: v for k, v in value.items() if k != "signed_at"}
