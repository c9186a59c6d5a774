"""POST /v1/acks on a whole node (real RabbitMQ, SQLite and PostgreSQL): several acknowledgements in
one request and one commit, each answered as the single one would be (issue 12, item 4)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import event

from adapters.http.client import ApiFailure
from bus.delivery import DeliveryState
from entrypoints.runtime import Node
from tests.factory import make_document
from tests.integration.dashboard_seed import engine_of
from tests.integration.test_api import DISTRICT, HOME_AFFAIRS, ClientFor, client_for, node, wait_for_inbox

pytestmark = pytest.mark.asyncio
__all__ = ["client_for", "node"]  # the fixtures, shared with test_api.py


async def test_one_request_acknowledges_a_batch_each_as_alone(
    node: Node, client_for: ClientFor, tmp_path: Path
) -> None:
    sender, district = client_for(HOME_AFFAIRS), client_for(DISTRICT)
    sent = [await sender.send(make_document(HOME_AFFAIRS, [DISTRICT], 300 + n)) for n in range(4)]
    items = await wait_for_inbox(district, 4)
    ids = [int(str(i["id"])) for i in items]
    other = client_for("000.01.21.H99")
    await other.send(make_document("000.01.21.H99", ["000.00.22.H99"], 399))  # someone else's item
    # Kept by the inbox worker before the commits are counted: its commit is not the batch's.
    await wait_for_inbox(client_for("000.00.22.H99"), 1)
    commits: list[int] = []
    event.listen(engine_of(node.store).sync_engine, "commit", lambda _conn: commits.append(1))
    await district.acknowledge(ids[3], "done")  # final before the batch
    commits.clear()
    results = await district.acknowledge_many(
        [
            (ids[0], "done", None),
            (ids[1], "processing", None),
            (ids[2], "fail", "Sai địa chỉ nhận: chuyển lại cho Văn phòng"),
            (ids[3], "processing", None),  # done already: cannot reopen
            (2**40, "done", None),  # no such item
        ]
    )
    assert [r["status"] for r in results] == [200, 200, 200, 409, 404]
    assert [r["id"] for r in results] == [ids[0], ids[1], ids[2], ids[3], 2**40]
    assert results[2]["item"]["ack_state"] == "fail"
    assert results[3]["error"]["code"] == "already-final"
    assert len(commits) == 2  # the request's nonce, then the whole batch in one transaction
    assert [i["id"] for i in await district.inbox()] == [ids[1]]  # processing: still pending
    timeline = await sender.document(str(sent[2]["bus_id"]))
    fails = [e for e in timeline["timeline"] if e["state"] == DeliveryState.FAIL.value]
    assert fails[0]["detail"] == "Sai địa chỉ nhận: chuyển lại cho Văn phòng"
    assert dt.datetime.fromisoformat(fails[0]["at"]).tzinfo is not None


@pytest.mark.parametrize(
    "payload",
    [
        {"acks": []},
        {"acks": [{"id": 1, "state": "fail"}]},  # a fail needs its reason
        {"acks": [{"id": True, "state": "done"}]},
        {"acks": [{"id": 1, "state": "done", "extra": 1}]},
        {"acks": [{"id": 1, "state": "done"}], "more": 1},
        {"acks": [{"id": 1, "state": "read"}]},
        {"acks": [{"id": 1, "state": "done"}] * 501},
        [1, 2],
    ],
)
async def test_a_batch_not_in_the_documented_form_changes_nothing(
    node: Node, client_for: ClientFor, payload: object
) -> None:
    sender, district = client_for(HOME_AFFAIRS), client_for(DISTRICT)
    await sender.send(make_document(HOME_AFFAIRS, [DISTRICT], 350))
    [item] = await wait_for_inbox(district, 1)
    body = json.dumps(payload).replace('"id": 1', f'"id": {item["id"]}').encode()
    with pytest.raises(ApiFailure) as caught:
        await district.request("POST", "/v1/acks", body=body, content_type="application/json")
    assert (caught.value.status, caught.value.code) == (400, "bad-acknowledgement")
    assert [i["id"] for i in await district.inbox()] == [item["id"]]  # nothing acknowledged
