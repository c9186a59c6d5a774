"""What the axis's own Java client (SDKVXP 2.0.1) met when it was run against the mock, issue 13 and
``national-axis-protocol.md`` §6, one test per item, over real HTTP on SQLite and PostgreSQL; and the
bus's own client (``adapters/national_axis/client.py``) against the same shapes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.national_axis.client import NationalAxisClient
from adapters.national_axis.protocol import CONTENT_TYPE_FILE, hash_file, java_timestamp
from bus.errors import AxisRejectedError
from mock_axis import MockAxisConfig, load_mock_config
from tests.factory import make_document
from tests.integration.mock_axis_sdk import (
    CONFIG,
    DOCUMENT,
    G12,
    H98,
    H99,
    Axis,
    answer,
    doc_id,
    running_axis,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def config() -> MockAxisConfig:
    return load_mock_config(CONFIG)


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def axis(request: pytest.FixtureRequest, tmp_path: Path, config: MockAxisConfig) -> AsyncIterator[Axis]:
    async with running_axis(request.param, tmp_path, config) as running:
        yield running


# -- 1. a refused downloadEdoc has no body -------------------------------------------------------------


async def test_a_refused_download_is_an_empty_body_with_the_reason_in_headers(axis: Axis) -> None:
    """§6: the SDK saves whatever body downloadEdoc answers as ``<docId>.edxml`` and reports SUCCESS;
    only an empty body makes it report FAIL/100. So a refusal has none: the status code and the
    ``XroadVnpt-ErrorCode``/``-ErrorDesc`` headers say why."""
    sent = doc_id(await axis.send(H99, DOCUMENT))
    refusals = {
        "wrong secret": (G12, {"docId": sent, "filePath": "xml"}, "not-the-secret-of-G12-at-all", 401),
        "another system's document": (H98, {"docId": sent, "filePath": "xml"}, None, 404),
        "unknown DocId": (G12, {"docId": "no-such-doc", "filePath": "xml"}, None, 404),
        "no docId": (G12, {"filePath": "xml"}, None, 400),
    }
    for case, (system, params, key, status) in refusals.items():
        response = await axis.call(system, "downloadEdoc", params, method="GET", key=key)
        assert (response.status_code, response.content) == (status, b""), case
        assert response.headers["XroadVnpt-ErrorCode"] == str(status), case
        assert response.headers["XroadVnpt-ErrorDesc"], case
        assert response.headers["XroadVnpt-ErrorDesc"].isascii(), case
    unknown = await axis.call(G12, "downloadEdoc", {"docId": "no-such-doc"}, method="GET")
    assert unknown.headers["XroadVnpt-ErrorDesc"] == f"no document no-such-doc addressed to system {G12}"
    wrong = await axis.call(G12, "downloadEdoc", {"docId": sent}, method="GET", key="x" * 20)
    assert wrong.headers["XroadVnpt-ErrorDesc"].startswith("authentication failed")
    # A fault refuses a download the same way: a 503 page must not be saved as the document either.
    axis.faults.down = True
    down = await axis.call(G12, "downloadEdoc", {"docId": sent}, method="GET")
    assert (down.status_code, down.content, down.headers["XroadVnpt-ErrorCode"]) == (503, b"", "503")
    axis.faults.down = False
    # And the document itself still comes whole to its recipient.
    fetched = await axis.call(G12, "downloadEdoc", {"docId": sent, "filePath": "xml"}, method="GET")
    assert (fetched.status_code, fetched.content) == (200, DOCUMENT)
    assert "XroadVnpt-ErrorCode" not in fetched.headers


# -- 2. the shapes of `to` --------------------------------------------------------------------------------


async def test_to_is_a_string_an_array_of_strings_or_an_array_of_objects_with_a_code(axis: Axis) -> None:
    """§6: real callers send `to` as a string (the gateway example), an array of strings, or an array
    of objects with ``code``; the SDK sends the JSON text of the value."""
    shapes = [
        '"000.00.00.G12"',
        '["000.00.00.G12"]',
        '[{"code":"000.00.00.G12"}]',
        '[{"code":"000.00.00.G12","name":"Bộ Tài chính","id":"12"}]',  # other fields are ignored
        '[{"code":"000.00.00.G12"},"000.00.00.H98"]',  # mixed, one copy per recipient
    ]
    sent = [doc_id(await axis.send(H99, DOCUMENT, to=to)) for to in shapes]
    for_g12 = await axis.received(G12)
    assert [i["docId"] for i in for_g12] == sent  # each send reached G12 (its first recipient)
    assert {i["to"] for i in for_g12} == {"000.00.00.G12"}
    assert [i["to"] for i in await axis.received(H98)] == ["000.00.00.H98"]
    refused = {
        "[]": "to must be",
        '[{"organId":"000.00.00.G12"}]': "to[0] has no code",
        '[{"code":""}]': "to[0] has no code",
        "[12]": "to[0] must be an OrganId or an object with a code",
        '{"code":"000.00.00.G12"}': "to must be",  # an object, not an array of them
        '[{"code":"not-an-organ-id"}]': "recipient",
    }
    for to, reason in refused.items():
        bad = answer(await axis.send(H99, DOCUMENT, to=to))
        assert (bad["status"], bad["ErrorCode"]) == ("FAIL", "400"), to
        assert reason in bad["ErrorDesc"], (to, bad["ErrorDesc"])
    shape_help = answer(await axis.send(H99, DOCUMENT, to="[]"))["ErrorDesc"]
    assert '[{"code":"000.00.00.G22"}]' in shape_help  # the refusal shows the shapes it takes
    assert len(await axis.received(G12)) == len(shapes)  # nothing refused was stored


# -- 4. getReceivedEdocList's filters ---------------------------------------------------------------------


async def test_received_list_honours_dates_status_and_pages(axis: Axis) -> None:
    """§6: real callers add fromDate, toDate, status, pageSize, pageIndex. Their formats on the real
    axis are not known; the mock reads the usual ones and refuses anything else with the list."""
    sent = []
    for number in range(3):
        sent.append(doc_id(await axis.send(H99, make_document("000.00.01.H99", ["000.00.00.G12"], number))))
        await asyncio.sleep(0.01)  # distinct created_time, to the millisecond
    first, done, last = sent
    await axis.ok(G12, "updateStatus", {"status": "processing", "docId": first})
    await axis.ok(G12, "updateStatus", {"status": "done", "docId": done})
    listed = {i["docId"]: i for i in await axis.received(G12)}
    assert list(listed) == [first, last]  # done is not listed unless asked for
    created = {doc: dt.datetime.fromisoformat(listed[doc]["created_time"]) for doc in (first, last)}
    today = listed[first]["created_time"][:10]  # the axis's day (Vietnam), yyyy-MM-dd
    day = dt.date.fromisoformat(today)
    last_day = dt.date.fromisoformat(listed[last]["created_time"][:10])  # the same, unless at midnight

    async def ids(**filters: str) -> list[str]:
        params = {"servicetype": "eDoc", "messagetype": "edoc", **filters}
        return [i["docId"] for i in (await axis.ok(G12, "getReceivedEdocList", params))["data"]]

    assert await ids(status="pending") == [last]
    assert await ids(status="processing") == [first]
    assert await ids(status="done") == [done]
    assert await ids(pageSize="1") == [first]
    assert await ids(pageSize="1", pageIndex="2") == [last]
    assert await ids(pageSize="1", pageIndex="3") == []
    assert await ids(pageSize="5", pageIndex="1") == [first, last]
    # Dates: a day names the whole day; a time names its second, or its millisecond.
    for form in ("%Y-%m-%d", "%d/%m/%Y"):
        assert await ids(fromDate=day.strftime(form), toDate=last_day.strftime(form)) == [first, last]
    yesterday, tomorrow = day - dt.timedelta(days=1), last_day + dt.timedelta(days=1)
    assert await ids(toDate=yesterday.isoformat()) == []
    assert await ids(fromDate=tomorrow.strftime("%d/%m/%Y")) == []
    assert await ids(fromDate=listed[last]["created_time"]) == [last]  # ISO 8601, as the list shows it
    assert await ids(toDate=listed[first]["created_time"]) == [first]  # inclusive, to the millisecond
    assert await ids(fromDate=java_timestamp(created[last])) == [last]  # the SDK's own format
    assert await ids(fromDate=created[last].astimezone(dt.UTC).isoformat()) == [last]  # any offset
    to_the_second = created[last].strftime("%d/%m/%Y %H:%M:%S")
    assert await ids(toDate=to_the_second) == [first, last]
    assert await ids(fromDate=today, status="done", pageSize="1") == [done]
    # The faults apply to the page the caller asked for: newest first, then paged.
    axis.faults.reorder = True
    assert await ids(pageSize="1") == [last]
    axis.faults.reorder = False

    refusals = {
        "fromDate": ({"fromDate": "2026-31-12"}, "fromDate '2026-31-12' is not a date"),
        "toDate": ({"toDate": "30/02/2026"}, "toDate '30/02/2026' is not a date"),
        "order": ({"fromDate": tomorrow.isoformat(), "toDate": last_day.isoformat()}, "is after toDate"),
        "status": ({"status": "received"}, "status must be pending, processing, done or fail"),
        "pageSize 0": ({"pageSize": "0"}, "pageSize must be a whole number from 1 to 1000"),
        "pageSize text": ({"pageSize": "ten"}, "pageSize must be a whole number from 1 to 1000"),
        "pageSize big": ({"pageSize": "1001"}, "pageSize must be a whole number from 1 to 1000"),
        "pageIndex 0": ({"pageSize": "5", "pageIndex": "0"}, "pageIndex counts pages from 1"),
        "pageIndex alone": ({"pageIndex": "2"}, "pageIndex needs pageSize"),
    }
    for case, (filters, reason) in refusals.items():
        params = {"servicetype": "eDoc", "messagetype": "edoc", **filters}
        refused = answer(await axis.call(G12, "getReceivedEdocList", params))
        assert (refused["status"], refused["ErrorCode"]) == ("FAIL", "400"), case
        assert reason in refused["ErrorDesc"], (case, refused["ErrorDesc"])
    formats = answer(await axis.call(G12, "getReceivedEdocList", {"fromDate": "yesterday"}))["ErrorDesc"]
    assert "yyyy-MM-dd" in formats
    assert "dd/MM/yyyy" in formats
    assert "ddMMyyyy'T'HHmmss+SSSS" in formats


# -- 5. a stricter axis: freshness window and nonce memory ---------------------------------------------


async def test_old_timestamps_pass_unless_a_freshness_window_or_nonce_memory_is_switched_on(
    axis: Axis,
) -> None:
    """§6: the SDK stamps a request once per service object, so a long-lived client sends an old
    timestamp on every call, and the same one on two identical calls. The real axis's rule is
    unknown: by default the mock accepts both; the two faults make it strict."""
    old = "15032024T101530+0042"  # the protocol notes' worked example, long ago
    for _ in range(2):  # old, and the very same request twice
        response = await axis.call(G12, "getAgenciesList", body=b"{}", timestamp=old)
        assert (response.status_code, answer(response)["status"]) == (200, "OK")

    switched = await axis.switch(freshness_window_s=300)
    assert (switched["freshness_window_s"], switched["nonce_memory"]) == (300, False)
    now = dt.datetime.now(dt.UTC)
    for stamp, reason in [
        (old, "s old"),
        (java_timestamp(now + dt.timedelta(minutes=10)), "s ahead of the axis's clock"),
        ("2024-03-15T10:15:30", "ddMMyyyy'T'HHmmss+SSSS"),
    ]:
        refused = await axis.call(G12, "getAgenciesList", body=b"{}", timestamp=stamp)
        assert refused.status_code == 401, stamp
        assert (answer(refused)["status"], answer(refused)["ErrorCode"]) == ("FAIL", "401"), stamp
        assert reason in answer(refused)["ErrorDesc"], answer(refused)["ErrorDesc"]
        assert "freshness_window_s" in answer(refused)["ErrorDesc"]
    fresh = java_timestamp(now - dt.timedelta(seconds=30))
    assert (await axis.call(G12, "getAgenciesList", body=b"{}", timestamp=fresh)).status_code == 200

    axis.faults.nonce_memory = True  # in-process, the same object /_mock/faults sets
    stamp = java_timestamp(dt.datetime.now(dt.UTC))
    assert (await axis.call(G12, "getAgenciesList", body=b"{}", timestamp=stamp)).status_code == 200
    replayed = await axis.call(G12, "getAgenciesList", body=b"{}", timestamp=stamp)
    assert (replayed.status_code, answer(replayed)["ErrorCode"]) == (401, "401")
    assert "nonce_memory" in answer(replayed)["ErrorDesc"]
    # Another request with the same timestamp is another nonce: only an identical one is a replay.
    count = await axis.call(G12, "countReceiveEdoc", {"servicetype": "eDoc"}, body=b"{}", timestamp=stamp)
    assert count.status_code == 200
    params = {"servicetype": "eDoc", "messagetype": "edoc"}
    sends = [
        await axis.call(
            H99,
            "sendEdoc",
            params,
            body=DOCUMENT + b"\r\n",
            content_type=CONTENT_TYPE_FILE,
            file_hash=hash_file(DOCUMENT),
            timestamp=stamp,
        )
        for _ in range(2)
    ]
    assert [s.status_code for s in sends] == [200, 401]
    assert answer(sends[1])["DocId"] == ""
    [item] = await axis.received(G12)  # the replayed send stored nothing
    download = {"docId": item["docId"], "filePath": "xml"}
    got = await axis.call(G12, "downloadEdoc", download, method="GET", timestamp=stamp)
    again = await axis.call(G12, "downloadEdoc", download, method="GET", timestamp=stamp)
    assert (got.status_code, got.content) == (200, DOCUMENT)
    assert (again.status_code, again.content, again.headers["XroadVnpt-ErrorCode"]) == (401, b"", "401")

    reset = (await axis.http.post(f"{axis.url}/_mock/reset")).json()
    assert (reset["freshness_window_s"], reset["nonce_memory"]) == (0, False)
    response = await axis.call(G12, "getAgenciesList", body=b"{}", timestamp=old)
    assert response.status_code == 200  # lenient again


# -- the bus's own client against the same shapes -------------------------------------------------------


async def test_the_bus_client_receives_every_to_shape_and_is_refused_downloads(axis: Axis) -> None:
    """The bus's client (``adapters/national_axis/client.py``) on the receiving end of what real
    callers send, and refused downloads as it sees them: a refusal (4xx, no body), never a document."""

    def client(system: str, secret: str | None = None) -> NationalAxisClient:
        key = secret if secret is not None else axis.config.secret_of(system)
        assert key is not None
        return NationalAxisClient(axis.url, system, key, timeout=10)

    province, ministry, other = client(H99), client(G12), client(H98)
    stranger = client(G12, "a-wrong-secret-0123456789")
    try:
        documents = [make_document("000.00.01.H99", ["000.00.00.G12"], n) for n in range(4)]
        shapes = ['"000.00.00.G12"', '["000.00.00.G12"]', '[{"code":"000.00.00.G12"}]']
        sent = [doc_id(await axis.send(H99, d, to=to)) for d, to in zip(documents[:3], shapes, strict=True)]
        sent.append(await province.send_edoc(documents[3], sender="000.00.01.H99", to=["000.00.00.G12"]))

        items = await ministry.received()
        assert [i.doc_id for i in items] == sent
        assert {(i.sender, i.recipient, i.status) for i in items} == {("000.00.01.H99", G12, "pending")}
        for item, document in zip(items, documents, strict=True):
            assert await ministry.get_edoc(item.doc_id) == document
            assert await ministry.download_edoc(item.doc_id) == document

        for who, doc, code in [
            (stranger, sent[0], "401"),
            (other, sent[0], "404"),
            (ministry, "nope", "404"),
        ]:
            with pytest.raises(AxisRejectedError) as refused:
                await who.download_edoc(doc)
            assert refused.value.code == code
            assert doc in refused.value.description

        # A stricter axis does not trouble it: it stamps every request afresh.
        await axis.switch(freshness_window_s=5, nonce_memory=True)
        last = await province.send_edoc(documents[0], sender="000.00.01.H99", to=["000.00.00.G12"])
        assert await ministry.count_received() == len(sent) + 1
        for item in await ministry.received():
            assert await ministry.get_edoc(item.doc_id)
            await ministry.update_status(item.doc_id, "done")
        assert await ministry.received() == []
        assert [s["receiveStatus"] for s in await province.sent(last)] == ["done"]
    finally:
        for each in (province, ministry, other, stranger):
            await each.close()
