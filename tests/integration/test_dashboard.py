"""The operators' dashboard over HTTP (httpx against ``Node.http_app``, the dashboard mounted at
/dashboard as ``bus serve`` mounts it) on a real SQLite store; and its search queries' PostgreSQL plans
over 20,000 documents. Logins, their throttle and redirects: ``test_dashboard_login.py``."""

from __future__ import annotations

import datetime as dt
import html
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from adapters.store import StatusStore
from adapters.store.dashboard_queries import (
    DASHBOARD_INDEXES,
    DocumentSearch,
    inbox_depth_query,
    search_query,
)
from adapters.store.tables import deliveries, events
from bus.checks import VN_TZ
from bus.delivery import AcceptedDocument, DeadLetter, DeliveryState
from tests.integration.conftest import fresh_database
from tests.integration.dashboard_client import NOW, TTL_S, Env, csrf_of, dashboard_env, login
from tests.integration.dashboard_seed import (
    COMMUNE,
    DEAD_REASON,
    OPERATOR,
    PASSWORD,
    SUBJECT,
    engine_of,
    explain,
    seed_documents,
)

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with dashboard_env(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}") as made:
        yield made


async def test_every_page_needs_a_login(env: Env) -> None:
    for path in ("/dashboard/", "/dashboard/inboxes", "/dashboard/axis", "/dashboard/dead-letters"):
        response = await env.client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/dashboard/login?next=")
    replay = await env.client.post("/dashboard/dead-letters/replay", data={"id": "1", "csrf_token": "x"})
    assert replay.status_code == 303
    assert env.replay.calls == []
    after = await login(env, next="/dashboard/inboxes")
    assert (after.status_code, after.headers["location"]) == (303, "/dashboard/inboxes")
    cookie = after.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/dashboard" in cookie
    assert (await env.client.get("/dashboard/inboxes")).status_code == 200


async def test_a_session_expires(env: Env) -> None:
    await login(env)
    assert (await env.client.get("/dashboard/")).status_code == 200
    env.clock.now = NOW + dt.timedelta(seconds=TTL_S - 1)
    assert (await env.client.get("/dashboard/")).status_code == 200
    env.clock.now = NOW + dt.timedelta(seconds=TTL_S + 1)
    expired = await env.client.get("/dashboard/")
    assert expired.status_code == 303
    assert "expired=1" in expired.headers["location"]
    page = await env.client.get(expired.headers["location"])
    assert "Phiên làm việc đã hết hạn" in page.text


async def test_a_forged_or_edited_cookie_is_no_session(env: Env) -> None:
    await login(env)
    cookie = env.client.cookies["bus_dashboard"]
    body, signature = cookie.split(".")
    env.client.cookies.clear()
    env.client.cookies.set("bus_dashboard", f"{body}.{signature[:-2]}AA", path="/dashboard")
    assert (await env.client.get("/dashboard/")).status_code == 303


async def test_a_post_without_the_csrf_token_is_refused(env: Env) -> None:
    await login(env)
    missing = await env.client.post("/dashboard/logout", data={})
    wrong = await env.client.post(
        "/dashboard/dead-letters/replay", data={"id": str(env.sample.dead_letter_id), "csrf_token": "guessed"}
    )
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert "CSRF" in wrong.text
    assert env.replay.calls == []
    assert (await env.client.get("/dashboard/")).status_code == 200  # still logged in
    env.client.cookies.clear()
    no_token = await env.client.post("/dashboard/login", data={"username": OPERATOR, "password": PASSWORD})
    assert no_token.status_code == 403
    assert "bus_dashboard" not in no_token.headers.get("location", "")


async def test_logout_ends_the_session(env: Env) -> None:
    await login(env)
    page = await env.client.get("/dashboard/")
    copied = dict(env.client.cookies)  # a copy of the cookie kept somewhere else
    out = await env.client.post("/dashboard/logout", data={"csrf_token": csrf_of(page)})
    assert out.status_code == 303
    assert "logged_out=1" in out.headers["location"]
    assert (await env.client.get("/dashboard/")).status_code == 303
    env.client.cookies.clear()
    env.client.cookies.update(copied)
    assert (await env.client.get("/dashboard/")).status_code == 303  # revoked on the server, not just here


async def found(env: Env, **query: str) -> list[str]:
    """Bus ids on the documents page for *query*, in page order."""
    response = await env.client.get("/dashboard/", params=query)
    assert response.status_code == 200, response.text
    return re.findall(r'href="/dashboard/documents/([0-9a-f-]{36})"', response.text)


