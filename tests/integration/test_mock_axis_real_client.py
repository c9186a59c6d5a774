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
