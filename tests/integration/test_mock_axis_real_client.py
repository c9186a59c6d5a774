"""What the axis's own Java client (SDKVXP 2.0.1) met when it was run against the mock, issue 13 and
``national-axis-protocol.md`` §6, one test per item, over real HTTP on SQLite and PostgreSQL; and the
bus's own client (``adapters/national_axis/client.py``) against the same shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from mock_axis import MockAxisConfig, load_mock_config
from tests.integration.mock_axis_sdk import CONFIG, DOCUMENT, G12, H98, H99, Axis, doc_id, running_axis

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