async def test_search_filters(env: Env) -> None:
    await login(env)
    sent, older, dead = env.sample.sent, env.sample.older, env.sample.dead
    assert await found(env) == [dead.bus_id, sent.bus_id, older.bus_id]  # newest first
    assert await found(env, document_id=sent.document_id) == [sent.bus_id]
    assert await found(env, document_id=older.bus_id) == [older.bus_id]
    assert await found(env, code="56/SNV-TCCB") == [older.bus_id]
    assert await found(env, agency="000.00.00.H99") == [sent.bus_id]  # as sender
    assert await found(env, agency="1.H99") == [older.bus_id]  # a short form of 000.00.01.H99
    assert await found(env, agency=COMMUNE) == [dead.bus_id, sent.bus_id]  # as recipient
    day = (NOW - dt.timedelta(days=1)).astimezone(VN_TZ).date()
    assert await found(env, **{"from": day.isoformat(), "to": day.isoformat()}) == [older.bus_id]
    assert await found(env, **{"from": f"{NOW.astimezone(VN_TZ):%d/%m/%Y}"}) == [dead.bus_id, sent.bus_id]
    assert await found(env, state="dead-lettered") == [dead.bus_id]
    assert await found(env, state="sent-to-axis", agency="000.00.00.G22") == [sent.bus_id]
    assert await found(env, state="dead-lettered", agency="000.00.00.H99") == []
    bad = await env.client.get("/dashboard/", params={"agency": "Sở Nội vụ", "to": "hôm qua"})
    assert bad.status_code == 400
    assert "không đúng dạng V.Z.Y.MXX" in bad.text
    assert "Ngày «hôm qua» không đúng" in bad.text


