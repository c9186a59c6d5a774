"""Every operation of the national-axis client against the mock axis over real HTTP (the mock's own
tests build requests by hand; this one checks that our client and the mock agree)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from adapters.national_axis.client import NationalAxisClient
from bus.errors import AxisRejectedError, AxisUnavailableError
from mock_axis import load_mock_config, serve_mock_axis
from tests.factory import make_document, make_status

pytestmark = pytest.mark.asyncio

SYSTEMS = """
[[systems]]
system_id = "000.00.90.H99"
secret = "client-test-secret-H99-0123456789"
serves = ["000.00.00.H99"]

[[systems]]
system_id = "000.00.00.G12"
secret = "client-test-secret-G12-0123456789"
serves = ["000.00.00.G12"]
"""


async def test_every_operation(tmp_path: Path) -> None:
    config_file = tmp_path / "axis.toml"
    config_file.write_text(SYSTEMS, encoding="utf-8")
    config = load_mock_config(config_file)
    async with serve_mock_axis(config, f"sqlite+aiosqlite:///{tmp_path / 'axis.db'}") as axis:
        province = NationalAxisClient(axis.url, "000.00.90.H99", "client-test-secret-H99-0123456789")
        ministry = NationalAxisClient(axis.url, "000.00.00.G12", "client-test-secret-G12-0123456789")
        document = make_document("000.00.01.H99", ["000.00.00.G12"], 5, subject="Báo cáo quý IV")
        doc_id = await province.send_edoc(document, sender="000.00.01.H99", to=["000.00.00.G12"])

        assert await ministry.count_received() == 1
        [item] = await ministry.received()
        assert item.sender == "000.00.01.H99"
        assert await ministry.get_edoc(item.doc_id) == document  # byte for byte, diacritics intact
        assert await ministry.download_edoc(item.doc_id) == document
        [sent] = await province.sent(doc_id)
        assert sent["toCode"] == "000.00.00.G12"
        await ministry.update_status(item.doc_id, "done")
        assert await ministry.received() == []

        status = make_status("000.00.00.G12", "000.00.01.H99", "000.00.01.H99,2026/11/20,5/UBND-VP", "03")
        await ministry.send_edoc(status, sender="000.00.00.G12", message_type="status")
        assert await province.count_received(statuses=True) == 1
        [answer] = await province.received(message_type="status")
        assert answer.message_type == "status"

        code = f"000.00.{uuid.uuid4().int % 90 + 10:02d}.H99"
        await province.register_agency({"id": "1", "pcode": "000.00.00.H99", "code": code, "name": "Sở Y tế"})
        assert code in {a.get("code") for a in await province.agencies()}
        await province.delete_agency(code)
        assert code not in {a.get("code") for a in await province.agencies()}

        with pytest.raises(AxisRejectedError):  # the ministry cannot send as a province's agency
            await ministry.send_edoc(document, sender="000.00.01.H99")
        with pytest.raises(AxisRejectedError):
            await ministry.get_edoc("no-such-doc")
        stranger = NationalAxisClient(axis.url, "000.00.90.H99", "a-wrong-secret-0123456789")
        with pytest.raises(AxisUnavailableError, match="401"):  # credentials: wait, do not discard
            await stranger.received()
        axis.faults.down = True
        with pytest.raises(AxisUnavailableError):
            await province.received()
        for client in (province, ministry, stranger):
            await client.close()
    probe = NationalAxisClient(axis.url, "000.00.90.H99", "client-test-secret-H99-0123456789", timeout=2)
    with pytest.raises(AxisUnavailableError):  # nothing listens any more
        await probe.received()
    await probe.close()
