"""The agency HTTP API on a whole node: real RabbitMQ, a real database (SQLite and PostgreSQL), the
inbox worker consuming; HTTP is driven in-process through the ASGI interface."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from lxml import etree

from adapters.http import create_app
from adapters.http.client import AgencyClient, ApiFailure
from bus.auth import sign_request
from bus.dsig import TrustStore, load_certificates, load_private_key, sign_tree, verify_tree
from bus.settings import Settings
from bus.xmlparse import parse_untrusted
from entrypoints.runtime import Node
from tests.factory import make_document, make_status

pytestmark = pytest.mark.asyncio

PROVINCE = "000.00.00.H99"  # must sign (require_signature in the example file)
HOME_AFFAIRS = "000.00.01.H99"
DISTRICT = "000.00.21.H99"
COMMUNE = "000.01.21.H99"
ClientFor = Callable[[str], AgencyClient]


@pytest_asyncio.fixture
async def node(node_settings: Settings) -> AsyncIterator[Node]:
    node = await Node.start(node_settings)
    yield node
    await node.stop()


@pytest.fixture
def client_for(node: Node) -> ClientFor:
    transport = httpx.ASGITransport(app=create_app(node.api))

    def make(agency: str) -> AgencyClient:
        return AgencyClient("http://bus", agency, f"demo-only-{agency}".encode(), transport=transport)

    return make


def signed_by(pki_dir: Path, agency: str, envelope: bytes) -> bytes:
    tree = parse_untrusted(envelope)
    key = load_private_key(pki_dir / "nodes" / f"{agency}.key")
    [cert] = load_certificates(pki_dir / "nodes" / f"{agency}.pem")
    sign_tree(tree, key, cert)
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


async def wait_for_inbox(client: AgencyClient, count: int, within_s: float = 15.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + within_s
    while True:
        items = await client.inbox()
        if len(items) >= count or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.05)


async def test_document_travels_from_push_to_pull_with_a_full_timeline(
    client_for: ClientFor, pki_dir: Path
) -> None:
    province, district, commune = client_for(PROVINCE), client_for(DISTRICT), client_for(COMMUNE)
    envelope = signed_by(pki_dir, PROVINCE, make_document(PROVINCE, [DISTRICT, COMMUNE], 101))
    accepted = await province.send(envelope)
    assert [r["organ_id"] for r in accepted["recipients"]] == [DISTRICT, COMMUNE]

    [item] = await wait_for_inbox(commune, 1)
    assert item["bus_id"] == accepted["bus_id"]
    assert item["sender"] == PROVINCE
    body = await commune.fetch(int(item["id"]))  # type: ignore[call-overload]
    # What the recipient gets verifies twice: the province's signature and the bus's own.
    signatures = verify_tree(parse_untrusted(body), TrustStore(load_certificates(pki_dir / "ca.pem")))
    [province_cert] = load_certificates(pki_dir / "nodes" / f"{PROVINCE}.pem")
    [bus_cert] = load_certificates(pki_dir / "nodes" / "000.00.90.H99.pem")
    assert [s.signer for s in signatures] == [province_cert, bus_cert]
    await commune.acknowledge(int(item["id"]), "done")  # type: ignore[call-overload]
    assert await commune.inbox() == []  # done: no longer pending
    assert len(await commune.inbox(pending=False)) == 1

    await wait_for_inbox(district, 1)
    status = make_status(DISTRICT, PROVINCE, accepted["document_id"], "03", description="Vào sổ số 845")
    await district.send(status)
    [status_item] = await wait_for_inbox(province, 1)
    assert status_item["kind"] == "status"

    document = await province.document(accepted["bus_id"])
    by_recipient = {r["organ_id"]: r for r in document["recipients"]}
    assert by_recipient[COMMUNE]["state"] == "done"
    assert by_recipient[DISTRICT]["business_status"] == "03"
    states = [(e["recipient"], e["state"]) for e in document["timeline"]]
    for expected in [
        (COMMUNE, "accepted"),
        (COMMUNE, "queued"),
        (COMMUNE, "fetched"),
        (COMMUNE, "done"),
        (DISTRICT, "accepted"),
        (DISTRICT, "queued"),
        (DISTRICT, "status"),
    ]:
        assert expected in states
    labels = {e["state"]: e["label"] for e in document["timeline"]}
    assert labels["fetched"] == "Đơn vị nhận đã tải về"
    [sent] = await province.sent()
    assert sent["bus_id"] == accepted["bus_id"]


async def test_every_refusal_is_clear_and_changes_nothing(client_for: ClientFor, pki_dir: Path) -> None:
    home, district = client_for(HOME_AFFAIRS), client_for(DISTRICT)
    # Forged sender: Sở Nội vụ sends an envelope whose From is the district.
    with pytest.raises(ApiFailure) as caught:
        await home.send(make_document(DISTRICT, [COMMUNE], 1))
    assert (caught.value.status, caught.value.code) == (403, "forged-sender")
    # The province must sign.
    with pytest.raises(ApiFailure) as caught:
        await client_for(PROVINCE).send(make_document(PROVINCE, [COMMUNE], 2))
    assert (caught.value.status, caught.value.code) == (400, "signature-invalid")
    # Every problem at once, with paths.
    broken = make_document(HOME_AFFAIRS, [COMMUNE, COMMUNE], 3, date="2026/13/45")
    with pytest.raises(ApiFailure) as caught:
        await home.send(broken)
    assert caught.value.status == 400
    assert caught.value.code == "invalid-envelope"
    problems = caught.value.payload["problems"]
    assert len(problems) >= 2
    assert all(p["path"].startswith("/edXML") for p in problems)
    # Hostile and malformed XML.
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>'
    for body, code in [(bomb, "unsafe-xml"), (b"<edXML:edXML><unclosed>", "malformed-xml")]:
        with pytest.raises(ApiFailure) as caught:
            await home.send(body)
        assert (caught.value.status, caught.value.code) == (400, code)
    # A status about a document this axis never carried, from its own sender (take-back): nowhere to go.
    with pytest.raises(ApiFailure) as caught:
        await home.send(make_status(HOME_AFFAIRS, HOME_AFFAIRS, "000.00.01.H99,2026/11/20,999/X", "13"))
    assert (caught.value.status, caught.value.code) == (400, "unknown-document")
    # Duplicate: the second answer names the first acceptance.
    good = make_document(HOME_AFFAIRS, [DISTRICT], 4)
    first = await home.send(good)
    with pytest.raises(ApiFailure) as caught:
        await home.send(good)
    assert (caught.value.status, caught.value.code) == (409, "duplicate")
    assert caught.value.payload["bus_id"] == first["bus_id"]
    # Only the good envelope reached anyone, and the bus kept serving throughout.
    await wait_for_inbox(district, 1)
    await asyncio.sleep(0.3)
    assert [i["bus_id"] for i in await district.inbox()] == [first["bus_id"]]
    assert await client_for(COMMUNE).inbox() == []


async def test_oversized_body_is_413(node_settings: Settings, pki_dir: Path) -> None:
    settings = node_settings.model_copy(
        update={"http": node_settings.http.model_copy(update={"max_body_bytes": 20_000})}
    )
    node = await Node.start(settings, workers=False)
    try:
        client = AgencyClient(
            "http://bus",
            HOME_AFFAIRS,
            f"demo-only-{HOME_AFFAIRS}".encode(),
            transport=httpx.ASGITransport(app=create_app(node.api)),
        )
        with pytest.raises(ApiFailure) as caught:
            await client.send(make_document(HOME_AFFAIRS, [DISTRICT], 5, padding=30_000))
        assert (caught.value.status, caught.value.code) == (413, "too-large")
        accepted = await client.send(make_document(HOME_AFFAIRS, [DISTRICT], 6, padding=5_000))
        assert accepted["bus_id"]
    finally:
        await node.stop()


async def test_authentication_refusals(node: Node, client_for: ClientFor) -> None:
    app = create_app(node.api)
    transport = httpx.ASGITransport(app=app)
    secret = f"demo-only-{HOME_AFFAIRS}".encode()
    async with httpx.AsyncClient(transport=transport, base_url="http://bus") as http:
        missing = await http.get("/v1/inbox")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthenticated"

        async def call(headers: dict[str, str], body: bytes = b"", method: str = "GET") -> httpx.Response:
            return await http.request(method, "/v1/inbox", headers=headers, content=body or None)

        wrong = sign_request(b"not-the-secret", HOME_AFFAIRS, "GET", "/v1/inbox")
        assert (await call(wrong)).json()["error"]["code"] == "bad-signature"
        stale = sign_request(secret, HOME_AFFAIRS, "GET", "/v1/inbox", now=time.time() - 3600)
        assert (await call(stale)).json()["error"]["code"] == "stale-request"
        unknown = sign_request(secret, "000.09.99.H99", "GET", "/v1/inbox")
        assert (await call(unknown)).json()["error"]["code"] == "unknown-agency"
        good = sign_request(secret, HOME_AFFAIRS, "GET", "/v1/inbox")
        assert (await call(good)).status_code == 200
        replay = await call(good)
        assert (replay.status_code, replay.json()["error"]["code"]) == (401, "replayed-request")
        # The signature covers the body: a changed body is refused.
        body = make_document(HOME_AFFAIRS, [DISTRICT], 7)
        signed = sign_request(secret, HOME_AFFAIRS, "POST", "/v1/envelopes", body)
        tampered = await http.post(
            "/v1/envelopes", headers=signed, content=body.replace(b"Subject>V", b"Subject>W")
        )
        assert (tampered.status_code, tampered.json()["error"]["code"]) == (401, "body-digest-mismatch")
        # ... and the path: a signature for one route does not open another.
        other = sign_request(secret, HOME_AFFAIRS, "GET", "/v1/sent")
        assert (await call(other)).json()["error"]["code"] == "bad-signature"


async def test_agencies_read_only_their_own(client_for: ClientFor) -> None:
    home, district, commune = client_for(HOME_AFFAIRS), client_for(DISTRICT), client_for(COMMUNE)
    accepted = await home.send(make_document(HOME_AFFAIRS, [DISTRICT], 8))
    [item] = await wait_for_inbox(district, 1)
    with pytest.raises(ApiFailure) as caught:
        await commune.fetch(int(item["id"]))  # type: ignore[call-overload]
    assert caught.value.status == 404
    with pytest.raises(ApiFailure) as caught:
        await commune.acknowledge(int(item["id"]), "done")  # type: ignore[call-overload]
    assert caught.value.status == 404
    with pytest.raises(ApiFailure) as caught:
        await commune.document(accepted["bus_id"])
    assert caught.value.status == 404  # not 403: see test_a_document_of_others_looks_missing
    assert (await district.document(accepted["bus_id"]))["sender"] == HOME_AFFAIRS
    with pytest.raises(ApiFailure) as caught:
        await district.acknowledge(int(item["id"]), "fail")  # type: ignore[call-overload]
    assert (caught.value.status, caught.value.code) == (400, "bad-acknowledgement")  # fail needs a reason
    await district.acknowledge(int(item["id"]), "done")  # type: ignore[call-overload]
    with pytest.raises(ApiFailure) as caught:
        await district.acknowledge(int(item["id"]), "processing")  # type: ignore[call-overload]
    assert (caught.value.status, caught.value.code) == (409, "already-final")  # done stays done
    assert await district.inbox() == []
    for params in ({"limit": "-1"}, {"after": "99999999999999999999999"}, {"limit": "²"}):
        with pytest.raises(ApiFailure) as caught:
            await district.request("GET", "/v1/inbox", params=params)
        assert (caught.value.status, caught.value.code) == (400, "bad-parameter")
    agencies = await commune.agencies()
    assert {a["organ_id"] for a in agencies["agencies"]} >= {HOME_AFFAIRS, DISTRICT, COMMUNE}


async def test_openapi_describes_every_route(node: Node) -> None:
    app = create_app(node.api)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bus") as http:
        document = (await http.get("/v1/openapi.json")).json()
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    served = {
        (route.path, method)
        for route in app.routes
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }
    assert documented == served


def _signed(agency: str, method: str, target: str, body: bytes = b"") -> dict[str, str]:
    return sign_request(f"demo-only-{agency}".encode(), agency, method, target, body)


async def test_hostile_headers_and_parameters_are_refused_cleanly(node: Node) -> None:
    """Issue 10 item 3: every header and parameter the API reads is bounded and parsed whole. A bad
    one is a 401 (signing headers) or a 400/404/413, with a short message; never a 500."""
    transport = httpx.ASGITransport(app=create_app(node.api))
    async with httpx.AsyncClient(transport=transport, base_url="http://bus") as http:

        async def expect(
            status: int, code: str, method: str, target: str, headers: Any, body: bytes = b""
        ) -> None:
            answer = await http.request(method, target, headers=headers, content=body or None)
            error = answer.json()["error"]
            assert (answer.status_code, error["code"]) == (status, code), (target, answer.text[:300])
            assert len(error["message"]) < 300  # what the client sent is not echoed back whole

        good = _signed(HOME_AFFAIRS, "GET", "/v1/inbox")
        # The OverflowError of the issue: 400 digits of timestamp.
        await expect(401, "bad-timestamp", "GET", "/v1/inbox", {**good, "X-Bus-Timestamp": "9" * 400})
        # A non-ASCII signature made hmac.compare_digest raise TypeError.
        latin = [(k.encode(), v.encode()) for k, v in good.items() if k != "Authorization"]
        latin.append((b"Authorization", b"BUS-HMAC-SHA256 Signature=" + b"\xff" * 64))
        await expect(401, "bad-authorization", "GET", "/v1/inbox", latin)
        await expect(401, "unknown-agency", "GET", "/v1/inbox", {**good, "X-Bus-Agency": "0" * 10_000})
        # Two values of a signed header: which one was checked would depend on who reads it.
        twice = [*good.items(), ("X-Bus-Nonce", "ffffffffffffffffffffffffffffffff")]
        await expect(401, "duplicate-header", "GET", "/v1/inbox", twice)
        # int() of more than 4,300 digits raises ValueError: in a parameter and in a path.
        target = "/v1/inbox?limit=" + "9" * 5000
        await expect(400, "bad-parameter", "GET", target, _signed(HOME_AFFAIRS, "GET", target))
        target = "/v1/inbox/" + "9" * 5000
        await expect(404, "not-found", "GET", target, _signed(HOME_AFFAIRS, "GET", target))
        target = "/v1/inbox?pending=maybe"  # was read as true
        await expect(400, "bad-parameter", "GET", target, _signed(HOME_AFFAIRS, "GET", target))
        # "²".isdigit() is true and int("²") raises: a Content-Length only another server would pass on.
        await expect(400, "bad-header", "GET", "/v1/inbox", {**good, "Content-Length": "²".encode("latin-1")})
        body = make_document(HOME_AFFAIRS, [DISTRICT], 9)
        signed = _signed(HOME_AFFAIRS, "POST", "/v1/envelopes", body)
        await expect(
            400, "bad-header", "POST", "/v1/envelopes", {**signed, "Content-Type": "x" * 10_000}, body
        )
        # JSON nested deeper than the parser's recursion limit (RecursionError).
        nested = b"[" * 5000 + b"]" * 5000
        target = "/v1/inbox/1/ack"
        headers = {**_signed(HOME_AFFAIRS, "POST", target, nested), "Content-Type": "application/json"}
        await expect(400, "bad-acknowledgement", "POST", target, headers, nested)
        long_reason = json.dumps({"state": "fail", "reason": "x" * 1001}).encode()
        headers = {**_signed(HOME_AFFAIRS, "POST", target, long_reason), "Content-Type": "application/json"}
        await expect(400, "bad-acknowledgement", "POST", target, headers, long_reason)
        # Only an envelope may be large: any other body over 64 KiB is refused before it is read.
        big = b"{}" + b" " * 70_000
        headers = {**_signed(HOME_AFFAIRS, "POST", target, big), "Content-Type": "application/json"}
        await expect(413, "too-large", "POST", target, headers, big)
        # The same requests, well formed, are served: the refusals above were about the headers.
        assert (
            await http.get("/v1/inbox", headers=_signed(HOME_AFFAIRS, "GET", "/v1/inbox"))
        ).status_code == 200


async def test_a_document_of_others_looks_missing(node: Node, client_for: ClientFor) -> None:
    """Issue 10 item 6: bus ids are uuid5 of public facts, so an agency that is neither the sender nor
    a recipient must not learn from the answer whether a document exists (it was 403 vs 404)."""
    home, district = client_for(HOME_AFFAIRS), client_for(DISTRICT)
    accepted = await home.send(make_document(HOME_AFFAIRS, [DISTRICT], 10))
    assert (await district.document(accepted["bus_id"]))["bus_id"] == accepted["bus_id"]  # a recipient
    assert (await home.document(accepted["bus_id"]))["bus_id"] == accepted["bus_id"]  # its sender
    missing = str(uuid.uuid5(uuid.NAMESPACE_URL, "never sent"))
    transport = httpx.ASGITransport(app=create_app(node.api))
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bus") as http:
        for bus_id in (accepted["bus_id"], missing):
            target = f"/v1/documents/{bus_id}"
            response = await http.get(target, headers=_signed(COMMUNE, "GET", target))
            answers.append(
                (response.status_code, dict(response.headers), response.text.replace(bus_id, "ID"))
            )
    assert answers[0] == answers[1]
    assert answers[0][0] == 404


async def test_a_method_a_path_lacks_is_405_with_allow(node: Node) -> None:
    """RFC 9110 section 15.5.6: a 405 names the methods the resource has (the fuzzer found none)."""
    transport = httpx.ASGITransport(app=create_app(node.api))
    async with httpx.AsyncClient(transport=transport, base_url="http://bus") as http:
        for method, path, allowed in [
            ("DELETE", "/v1/inbox", {"GET", "HEAD"}),
            ("TRACE", "/v1/envelopes", {"POST"}),
            ("PUT", "/v1/inbox/1/ack", {"POST"}),
            ("POST", "/healthz", {"GET", "HEAD"}),
        ]:
            answer = await http.request(method, path)
            assert answer.status_code == 405
            assert answer.json()["error"]["code"] == "method-not-allowed"
            assert set(answer.headers["allow"].replace(" ", "").split(",")) == allowed