async def test_pages_follow_each_other_by_keyset(env: Env) -> None:
    """55 more documents, many accepted in the same second (the bus id breaks the tie): two pages, every
    document once, newest first."""
    expected = [(d.accepted_at, d.bus_id) for d in (env.sample.sent, env.sample.older, env.sample.dead)]
    for n in range(55):
        at = NOW - dt.timedelta(hours=2, seconds=n // 10)
        doc = AcceptedDocument(
            str(uuid.uuid4()), "document", "000.00.03.H99", f"KH-{n}", 0, None, None, at, "0" * 64
        )
        await env.store.record_accepted(doc, [(COMMUNE, "local")])
        expected.append((at, doc.bus_id))
    await login(env)
    shown: list[str] = []
    response = await env.client.get("/dashboard/")
    pages = 0
    while True:
        pages += 1
        shown += re.findall(r'href="/dashboard/documents/([0-9a-f-]{36})"', response.text)
        following = re.search(r'href="([^"]+)" rel="next"', response.text)
        if following is None:
            break
        response = await env.client.get(html.unescape(following.group(1)))
    assert pages == 2
    assert shown == [bus_id for _, bus_id in sorted(expected, reverse=True)]


async def test_a_document_page_shows_its_recipients_and_timeline(env: Env) -> None:
    await login(env)
    page = await env.client.get(f"/dashboard/documents/{env.sample.sent.bus_id}")
    assert page.status_code == 200
    text = page.text
    # Escaped, and Vietnamese unmangled (UTF-8 declared and sent).
    assert "V/v triển khai chuyển đổi số — xã Hòa Tiến &lt;b&gt;khẩn&lt;/b&gt;" in text
    assert SUBJECT not in text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "Ủy ban nhân dân huyện Đồng Xuân" in text  # the recipient's name from the topology
    for label in (
        "Đơn vị nhận đã nhận xong",
        "Đã vào hộp thư đến",
        "Đang thử gửi lại",
        "Đã gửi lên trục quốc gia",
    ):
        assert label in text
    assert "lần 1: trục quốc gia trả lời HTTP 503, thử lại sau 5 giây" in text
    # Times in Asia/Ho_Chi_Minh: accepted 05:00 UTC is 12:00 in Hanoi.
    assert "20/11/2026 12:00:00" in text
    assert "script-src" not in page.headers["content-security-policy"]
    missing = await env.client.get("/dashboard/documents/khong-co")
    assert missing.status_code == 404
    assert "Không tìm thấy văn bản" in missing.text


async def test_inboxes_show_depth_and_the_oldest_waiting_envelope(env: Env) -> None:
    await login(env)
    text = (await env.client.get("/dashboard/inboxes")).text
    row = re.search(rf"<tr class=\"late\">\s*<td>{COMMUNE}</td>(.*?)</tr>", text, re.S)
    assert row, text
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells == ["Ủy ban nhân dân xã Xuân Phước", "1", "1", "20/11/2026 12:55:00", "2 giờ 5 phút"]


async def test_the_national_axis_link(env: Env) -> None:
    await login(env)
    assert "Hoạt động" in (await env.client.get("/dashboard/axis")).text
    env.link = {
        "configured": True,
        "endpoint": "https://truc.example/vdxp",
        "circuit": "open",
        "open_since": NOW - dt.timedelta(minutes=4),
        "failures": 5,
        "backlog": 1234,
        "last_error": "ConnectError: không kết nối được",
    }
    text = (await env.client.get("/dashboard/axis")).text
    assert "Ngắt mạch" in text
    assert "1234 gói tin" in text
    assert "4 phút" in text
    assert "ConnectError: không kết nối được" in text
    env.link = RuntimeError("RabbitMQ management không trả lời")  # type: ignore[assignment]
    text = (await env.client.get("/dashboard/axis")).text
    assert "Không lấy được trạng thái kết nối: RuntimeError: RabbitMQ management không trả lời" in text


async def test_a_dead_letter_is_replayed_after_confirmation(env: Env) -> None:
    await login(env)
    letter = env.sample.dead_letter_id
    listing = (await env.client.get("/dashboard/dead-letters")).text
    assert DEAD_REASON in listing
    confirm = await env.client.get("/dashboard/dead-letters/replay", params={"id": str(letter)})
    assert confirm.status_code == 200  # asking changes nothing
    assert env.replay.calls == []
    assert "Xác nhận gửi lại 1 thư" in confirm.text
    assert DEAD_REASON in confirm.text
    posted = await env.client.post("/dashboard/dead-letters/replay", data=confirmation(confirm))
    assert posted.status_code == 303  # Post/Redirect/Get: a refresh of the outcome sends nothing
    done = await env.client.get(posted.headers["location"])
    assert done.status_code == 200
    assert env.replay.calls == [[letter]]
    again = await env.client.get(posted.headers["location"])
    assert "Đã gửi lại vào hàng đợi bus.inbox.000.01.21.H99" in again.text
    assert env.replay.calls == [[letter]]
    assert "Đã gửi lại vào hàng đợi bus.inbox.000.01.21.H99" in done.text
    assert DEAD_REASON not in (await env.client.get("/dashboard/dead-letters")).text  # replayed: not listed
    timeline = (await env.client.get(f"/dashboard/documents/{env.sample.dead.bus_id}")).text
    assert "Cán bộ vận hành cho gửi lại" in timeline
    nothing = await env.client.get("/dashboard/dead-letters/replay")
    assert nothing.status_code == 400
    assert "Chưa chọn thư lỗi nào." in nothing.text


def confirmation(page: httpx.Response) -> dict[str, list[str]]:
    """The hidden fields of the confirmation form, as the browser posts them."""
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text):
        fields.setdefault(name, []).append(html.unescape(value))
    return fields


async def another_dead_letter(env: Env, bus_id: str | None, document_id: str = "KHAC-1") -> int:
    letter = DeadLetter(
        dead_key=f"dead-{uuid.uuid4()}",
        message_id=f"{bus_id}|{COMMUNE}",
        source_queue="bus.inbox.000.01.21.H99",
        reason="một lý do khác",
        dead_at=NOW - dt.timedelta(minutes=10),
        bus_id=bus_id,
        recipient=COMMUNE,
        sender="000.00.02.H99",
        document_id=document_id,
        kind="document",
        headers={"x-bus-id": bus_id},
        body=b"<edXML/>",
    )
    assert await env.store.store_dead_letter(letter)
    return max(item.id for item in await env.store.dead_letters(include_replayed=True))


async def test_a_dead_letter_confirmed_twice_is_replayed_once(env: Env) -> None:
    """A double submit (or a second operator who confirmed the same dead letter): the replay count
    changed since the confirmation page was shown, so the second POST sends nothing."""
    await login(env)
    letter = env.sample.dead_letter_id
    first_page = await env.client.get("/dashboard/dead-letters/replay", params={"id": str(letter)})
    second_page = await env.client.get("/dashboard/dead-letters/replay", params={"id": str(letter)})
    one = await env.client.post("/dashboard/dead-letters/replay", data=confirmation(first_page))
    two = await env.client.post("/dashboard/dead-letters/replay", data=confirmation(second_page))
    assert (one.status_code, two.status_code) == (303, 303)
    assert env.replay.calls == [[letter]]
    refused = (await env.client.get(two.headers["location"])).text
    assert f"Thư lỗi số {letter}: Đã được gửi lại (lần 1" in refused
    assert "replay-results" not in refused
    # Shown again after the replay, it carries the new count and can be sent once more on purpose.
    third_page = await env.client.get("/dashboard/dead-letters/replay", params={"id": str(letter)})
    assert f'value="{letter}:1"' in third_page.text
    assert (
        await env.client.post("/dashboard/dead-letters/replay", data=confirmation(third_page))
    ).status_code == 303
    assert env.replay.calls == [[letter], [letter]]


