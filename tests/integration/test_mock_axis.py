"""The mock national axis over real HTTP, on SQLite and on PostgreSQL.

Every request is built with :func:`signed_headers` (``mock_axis_sdk.py``), the way the Java SDK
builds it, so these tests exercise the real wire: signed ``XroadVnpt-*`` headers, the ``\\r\\n`` the
SDK appends to a file, ``hash-file`` without zero padding, ``Expect: 100-continue``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adapters.national_axis.protocol import (
    CONTENT_TYPE_FILE,
    hash_file,
    java_timestamp,
    signed_headers,
)
from bus.errors import ConfigError
from bus.organ_id import OrganId
from mock_axis import MockAxisConfig, MockFaults, load_mock_config, serve_mock_axis
from mock_axis.store import MockAxisStore
from tests.conftest import ROOT
from tests.factory import make_document, make_status
from tests.integration.conftest import fresh_database
from tests.integration.mock_axis_sdk import (
    CONFIG,
    DOCUMENT,
    G12,
    H98,
    H99,
    Axis,
    running_axis,
)
from tests.integration.mock_axis_sdk import answer as _answer
from tests.integration.mock_axis_sdk import doc_id as _doc_id

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def config() -> MockAxisConfig:
    return load_mock_config(CONFIG)


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def axis(request: pytest.FixtureRequest, tmp_path: Path, config: MockAxisConfig) -> AsyncIterator[Axis]:
    async with running_axis(request.param, tmp_path, config) as running:
        yield running


# -- documents and status messages -------------------------------------------------------------------


async def test_send_list_get_done_gone(axis: Axis) -> None:
    response = await axis.send(H99, DOCUMENT, sender="000.00.01.H99")
    doc_id = _doc_id(response)
    assert response.content.isascii()
    assert b"Th\\u00e0nh c\\u00f4ng" in response.content  # ErrorDesc "Thành công", \u-escaped

    [item] = await axis.received(G12)
    assert item["docId"] == doc_id
    assert (item["from"], item["to"], item["status"]) == ("000.00.01.H99", "000.00.00.G12", "pending")
    assert (item["messageType"], item["serviceType"]) == ("edoc", "eDoc")
    assert {"created_time", "updated_time", "status_desc"} <= item.keys()
    assert await axis.received(H98) == []  # not addressed to it
    assert (await axis.ok(G12, "countReceiveEdoc", {"servicetype": "eDoc"}))["count"] == 1

    fetched = await axis.ok(G12, "getEdoc", {"docId": doc_id, "filePath": "xml"})
    assert base64.b64decode(fetched["data"]) == DOCUMENT  # the SDK's trailing \r\n is not kept
    downloaded = await axis.call(G12, "downloadEdoc", {"docId": doc_id, "filePath": "xml"}, method="GET")
    assert (downloaded.status_code, downloaded.content) == (200, DOCUMENT)

    await axis.ok(G12, "updateStatus", {"status": "processing", "docId": doc_id})
    assert [i["status"] for i in await axis.received(G12)] == ["processing"]
    await axis.ok(G12, "updateStatus", {"status": "done", "docId": doc_id})
    assert await axis.received(G12) == []
    assert (await axis.ok(G12, "countReceiveEdoc", {"servicetype": "eDoc"}))["count"] == 0
    await axis.ok(G12, "updateStatus", {"status": "processing", "docId": doc_id})  # late: done is final
    assert await axis.received(G12) == []

    [sent] = (await axis.ok(H99, "getSentEdocList", {"servicetype": "eDoc", "messagetype": "edoc"}))["data"]
    assert (sent["senderDocId"], sent["receiverDocId"], sent["toCode"]) == (doc_id, doc_id, "000.00.00.G12")
    assert (sent["receiveStatus"], sent["fromCode"], sent["notation"]) == ("done", "000.00.01.H99", "UBND-VP")
    assert sent["title"] == "V/v báo cáo tình hình chuyển đổi số"


async def test_only_the_recipient_may_fetch_or_acknowledge(axis: Axis) -> None:
    doc_id = _doc_id(await axis.send(H99, DOCUMENT))
    for operation in ("getEdoc", "updateStatus"):
        response = await axis.call(H98, operation, {"docId": doc_id, "status": "done"}, body=b"{}")
        assert (_answer(response)["status"], _answer(response)["ErrorCode"]) == ("FAIL", "404")
    download = await axis.call(H98, "downloadEdoc", {"docId": doc_id}, method="GET")
    assert download.status_code == 404  # never a 200 that the SDK would save as the file
    assert len(await axis.received(G12)) == 1


async def test_several_recipients_each_get_a_copy_and_the_first_docid_is_returned(axis: Axis) -> None:
    envelope = make_document("000.00.01.H99", ["000.00.00.G12", "000.00.03.H98", "000.00.00.G12"], 2)
    doc_id = _doc_id(await axis.send(H99, envelope))
    [for_g12] = await axis.received(G12)
    [for_h98] = await axis.received(H98)
    assert for_g12["docId"] == doc_id
    assert for_h98["docId"] != doc_id
    assert for_h98["to"] == "000.00.03.H98"  # the OrganId within what H98 serves
    sent = (await axis.ok(H99, "getSentEdocList", {"docId": doc_id}))["data"]
    assert sorted(s["toCode"] for s in sent) == ["000.00.00.G12", "000.00.03.H98"]
    assert {s["senderDocId"] for s in sent} == {doc_id}


async def test_the_to_parameter_wins_over_the_envelope(axis: Axis) -> None:
    # The SDK sends the JSON text of `to`: an array keeps its brackets, a string its quotes.
    _doc_id(await axis.send(H99, DOCUMENT, to='["000.00.00.H98"]'))
    _doc_id(await axis.send(H99, DOCUMENT, to='"000.00.00.H98"'))
    assert len(await axis.received(H98)) == 2
    assert await axis.received(G12) == []
    bad = _answer(await axis.send(H99, DOCUMENT, to="000.00.00.H98"))  # not JSON
    assert (bad["status"], bad["ErrorCode"]) == ("FAIL", "400")
    assert "JSON" in bad["ErrorDesc"]


async def test_status_messages_are_routed_by_response_for(axis: Axis) -> None:
    document_id = "000.00.01.H99,2026/11/20,1/UBND-VP"
    status = make_status("000.00.00.G12", "000.00.01.H99", document_id, "03")
    _doc_id(await axis.send(G12, status, message_type="status"))
    [item] = await axis.received(H99, "status")
    assert (item["messageType"], item["from"], item["to"]) == ("status", "000.00.00.G12", "000.00.01.H99")
    assert await axis.received(H99, "edoc") == []
    assert (await axis.ok(H99, "countReceiveStatus", {"servicetype": "eDoc"}))["count"] == 1
    assert (await axis.ok(H99, "countReceiveEdoc", {"servicetype": "eDoc"}))["count"] == 0
    fetched = await axis.ok(H99, "getEdoc", {"docId": item["docId"]})
    assert base64.b64decode(fetched["data"]) == status


async def test_forged_sender_is_refused(axis: Axis) -> None:
    # G12 (Bộ Tài chính) sends an envelope whose From is a unit of province H99.
    response = await axis.send(G12, DOCUMENT)
    answer = _answer(response)
    assert response.status_code == 200  # the SDK reads a sendEdoc body only from a 200/201
    assert (answer["status"], answer["ErrorCode"], answer["DocId"]) == ("FAIL", "403", "")
    assert "000.00.01.H99" in answer["ErrorDesc"]
    # Non-ASCII in ErrorDesc travels \u-escaped: the SDK reads this reply as US-ASCII.
    assert response.content.isascii()
    assert b"B\\u1ed9 T\\u00e0i ch\\u00ednh" in response.content
    assert "Bộ Tài chính" in answer["ErrorDesc"]
    # A `from` parameter naming someone else is refused even when the envelope is the sender's own.
    forged_param = _answer(await axis.send(H99, DOCUMENT, sender="000.00.00.G12"))
    assert (forged_param["status"], forged_param["ErrorCode"]) == ("FAIL", "403")
    assert await axis.received(G12) == []


async def test_unknown_recipient_is_refused_and_nothing_is_stored(axis: Axis) -> None:
    envelope = make_document("000.00.01.H99", ["000.00.00.G12", "000.00.00.H55"], 3)
    answer = _answer(await axis.send(H99, envelope))
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "404")
    assert "unknown recipient 000.00.00.H55" in answer["ErrorDesc"]
    assert await axis.received(G12) == []  # all or nothing


async def test_hostile_xml_is_refused_and_the_mock_keeps_serving(axis: Axis) -> None:
    entity = (
        b'<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<edXML>&xxe;</edXML>"
    )
    laughs = (
        b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><edXML>&lol2;</edXML>'
    )
    for hostile in (entity, laughs, b"<edXML><unclosed></edXML>"):
        answer = _answer(await axis.send(H99, hostile))
        assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "400"), answer
        assert answer["ErrorDesc"].startswith("envelope refused")
    assert "DOCTYPE" in _answer(await axis.send(H99, entity))["ErrorDesc"]
    _doc_id(await axis.send(H99, DOCUMENT))
    assert len(await axis.received(G12)) == 1


async def test_hash_file_with_and_without_the_sdk_line_break(axis: Axis) -> None:
    def params() -> dict[str, str]:
        return {"servicetype": "eDoc", "messagetype": "edoc"}

    plain = make_document("000.00.01.H99", ["000.00.00.G12"], 4)
    # No \r\n appended, hash of the body: stored as is.
    _doc_id(await axis.call(H99, "sendEdoc", params(), body=plain, file_hash=hash_file(plain)))
    # The body really ends in \r\n and hash-file covers it: stripping would break the hash, so kept.
    with_break = plain + b"\r\n"
    _doc_id(await axis.call(H99, "sendEdoc", params(), body=with_break, file_hash=hash_file(with_break)))
    stored = [await axis.ok(G12, "getEdoc", {"docId": i["docId"]}) for i in await axis.received(G12)]
    assert [base64.b64decode(s["data"]) for s in stored] == [plain, with_break]
    damaged = await axis.call(H99, "sendEdoc", params(), body=plain + b" ", file_hash=hash_file(plain))
    assert (_answer(damaged)["status"], _answer(damaged)["ErrorCode"]) == ("FAIL", "400")
    assert "hash-file" in _answer(damaged)["ErrorDesc"]


# -- authentication ------------------------------------------------------------------------------------


async def test_bad_hmac_and_unknown_system_get_401(axis: Axis) -> None:
    wrong = await axis.call(G12, "getAgenciesList", key="not-the-secret-of-G12")
    assert wrong.status_code == 401
    assert (_answer(wrong)["status"], _answer(wrong)["ErrorCode"]) == ("FAIL", "401")
    stranger = await axis.call("000.00.00.H55", "getAgenciesList", key="any-secret-at-all-here")
    assert stranger.status_code == 401
    assert "unknown system" in _answer(stranger)["ErrorDesc"]
    unsigned = await axis.http.post(f"{axis.url}/getAgenciesList", headers={"XroadVnpt-systemid": G12})
    assert unsigned.status_code == 401
    send = await axis.call(H99, "sendEdoc", {"messagetype": "edoc"}, body=DOCUMENT, key="wrong-wrong-wrong")
    assert send.status_code == 401
    assert _answer(send)["DocId"] == ""


async def test_stale_extra_keys_are_accepted_and_unsigned_headers_ignored(axis: Axis) -> None:
    doc_id = _doc_id(await axis.send(H99, DOCUMENT))
    other = _doc_id(await axis.send(H99, make_document("000.00.01.H99", ["000.00.00.G12"], 5)))
    # As the SDK's never-cleared map sends it after a list call; plus an unsigned docId naming `other`.
    stale = {
        "servicetype": "eDoc",
        "messagetype": "edoc",
        "filePath": "xml",
        "status": "done",
        "docId": doc_id,
    }
    response = await axis.call(
        G12, "updateStatus", stale, body=b"{}", extra_headers=[("XroadVnpt-docId", other)]
    )
    assert _answer(response)["status"] == "OK"
    assert [i["docId"] for i in await axis.received(G12)] == [other]


async def test_utf8_header_values_verify_byte_for_byte(axis: Axis) -> None:
    # The HMAC covers the UTF-8 bytes of the sign-header: a server that decoded the headers as latin-1
    # and encoded them again as UTF-8 would refuse this request.
    answer = await axis.ok(G12, "getAgenciesList", {"ghichu": "Đã nhận văn bản — Bộ Tài chính"})
    assert answer["data"]


# -- agencies ------------------------------------------------------------------------------------------


async def test_agency_directory(axis: Axis) -> None:
    seeded = (await axis.ok(H99, "getAgenciesList"))["data"]
    assert {a["code"] for a in seeded} == {"000.00.00.H99", "000.00.00.H98", "000.00.00.G12"}
    assert {"id", "pid", "code", "name", "mail", "oldCode"} <= seeded[0].keys()
    parent = next(a for a in seeded if a["code"] == "000.00.00.H99")

    unit = {"id": "77", "pcode": "000.00.00.H99", "code": "000.00.07.H99", "name": "Sở Tư pháp tỉnh Mẫu"}
    body = json.dumps({**unit, "mail": "stp@h99.gov.vn", "mobile": "0238", "fax": ""}, ensure_ascii=False)
    registered = await axis.call(H99, "registerAgency", body=body.encode("utf-8"))
    assert _answer(registered)["status"] == "OK"
    listed = (await axis.ok(H99, "getAgenciesList"))["data"]
    added = next(a for a in listed if a["code"] == "000.00.07.H99")
    assert (added["name"], added["pid"], added["mail"]) == (
        "Sở Tư pháp tỉnh Mẫu",
        parent["id"],
        "stp@h99.gov.vn",
    )

    level1 = (await axis.ok(H99, "getAgenciesListQD20", {"level": "1"}))["data"]
    assert "000.00.07.H99" not in {a["code"] for a in level1}
    assert {"id", "code", "name", "mail", "code102"} <= level1[0].keys()
    level2 = (await axis.ok(H99, "getAgenciesListQD20", {"level": "2"}))["data"]
    assert [a["code"] for a in level2] == ["000.00.07.H99"]

    await axis.ok(H99, "deleteAgency", {"AgencyCode": "000.00.07.H99"})
    assert "000.00.07.H99" not in {a["code"] for a in (await axis.ok(H99, "getAgenciesList"))["data"]}
    units = (await axis.ok(H99, "getSynchronizeUnit"))["data"]
    gone = next(u for u in units if u["code"] == "000.00.07.H99")
    assert (gone["deleted"], gone["version"], gone["centerCode"], gone["isAgency"]) == (True, 2, H99, True)
    missing = _answer(await axis.call(H99, "deleteAgency", {"AgencyCode": "000.00.07.H99"}, body=b"{}"))
    assert (missing["status"], missing["ErrorCode"]) == ("FAIL", "404")
    not_json = _answer(await axis.call(H99, "registerAgency", body=b"[1, 2]"))
    assert (not_json["status"], not_json["ErrorCode"]) == ("FAIL", "400")


async def test_bad_parameters_fail_with_a_reason(axis: Axis) -> None:
    doc_id = _doc_id(await axis.send(H99, DOCUMENT))
    bad_status = _answer(
        await axis.call(G12, "updateStatus", {"status": "read", "docId": doc_id}, body=b"{}")
    )
    assert (bad_status["ErrorCode"], bad_status["ErrorDesc"]) == (
        "400",
        "status must be processing, done or fail, not 'read'",
    )
    no_type = _answer(await axis.call(H99, "sendEdoc", {}, body=DOCUMENT))
    assert (no_type["ErrorCode"], no_type["DocId"]) == ("400", "")
    unknown = await axis.call(H99, "getEverything")
    assert (unknown.status_code, _answer(unknown)["ErrorCode"]) == (404, "404")


# -- faults --------------------------------------------------------------------------------------------


async def test_fault_down_and_reset_over_http(axis: Axis) -> None:
    assert (await axis.switch(down=True))["down"] is True
    assert (await axis.http.get(f"{axis.url}/_mock/faults")).json()["down"] is True
    response = await axis.send(H99, DOCUMENT)
    assert (response.status_code, _answer(response)["ErrorCode"]) == (503, "503")
    assert axis.faults.down  # the same object a test switches in-process
    assert (await axis.http.post(f"{axis.url}/_mock/reset")).json()["down"] is False
    _doc_id(await axis.send(H99, DOCUMENT))
    rejected = await axis.http.post(f"{axis.url}/_mock/faults", json={"down": "sometimes"})
    assert rejected.status_code == 400
    assert (await axis.http.post(f"{axis.url}/_mock/faults", json={"flood": 1})).status_code == 400


async def test_fault_slow(axis: Axis) -> None:
    axis.faults.slow_s = 0.4
    started = time.monotonic()
    await axis.ok(H99, "getAgenciesList")
    assert time.monotonic() - started >= 0.4
    with pytest.raises(httpx.ReadTimeout):
        await axis.http.post(f"{axis.url}/getAgenciesList", timeout=0.1)


async def test_fault_fail_next(axis: Axis) -> None:
    await axis.switch(fail_next=2)
    statuses = [(await axis.call(G12, "getAgenciesList")).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert axis.faults.fail_next == 0


async def test_fault_accept_then_lose(axis: Axis) -> None:
    axis.faults.accept_then_lose = 1
    lost = _doc_id(await axis.send(H99, DOCUMENT))
    assert await axis.received(G12) == []
    fetched = _answer(await axis.call(G12, "getEdoc", {"docId": lost}, body=b"{}"))
    assert (fetched["status"], fetched["ErrorCode"]) == ("FAIL", "404")
    kept = _doc_id(await axis.send(H99, DOCUMENT))
    assert [i["docId"] for i in await axis.received(G12)] == [kept]


async def test_fault_duplicate_delivery(axis: Axis) -> None:
    doc_id = _doc_id(await axis.send(H99, DOCUMENT))
    await axis.switch(duplicate_delivery=True)
    assert [i["docId"] for i in await axis.received(G12)] == [doc_id, doc_id]
    await axis.ok(G12, "updateStatus", {"status": "done", "docId": doc_id})
    assert [i["docId"] for i in await axis.received(G12)] == [doc_id, doc_id]  # delivered once more
    await axis.ok(G12, "updateStatus", {"status": "done", "docId": doc_id})
    assert await axis.received(G12) == []


async def test_fault_reorder(axis: Axis) -> None:
    first = _doc_id(await axis.send(H99, DOCUMENT))
    second = _doc_id(await axis.send(H99, make_document("000.00.01.H99", ["000.00.00.G12"], 6)))
    assert [i["docId"] for i in await axis.received(G12)] == [first, second]
    axis.faults.reorder = True
    assert [i["docId"] for i in await axis.received(G12)] == [second, first]


# -- the wire --------------------------------------------------------------------------------------------


async def test_expect_100_continue_is_answered_at_once(axis: Axis) -> None:
    """The SDK sends ``Expect: 100-continue`` and stalls ~3 s without an interim answer (§4)."""
    params = {"servicetype": "eDoc", "messagetype": "edoc"}
    body = DOCUMENT + b"\r\n"
    secret = axis.config.secret_of(H99)
    assert secret is not None
    stamp = java_timestamp(dt.datetime.now(dt.UTC))
    signed = signed_headers(
        H99, secret, params, timestamp=stamp, content_type=CONTENT_TYPE_FILE, hash_of_file=hash_file(DOCUMENT)
    )
    host = axis.url.removeprefix("http://")
    head = [
        "POST /sendEdoc HTTP/1.1",
        f"Host: {host}",
        *(f"{name}: {value}" for name, value in signed),
        f"Content-Length: {len(body)}",
        "Expect: 100-continue",
        "Connection: close",
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", axis.port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8"))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=1.0)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(body)
        await writer.drain()
        final = await asyncio.wait_for(reader.read(), timeout=5.0)
    finally:
        writer.close()
    status_line, _, rest = final.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200")
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert answer["status"] == "OK"
    assert [i["docId"] for i in await axis.received(G12)] == [answer["DocId"]]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_schema_creation_is_idempotent_and_safe_in_parallel(
    kind: str, tmp_path: Path, config: MockAxisConfig
) -> None:
    async with fresh_database(kind, tmp_path) as url:
        stores = [MockAxisStore.connect(url) for _ in range(3)]
        try:
            await asyncio.gather(*(store.create_schema() for store in stores))
            await stores[0].create_schema()
        finally:
            for store in stores:
                await store.close()
        # Two mocks on one database in turn: the seed does not duplicate, and items survive a restart.
        async with serve_mock_axis(config, url) as first, httpx.AsyncClient(timeout=10) as http:
            _doc_id(await Axis.of(first, http).send(H99, DOCUMENT))
        async with serve_mock_axis(config, url) as second, httpx.AsyncClient(timeout=10) as http:
            axis = Axis.of(second, http)
            assert len(await axis.received(G12)) == 1
            assert len((await axis.ok(G12, "getAgenciesList"))["data"]) == len(config.agencies)


# -- configuration and the command -------------------------------------------------------------------


async def test_config_refuses_ambiguous_systems(tmp_path: Path) -> None:
    path = tmp_path / "axis.toml"
    system = '[[systems]]\nsystem_id = "{id}"\nsecret = "{key}"\nserves = ["000.00.00.H99"]\n'
    path.write_text(
        system.format(id="a", key="x" * 16) + system.format(id="b", key="y" * 16), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="served by both a and b"):
        load_mock_config(path)


async def test_routing_picks_the_most_specific_system() -> None:
    def system(system_id: str, *serves: str) -> dict[str, Any]:
        return {"system_id": system_id, "secret": "x" * 16, "serves": list(serves)}

    config = MockAxisConfig.model_validate(
        {"systems": [system("province", "000.00.00.H99"), system("district", "000.00.05.H99", "28.22.H17")]}
    )
    assert (serving := config.serving(OrganId.parse("000.01.05.H99"))) is not None
    assert serving.system_id == "district"
    assert (serving := config.serving(OrganId.parse("000.00.06.H99"))) is not None
    assert serving.system_id == "province"
    assert (serving := config.serving(OrganId.parse("000.28.22.H17"))) is not None  # a short form served
    assert serving.system_id == "district"
    assert config.serving(OrganId.parse("000.00.00.H55")) is None


_RUN_COMMAND = (
    "import argparse, sys\n"
    "from entrypoints.cli_axis import add_commands\n"
    "parser = argparse.ArgumentParser(prog='bus')\n"
    "add_commands(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.handler(args))\n"
)


def _command(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _RUN_COMMAND, "mock-axis", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_command_runs_until_sigterm(tmp_path: Path, config: MockAxisConfig) -> None:
    with _command("--config", str(CONFIG), "--port", "0", "--json-logs", cwd=tmp_path) as process:
        try:
            assert process.stderr is not None
            line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), timeout=20)
            listening = json.loads(line)
            assert listening["event"] == "mock_axis.listening"
            async with httpx.AsyncClient(timeout=10) as http:
                await Axis(listening["url"], config, http, MockFaults()).ok(G12, "getAgenciesList")
            os.kill(process.pid, signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 20) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert (tmp_path / "demo-out" / "mock-axis.db").exists()  # the file's default, relative to cwd


async def test_command_exit_2_on_config_errors(tmp_path: Path) -> None:
    for args, reason in [
        (("--config", str(tmp_path / "nope.toml")), "cannot read mock axis configuration"),
        (("--config", str(CONFIG), "--database", "mysql://x/y"), "use sqlite+aiosqlite"),
    ]:
        with _command(*args, "--port", "0", cwd=tmp_path) as process:
            _, err = await asyncio.to_thread(process.communicate, None, 20)
        assert process.returncode == 2, err
        assert reason in err


async def test_short_secrets_warn_on_loopback_and_refuse_elsewhere(tmp_path: Path) -> None:
    """Issue 13, item 3: integrators' fixtures carry short secrets (the protocol notes' own worked
    example is system 000.00.00.H41 with secret ``s3cret``). On a loopback address, nobody else can
    sign as the system: the mock warns, naming it, and starts. Anywhere else it refuses, as before."""
    path = tmp_path / "short.toml"
    path.write_text(
        '[[systems]]\nsystem_id = "000.00.00.H41"\nsecret = "s3cret"\nserves = ["000.00.00.H41"]\n',
        encoding="utf-8",
    )
    short = load_mock_config(path)
    database = f"sqlite+aiosqlite:///{tmp_path / 'axis.db'}"
    async with serve_mock_axis(short, database) as running, httpx.AsyncClient(timeout=10) as http:
        await Axis.of(running, http).ok("000.00.00.H41", "getAgenciesList")  # signed with s3cret
    with pytest.raises(ConfigError, match=r"000\.00\.00\.H41 is shorter than 16 bytes.*0\.0\.0\.0"):
        async with serve_mock_axis(short, database, host="0.0.0.0"):  # noqa: S104 - refused, never bound
            pass

    with _command("--config", str(path), "--port", "0", "--json-logs", cwd=tmp_path) as process:
        try:
            assert process.stderr is not None
            lines = [
                json.loads(await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), timeout=20))
                for _ in range(2)
            ]
            os.kill(process.pid, signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 20) == 0
        finally:
            if process.poll() is None:
                process.kill()
    warning, listening = lines
    assert (warning["event"], warning["level"], warning["system"]) == (
        "mock_axis.weak_secret",
        "warning",
        "000.00.00.H41",
    )
    assert "s3cret" not in json.dumps(warning)
    assert listening["event"] == "mock_axis.listening"
    off_loopback = ("--host", "0.0.0.0")  # noqa: S104 - refused before anything is bound
    with _command("--config", str(path), "--port", "0", *off_loopback, cwd=tmp_path) as process:
        _, err = await asyncio.to_thread(process.communicate, None, 20)
    assert process.returncode == 2, err
    assert "the secret of 000.00.00.H41 is shorter than 16 bytes" in err