async def test_only_the_dead_letters_of_the_confirmation_page_are_replayed(env: Env) -> None:
    await login(env)
    letter = env.sample.dead_letter_id
    other = await another_dead_letter(env, str(uuid.uuid4()))
    page = await env.client.get("/dashboard/dead-letters/replay", params={"id": str(letter)})
    fields = confirmation(page)
    # Another id added to the sealed list: the form was changed, nothing is sent.
    edited = {**fields, "seen": [*fields["seen"], f"{other}:0"]}
    refused = await env.client.post("/dashboard/dead-letters/replay", data=edited)
    assert refused.status_code == 400
    assert "đã bị sửa" in refused.text
    # The id alone, as the old form posted it: not on the confirmation page.
    bare = await env.client.post(
        "/dashboard/dead-letters/replay", data={"id": str(letter), "csrf_token": fields["csrf_token"][0]}
    )
    assert bare.status_code == 400
    # An extra bare id next to a valid form: skipped with a message, the confirmed one goes.
    mixed = await env.client.post("/dashboard/dead-letters/replay", data={**fields, "id": [str(other)]})
    assert mixed.status_code == 303
    assert env.replay.calls == [[letter]]
    text = (await env.client.get(mixed.headers["location"])).text
    assert f"Thư lỗi số {other}: Không có trên trang xác nhận" in text
    # The outcome page is for this session only, and its token cannot be edited.
    location = mixed.headers["location"]
    assert (await env.client.get(location.replace("&s=", "&s=x"))).status_code == 404
    env.clock.now = NOW + dt.timedelta(minutes=11)
    assert (await env.client.get(location)).status_code == 404  # expired


async def test_a_dead_letter_with_an_odd_bus_id_does_not_break_the_list(env: Env) -> None:
    await login(env)
    odd = [
        await another_dead_letter(env, bus_id, f"KHAC-{n}") for n, bus_id in enumerate(("a/b", "c?d", "e#f"))
    ]
    listing = await env.client.get("/dashboard/dead-letters")
    assert listing.status_code == 200
    assert "KHAC-0" in listing.text
    # None of the odd ids is a link, however it would be written ("a/b", quoted "a%2Fb", ...); a real
    # bus id may start with "a" too, so the check names the odd ids whole.
    for bus_id in ("a/b", "a%2Fb", "c?d", "c%3Fd", "e#f", "e%23f"):
        assert f'/dashboard/documents/{bus_id}"' not in listing.text
    assert f"/dashboard/documents/{env.sample.dead.bus_id}" in listing.text  # a real one stays a link
    page = await env.client.get("/dashboard/dead-letters/replay", params={"id": [str(i) for i in odd]})
    posted = await env.client.post("/dashboard/dead-letters/replay", data=confirmation(page))
    result = await env.client.get(posted.headers["location"])
    assert result.status_code == 200
    assert "KHAC-1" in result.text
    assert "/dashboard/documents/c" not in result.text


BAD_QUERIES: list[tuple[str, dict[str, str]]] = [
    ("/dashboard/", {"to": "31/12/9999"}),
    ("/dashboard/", {"to": "9999-12-31"}),
    ("/dashboard/", {"from": "01/01/0001"}),
    ("/dashboard/", {"from": "0001-01-01"}),
    ("/dashboard/", {"to": "99/99/99999999999999999999"}),
    ("/dashboard/", {"after": "0001-01-01T00:00:00+05:00|x"}),
    ("/dashboard/", {"after": "9999-12-31T23:00:00-05:00|x"}),
    ("/dashboard/", {"after": "2026-11-20T00:00:00+00:00|a\x00b"}),
    ("/dashboard/", {"document_id": "a\x00b"}),
    ("/dashboard/", {"code": "1\x00/UBND"}),
    ("/dashboard/dead-letters/replay", {"id": "²"}),
    ("/dashboard/dead-letters/replay", {"id": "1" * 30}),
    ("/dashboard/dead-letters/replay", {"id": str(2**63)}),
    ("/dashboard/dead-letters/replay", {"id": "١٢"}),  # Arabic-Indic digits
    ("/dashboard/dead-letters", {"before": "²"}),
    ("/dashboard/dead-letters", {"before": "1" * 30}),
    ("/dashboard/documents/a%00b", {}),
]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_bad_input_is_refused_not_a_server_error(kind: str, tmp_path: Path) -> None:
    async with fresh_database(kind, tmp_path) as url, dashboard_env(url) as made:
        await login(made)
        for path, query in BAD_QUERIES:
            response = await made.client.get(path, params=query)
            assert response.status_code in (200, 400, 404), (path, query, response.status_code)
        # What is refused says so; what is ignored (a bad "before") shows the list from its start.
        assert (await made.client.get("/dashboard/", params={"to": "31/12/9999"})).status_code == 400
        listing = await made.client.get("/dashboard/dead-letters", params={"before": "²"})
        assert DEAD_REASON in listing.text
        page = await made.client.get("/dashboard/dead-letters/replay", params={"id": "1" * 30})
        assert "không phải số hiệu của thư lỗi" in page.text
        nul = await made.client.get("/dashboard/", params={"document_id": "a\x00b"})
        assert "ký tự không hợp lệ" in nul.text
        forged = {"seen": ["²:0", f"{'9' * 30}:0"], "seal": ["x"], "csrf_token": [csrf_of(page)]}
        assert (await made.client.post("/dashboard/dead-letters/replay", data=forged)).status_code == 400
        assert made.replay.calls == []


# -- PostgreSQL plans ----------------------------------------------------------------------------------


async def test_searches_read_indexes_not_whole_tables(tmp_path: Path) -> None:
    started = time.monotonic()
    async with fresh_database("postgresql", tmp_path) as url:
        store = StatusStore.connect(url)
        try:
            await store.create_schema()
            seeded = await seed_documents(url, 20_000)
            day = dt.datetime.combine(seeded.day, dt.time(), tzinfo=VN_TZ)
            searches = {
                "newest first": DocumentSearch(),
                "DocumentId": DocumentSearch(document_id=seeded.document_id),
                "code and notation": DocumentSearch(code=seeded.code),
                "agency": DocumentSearch(agency=seeded.agency),
                "one day": DocumentSearch(since=day, until=day + dt.timedelta(days=1)),
                "dead-lettered": DocumentSearch(state=DeliveryState.DEAD_LETTERED),
                "failed": DocumentSearch(state=DeliveryState.FAILED),
                "agency, failed": DocumentSearch(agency=seeded.agency, state=DeliveryState.FAILED),
                "agency, a month": DocumentSearch(
                    agency=seeded.agency, since=day - dt.timedelta(days=30), until=day
                ),
            }
            plans = {label: await explain(engine_of(store), search_query(s)) for label, s in searches.items()}
            plans["inbox depths"] = await explain(engine_of(store), inbox_depth_query())
            # A document's page: its deliveries and its timeline (the queries StatusStore runs).
            bus_id = (await store.search_documents(DocumentSearch(code=seeded.code))).hits[0].bus_id
            plans["timeline"] = await explain(
                engine_of(store),
                select(events).where(events.c.bus_id == bus_id).order_by(events.c.at, events.c.id),
            )
            plans["deliveries"] = await explain(
                engine_of(store), select(deliveries).where(deliveries.c.bus_id == bus_id)
            )
        finally:
            await store.close()
    for label, plan in plans.items():
        assert not re.search(r"Seq Scan on (documents|deliveries|events|inbox)\b", plan), f"{label}:\n{plan}"
    assert "ix_inbox_pending" in plans["inbox depths"]
    assert "ix_documents_code" in plans["code and notation"]
    assert time.monotonic() - started < 20


async def test_a_database_made_before_the_dashboard_gets_its_indexes(tmp_path: Path) -> None:
    store = StatusStore.connect(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await store.create_schema()
        async with engine_of(store).begin() as conn:
            for name in DASHBOARD_INDEXES:
                await conn.exec_driver_sql(f"DROP INDEX {name}")
        for _ in range(2):  # idempotent
            await store.create_dashboard_indexes()
        async with engine_of(store).connect() as conn:
            rows = await conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
            assert set(DASHBOARD_INDEXES) <= {name for (name,) in rows}
    finally:
        await store.close()
